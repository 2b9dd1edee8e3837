"""The textbook WGAN-GP loop against gan-lab's eager steps, side by side in one process -> docs/performance.md.

(a) textbook: the loop as the widely copied PyTorch-GAN `wgan_gp.py` writes it — torchvision
    MNIST through a DataLoader with per-sample ToTensor + Normalize, numpy noise, separate
    critic forwards for real, fake and interpolates, `autograd.grad(create_graph=True)`, and
    `.item()` + print of both losses every generator step. Ring8 is sampled point by point
    with numpy, as the official WGAN-GP toy code does.
(b) gan-lab eager: `gan_lab.training.train.Iteration` (critic_step / generator_step on `gan_lab.data` sets
    held on the device), called exactly as `gan_lab.training.train.train` calls it (scalars read at log steps).
(c) gan-lab CUDA graph (on CUDA): the same iteration through `gan_lab.training.graphs.runner`, captured
    whole after 3 eager warm-up steps and replayed, as `gan-lab train` does on CUDA.
Extra rows: gan-lab at `--precision bf16` (train.precision=bf16; graphed on CUDA): not the same math.

Both run the same networks (same initial weights), batch size, loss (WGAN-GP, lambda 10,
n_critic 5), optimizer (Adam 1e-4, betas (0, 0.9)) and number of generator steps. The timed
steps are split into rounds that alternate the variants' order, so a machine whose load changes
during the run slows both alike; the ratio's range over the rounds shows how steady it was.

    python scripts/bench.py --data-root ../shared/data                 # all configurations, ~2.5 min on 2 idle cores
    python scripts/bench.py --configs mlp_mnist --iters 200 --out /tmp/perf.md
    python scripts/bench.py --device cuda --data-root ../shared/data   # on a GPU machine

--models compares architectures instead: gan-lab's eager iteration for each model at its YAML defaults
(dcgan; resnet = SNGAN's CIFAR-10 ResNet; r3gan = R3GAN's CIFAR-10 preset) on 3x32x32 images, batch 64,
hinge loss with n_critic 1 for all, the models' rows alternating in rounds -> docs/performance_models.md:

    nice python scripts/bench.py --models dcgan,resnet,r3gan --threads 1 --out docs/performance_models.md
"""

from __future__ import annotations

import argparse
import datetime
import io
import math
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, autograd, nn
from torchvision import datasets, transforms  # imported up front: its import is not counted as a variant's memory

from gan_lab.data import ImageData, ToyMixture
from gan_lab.losses import Wasserstein
from gan_lab.models import Critic, Generator, SequentialBody, dcgan, mlp
from gan_lab.runs.safety import NonFiniteGuard
from gan_lab.runs.tracker import scalars_to_floats
from gan_lab.training import graphs
from gan_lab.training.observers import with_critic_input_stats
from gan_lab.training.settings import PRECISIONS, CriticSchedule
from gan_lab.training.train import Iteration
from generated_doc import made_at, source_state, write_keeping_notes  # scripts/generated_doc.py

BATCH, N_CRITIC, LAMBDA_GP, LR, BETAS = 64, 5, 10.0, 1e-4, (0.0, 0.9)
LOG_EVERY = 50  # gan-lab's default train.log_every: its loop reads the scalars back this often
IMAGE = (1, 28, 28)


# ---------------------------------------------------------------- the machine


def measured_line(commit: str, dirty: bool, started: float) -> str:
    """A generated doc's first line: when, the command that wrote it, the commit, and the seconds it took."""
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"Measured {when} with `{command}` at {made_at(commit, dirty)} "
            f"({time.perf_counter() - started:.0f} s in all).")

def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores, cpu, package = set(), None, "0"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines() + [""]:
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "processor":
                cpu = int(value)
            elif key == "physical id":
                package = value
            elif key == "core id" and cpu in allowed:
                cores.add((package, value))
    except OSError:
        pass
    return len(cores) or len(allowed)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def current_rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def _status_kib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so a peak can be read per variant."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib(resettable: bool) -> float:
    if resettable:
        return _status_kib("VmHWM") / 1024
    import resource  # the process-wide peak: without a reset it covers everything run so far

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- the networks

def mlp_mnist_nets() -> tuple[nn.Sequential, nn.Sequential]:
    """PyTorch-GAN's MNIST MLP: G 100-128-256-512-1024-784 with batch norm, critic 784-512-256-1."""
    def block(n_in: int, n_out: int, normalize: bool = True) -> list[nn.Module]:
        # BatchNorm1d(n, 0.8) sets eps=0.8 (meant as momentum): copied as written, it does not change the cost
        layers: list[nn.Module] = [nn.Linear(n_in, n_out)]
        if normalize:
            layers.append(nn.BatchNorm1d(n_out, 0.8))
        return layers + [nn.LeakyReLU(0.2, inplace=True)]

    G = nn.Sequential(*block(100, 128, normalize=False), *block(128, 256), *block(256, 512), *block(512, 1024),
                      nn.Linear(1024, math.prod(IMAGE)), nn.Tanh())
    critic = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(IMAGE), 512), nn.LeakyReLU(0.2, inplace=True),
                           nn.Linear(512, 256), nn.LeakyReLU(0.2, inplace=True), nn.Linear(256, 1))
    return G, critic


class TextbookGenerator(nn.Module):
    """PyTorch-GAN's Generator: z -> net -> view as an image."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.model = net

    def forward(self, z: Tensor) -> Tensor:
        return self.model(z).view(z.shape[0], *IMAGE)


class TextbookDiscriminator(nn.Module):
    """PyTorch-GAN's Discriminator: flatten -> net -> one score per sample, shape (B, 1)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.model = net

    def forward(self, img: Tensor) -> Tensor:
        return self.model(img.view(img.shape[0], -1))


def build_models(config: str, variant: str, seed: int) -> tuple[nn.Module, nn.Module, int]:
    """(G, critic, z_dim) for a configuration; the same seed gives both variants the same weights."""
    torch.manual_seed(seed)
    if config == "mlp_mnist":
        g_net, d_net = mlp_mnist_nets()
        if variant == "textbook":
            return TextbookGenerator(g_net), TextbookDiscriminator(d_net), 100
        # the identical network inside gan-lab's wrappers, which its step functions expect
        return Generator(g_net, 100, IMAGE), Critic(SequentialBody(*d_net), "none"), 100
    if config == "dcgan_mnist":
        G, critic = dcgan(IMAGE, z_dim=100, width=64, critic_norm="layer", conditional=False, pack=1, minibatch_std=0)
        return G, critic, 100
    if config == "mlp_ring8":  # gan-lab's default model for the toy mixtures
        G, critic = mlp((2,), z_dim=2, hidden=128, depth=3, generator_norm="none", critic_norm="none",
                        conditional=False, pack=1, minibatch_std=0)
        return G, critic, 2
    raise SystemExit(f"bench.py: unknown configuration {config!r}; choose from {', '.join(CONFIGS)}")


# ---------------------------------------------------------------- (a) the textbook loop

def ring8_batches(batch_size: int, sigma: float = 0.01) -> Any:
    """The official WGAN-GP toy code's generator: one Python/numpy draw per point."""
    scale = 1 / math.sqrt(2)
    centers = [(1, 0), (-1, 0), (0, 1), (0, -1), (scale, scale), (scale, -scale), (-scale, scale), (-scale, -scale)]
    while True:
        dataset = []
        for _ in range(batch_size):
            point = np.random.randn(2) * sigma
            center = random.choice(centers)
            point[0] += center[0]
            point[1] += center[1]
            dataset.append(point)
        yield torch.Tensor(np.array(dataset, dtype="float32")), None


def mnist_batches(root: str, batch_size: int) -> Any:
    """torchvision MNIST through a DataLoader with per-sample transforms, epoch after epoch."""
    dataset = datasets.MNIST(root, train=True, download=False,
                             transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])]))
    # PyTorch-GAN: shuffle=True, no workers; drop_last keeps every batch at batch_size
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    while True:
        yield from loader


class Textbook:
    """The loop of PyTorch-GAN's wgan_gp.py, stepped a few generator steps at a time."""

    name = "(a) textbook eager"

    def __init__(self, config: str, device: torch.device, data_root: str, seed: int):
        self.G, self.D, self.z_dim = build_models(config, "textbook", seed)
        self.G, self.D = self.G.to(device), self.D.to(device)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=LR, betas=BETAS)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=LR, betas=BETAS)
        np.random.seed(seed)
        random.seed(seed)
        self.batches = ring8_batches(BATCH) if config == "mlp_ring8" else mnist_batches(data_root, BATCH)
        self.device = device
        self.log = io.StringIO()  # the per-step print goes here, not onto the benchmark's output
        self.batches_done = 0

    def gradient_penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        alpha = torch.tensor(np.random.random((real.size(0),) + (1,) * (real.dim() - 1)), dtype=torch.float32,
                             device=self.device)
        interpolates = (alpha * real + ((1 - alpha) * fake)).requires_grad_(True)
        d_interpolates = self.D(interpolates)
        ones = torch.ones(d_interpolates.shape, device=self.device)
        gradients = autograd.grad(outputs=d_interpolates, inputs=interpolates, grad_outputs=ones,
                                  create_graph=True, retain_graph=True, only_inputs=True)[0]
        gradients = gradients.view(gradients.size(0), -1)
        return ((gradients.norm(2, dim=1) - 1) ** 2).mean()

    def run(self, generator_steps: int) -> None:
        for i in range(generator_steps * N_CRITIC):
            imgs, _ = next(self.batches)
            real_imgs = imgs.to(self.device, torch.float32)
            self.opt_D.zero_grad()
            z = torch.tensor(np.random.normal(0, 1, (imgs.shape[0], self.z_dim)), dtype=torch.float32,
                             device=self.device)
            fake_imgs = self.G(z)  # not detached, as written there: d_loss.backward() also runs through G
            real_validity = self.D(real_imgs)
            fake_validity = self.D(fake_imgs)
            gradient_penalty = self.gradient_penalty(real_imgs.data, fake_imgs.data)
            d_loss = -torch.mean(real_validity) + torch.mean(fake_validity) + LAMBDA_GP * gradient_penalty
            d_loss.backward()
            self.opt_D.step()
            self.opt_G.zero_grad()
            if (i + 1) % N_CRITIC == 0:
                fake_imgs = self.G(z)
                g_loss = -torch.mean(self.D(fake_imgs))
                g_loss.backward()
                self.opt_G.step()
                print(f"[Batch {self.batches_done}] [D loss: {d_loss.item():f}] [G loss: {g_loss.item():f}]",
                      file=self.log)
                self.log.seek(0)
                self.log.truncate()
            self.batches_done += 1


# ---------------------------------------------------------------- (b), (c) gan-lab

class GanLab:
    """gan-lab's loop body: `gan_lab.training.train.Iteration` (data on the device, critic_step / generator_step),
    run eagerly or as a CUDA graph by `gan_lab.training.graphs.runner`, scalars read at log steps."""

    def __init__(self, config: str, device: torch.device, data_root: str, seed: int, graph: bool = False,
                 precision: str = "fp32"):
        self.name = (f"({'c' if graph else 'b'}) gan-lab {'CUDA graph' if graph else 'eager'}"
                     + (f", {precision}" if precision != "fp32" else ""))
        self.G, self.critic, _ = build_models(config, "gan-lab", seed)
        self.G, self.critic = self.G.to(device), self.critic.to(device)
        # fused, as gan-lab's conf/optimizer/adam*.yaml build it (the textbook uses torch's default)
        opt_g = torch.optim.Adam(self.G.parameters(), lr=LR, betas=BETAS, fused=True)
        opt_d = torch.optim.Adam(self.critic.parameters(), lr=LR, betas=BETAS, fused=True)
        data = (ToyMixture("ring8", sigma=0.01, device=device) if config == "mlp_ring8"
                else ImageData("mnist", root=data_root, download=False, device=device))
        self.guard = NonFiniteGuard("stop", device)
        loss = Wasserstein(lambda_gp=LAMBDA_GP)
        schedule = CriticSchedule(n_critic=N_CRITIC, reg_every=1, clip=0.0, unroll=0)
        # the networks as gan_lab.training.train.train passes them without DDP: each plays both roles
        iteration = Iteration(self.G, self.critic, self.G, self.critic, loss, schedule, data, opt_g, opt_d, BATCH,
                              self.guard, PRECISIONS[precision])
        self.iterate = graphs.runner(iteration, graph, device, 0, skip=False)
        self.device = device
        self.step = 0
        torch.manual_seed(seed)

    def run(self, generator_steps: int) -> None:
        for _ in range(generator_steps):
            self.step += 1
            step = self.step
            # from here to the log step: the body of gan_lab.training.train.train
            stats, batch = self.iterate(step)
            if step % LOG_EVERY == 0:
                stats = with_critic_input_stats(self.G, self.critic, stats, batch)
                scalars_to_floats(stats)  # the log step's one read-back
                self.guard.check("benchmark")


class Images32:
    """3x32x32 uint8 images held in memory, sampled as gan-lab's ImageData does (CIFAR-10's shape; the step
    time does not depend on the pixels, and this machine has no CIFAR-10)."""

    shape, n_classes, size = (3, 32, 32), 10, 2048

    def __init__(self, device: torch.device, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (self.size, *self.shape), dtype=torch.uint8, generator=g).to(device)
        self.labels = (torch.arange(self.size) % self.n_classes).to(device)

    def sample(self, n: int) -> tuple[Tensor, Tensor]:
        index = torch.randint(0, self.size, (n,), device=self.images.device)
        return self.images[index].float().div(127.5).sub(1), self.labels[index]


class ModelStep:
    """gan-lab's eager iteration (hinge, n_critic 1, Adam 2e-4 (0, 0.9)) for one model at its YAML defaults."""

    def __init__(self, model: str, device: torch.device, seed: int):
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        from gan_lab.losses import Hinge

        node = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / f"{model}.yaml")
        torch.manual_seed(seed)
        self.G, self.critic = (net.to(device) for net in instantiate(node, shape=Images32.shape))
        self.name = model
        self.params = tuple(sum(p.numel() for p in net.parameters()) for net in (self.G, self.critic))
        opt_g = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.0, 0.9), fused=True)
        opt_d = torch.optim.Adam(self.critic.parameters(), lr=2e-4, betas=(0.0, 0.9), fused=True)
        self.guard = NonFiniteGuard("stop", device)
        schedule = CriticSchedule(n_critic=1, reg_every=1, clip=0.0, unroll=0)
        self.iterate = Iteration(self.G, self.critic, self.G, self.critic, Hinge(), schedule, Images32(device, seed),
                                 opt_g, opt_d, BATCH, self.guard)
        self.step = 0

    def run(self, generator_steps: int) -> None:
        stats: dict[str, Tensor] = {}
        for _ in range(generator_steps):
            self.step += 1
            stats, _ = self.iterate(self.step)
        scalars_to_floats(stats)  # read back once, as a log step does


def bench_models(models: list[str], device: torch.device, iters: int, warmup: int, rounds: int,
                 seed: int) -> list[tuple[ModelStep, Result]]:
    """Each model's step time, the models alternating in rounds (each round in another order)."""
    steps = [ModelStep(model, device, seed) for model in models]
    results = [Result() for _ in steps]
    for step in steps:
        step.run(warmup)
    chunks = [iters // rounds + (r < iters % rounds) for r in range(rounds)]
    for r, chunk in enumerate(chunks):
        order = list(range(len(steps))) if r % 2 == 0 else list(range(len(steps)))[::-1]
        for i in order:
            if chunk:
                sync(device)
                start = time.perf_counter()
                steps[i].run(chunk)
                sync(device)
                results[i].seconds.append(time.perf_counter() - start)
                results[i].steps.append(chunk)
    return list(zip(steps, results))


def models_report(args: argparse.Namespace, device: torch.device, commit: str, dirty: bool) -> None:
    """--models: the architectures' step times side by side -> args.out."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    threads = int(args.threads.split(",")[0])
    torch.set_num_threads(threads)
    iters = args.iters or 4
    load_before = os.getloadavg()
    started = time.perf_counter()
    measured = bench_models(models, device, iters, args.warmup, args.rounds, args.seed)
    base = next((r for s, r in measured if s.name == "dcgan"), measured[0][1])
    lines = ["| model (YAML defaults) | G parameters | critic parameters | s per generator step | "
             "generator steps/s | vs dcgan (range over rounds) |", "|---|--:|--:|--:|--:|--:|"]
    for step, r in measured:
        per_round = [a / b for a, b in zip(r.seconds, base.seconds)]
        seconds = sum(r.seconds) / sum(r.steps)
        lines.append(f"| {step.name} | {step.params[0]:,} | {step.params[1]:,} | {seconds:.3g} | {1 / seconds:.3g} "
                     f"| {seconds / (sum(base.seconds) / sum(base.steps)):.1f}x "
                     f"({min(per_round):.1f}-{max(per_round):.1f}) |")
    print("\n".join(lines), flush=True)
    report = [
        "# Step time of the image models at 32 px", "", measured_line(commit, dirty, started), "",
        f"- device: {device_name(device)} ({device}); torch {torch.__version__}; {threads} thread(s); "
        f"{physical_cores()} physical cores, {os.cpu_count()} logical CPUs; load average before "
        f"{', '.join(f'{x:.2f}' for x in load_before)}, after {os.getloadavg()[0]:.2f}.",
        f"- Each model at its conf/model YAML defaults on 3x32x32 images (in memory, CIFAR-10's shape), batch "
        f"{BATCH}, hinge loss, n_critic 1, Adam 2e-4 (0, 0.9), eager: one generator step is one critic step and "
        f"one generator step. {args.warmup} untimed steps each, then {iters} timed in {args.rounds} rounds whose "
        "order alternates.", "", *lines, "",
    ]
    write_keeping_notes(Path(args.out), report)
    print(f"wrote {args.out}")


# ---------------------------------------------------------------- timing

@dataclass
class Result:
    seconds: list[float] = field(default_factory=list)  # per round
    steps: list[int] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    built_rss_mib: float = 0.0
    cuda_peak_mib: float = float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_config(config: str, device: torch.device, data_root: str, iters: int, warmup: int, rounds: int,
                 seed: int, precisions: list[str]) -> dict[str, Result]:
    """Build the variants, warm them up, then time them in rounds, each round in another order."""
    variants, results = {}, {}
    makers = [lambda: Textbook(config, device, data_root, seed), lambda: GanLab(config, device, data_root, seed)]
    if device.type == "cuda":
        makers.append(lambda: GanLab(config, device, data_root, seed, graph=True))
    for precision in precisions:
        makers.append(lambda precision=precision: GanLab(config, device, data_root, seed,
                                                         graph=device.type == "cuda", precision=precision))
    for make in makers:
        before = current_rss_mib()
        variant = make()
        variants[variant.name] = variant
        results[variant.name] = Result(built_rss_mib=current_rss_mib() - before)
    resettable = reset_peak_rss()
    for variant in variants.values():
        variant.run(warmup)
    sync(device)
    chunks = [iters // rounds + (r < iters % rounds) for r in range(rounds)]
    for r, chunk in enumerate(chunks):
        order = list(variants) if r % 2 == 0 else list(variants)[::-1]  # alternate who goes first
        for name in order:
            if chunk == 0:
                continue
            reset_peak_rss()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            start = time.perf_counter()
            variants[name].run(chunk)
            sync(device)
            result = results[name]
            result.seconds.append(time.perf_counter() - start)
            result.steps.append(chunk)
            result.peak_rss_mib = max(result.peak_rss_mib, peak_rss_mib(resettable))
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) / 2**20
                result.cuda_peak_mib = peak if math.isnan(result.cuda_peak_mib) else max(result.cuda_peak_mib, peak)
    return results


# ---------------------------------------------------------------- the report

def table(config: str, threads: int, results: dict[str, Result], cuda: bool) -> list[str]:
    """Markdown rows for one configuration: rates, ratio to (a) with its range over rounds, memory."""
    base, eager = results[Textbook.name], results["(b) gan-lab eager"]
    rows = []
    for name, r in results.items():
        total, steps = sum(r.seconds), sum(r.steps)
        per_round = [a / b for a, b in zip(base.seconds, r.seconds)]
        ratio = f"{sum(base.seconds) / total:.2f}x ({min(per_round):.2f}-{max(per_round):.2f})"
        row = (f"| {config} | {threads} | {name} | {steps * N_CRITIC * BATCH / total:,.0f} | {steps / total:.2f} "
               f"| {ratio} | {sum(eager.seconds) / total:.2f}x | {r.peak_rss_mib:,.0f} (+{r.built_rss_mib:,.0f})")
        rows.append(row + (f" | {r.cuda_peak_mib:,.0f} |" if cuda else " |"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda when there is one)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--iters", type=int, default=None,
                        help="timed generator steps per variant (default per configuration: "
                             + ", ".join(f"{k} {v}" for k, v in CONFIGS.items()) + ")")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed generator steps per variant first (a CUDA graph is captured at the 4th)")
    parser.add_argument("--precision", default="bf16",
                        help="extra gan-lab rows at these precisions (comma-separated; '' for none)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="the timed steps alternate (a) and (b) in this many rounds")
    parser.add_argument("--threads", default=str(physical_cores()),
                        help="torch CPU threads, or a comma-separated list to measure each (default: physical cores)")
    parser.add_argument("--data-root", default=os.environ.get("GAN_LAB_DATA_ROOT", "data"),
                        help="folder holding MNIST/raw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/performance.md")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="measure a tree with uncommitted changes (the doc then says so)")
    parser.add_argument("--models", default="",
                        help="compare these conf/model options at 32 px instead (e.g. dcgan,resnet,r3gan)")
    args = parser.parse_args()
    commit, dirty = source_state(args.allow_dirty)  # the code imported above is the code measured

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this machine has no CUDA GPU that PyTorch can use")
    if args.models:
        return models_report(args, device, commit, dirty)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
    try:
        thread_counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads {args.threads}: give whole numbers, e.g. --threads 2 or --threads 2,1")
    mnist = Path(args.data_root, "MNIST", "raw", "train-images-idx3-ubyte")
    if any(c.endswith("_mnist") for c in configs) and not mnist.is_file():
        parser.error(f"MNIST is not under --data-root {args.data_root} (looked for {mnist}); "
                     f"pass the folder that holds MNIST/raw, e.g. --data-root /path/to/data")
    cuda = device.type == "cuda"
    load_before = os.getloadavg()
    header = (f"device: {device_name(device)} ({device}); torch {torch.__version__}; torch's default "
              f"{torch.get_num_threads()} threads; {physical_cores()} physical cores, {os.cpu_count()} logical CPUs")
    print(header, flush=True)
    lines = ["| configuration | threads | variant | critic images/s | generator steps/s | vs (a) (range over rounds) "
             "| vs (b) | peak RSS MiB (+ built) |" + (" CUDA max allocated MiB |" if cuda else ""),
             "|---|--:|---|--:|--:|--:|--:|--:|" + ("--:|" if cuda else "")]
    started = time.perf_counter()
    loads = []  # the 1-minute load average after each measurement (this benchmark adds up to `threads` to it)
    for config in configs:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            iters = args.iters or CONFIGS[config]
            t0 = time.perf_counter()
            results = bench_config(config, device, args.data_root, iters, args.warmup, args.rounds, args.seed,
                                   [p for p in args.precision.split(",") if p and p != "fp32"])
            rows = table(config, threads, results, cuda)
            print("\n".join(rows) + f"\n  ({iters} generator steps per variant, {time.perf_counter() - t0:.0f} s)",
                  flush=True)
            lines += rows
            loads.append(os.getloadavg()[0])

    report = [
        "# Performance: gan-lab against the textbook WGAN-GP loop", "", measured_line(commit, dirty, started), "",
        f"- {header}.",
        f"- Load average before (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_before)}; 1-minute load after "
        f"each measurement (this benchmark adds up to its thread count): {', '.join(f'{x:.2f}' for x in loads)}" + (
            f". The {os.cpu_count()}-CPU machine was not idle before the start: absolute rates may be low; the "
            "variants alternated in rounds, so all ran under the same load."
            if load_before[0] > 0.5 * (os.cpu_count() or 1) else "."),
        f"- Batch {BATCH}, WGAN-GP (lambda {LAMBDA_GP:g}, n_critic {N_CRITIC}), Adam lr {LR:g} betas {BETAS}, "
        f"the same initial weights; {args.warmup} untimed generator steps first, then {args.rounds} alternating "
        "rounds.",
        "", *lines, "",
    ]
    out = Path(args.out)
    write_keeping_notes(out, report)
    print(f"wrote {out}")


# configuration -> default timed generator steps per variant (the default run: ~2.5 minutes on 2 idle CPU cores)
CONFIGS: dict[str, int] = {"mlp_mnist": 300, "dcgan_mnist": 60, "mlp_ring8": 1000}

if __name__ == "__main__":
    main()
