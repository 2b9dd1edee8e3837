"""The fast paths: CUDA graphs (CUDA only), bf16 autocast and torch.compile."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import CONF, TINY, TINY_MLP, build_model, critic_schedule, requires_cuda, run_cli, user_error
from gan_lab.data import ToyMixture
from gan_lab.errors import GanLabError
from gan_lab.losses import Hinge, RaGAN, RpGAN, Wasserstein
from gan_lab.runs.checkpoint import load_checkpoint
from gan_lab.runs.safety import NonFiniteGuard
from gan_lab.training import graphs
from gan_lab.training.ema import GeneratorEMA
from gan_lab.training.schedules import LRSchedule, linear
from gan_lab.training.train import Iteration
from test_capture import TINY_SIZES
from test_train import read_events

# every conf/model option, tiny, and the cures that change what the critic runs (tests/test_capture.py checks each
# on the CPU; these compare its graph with eager on CUDA)
MODEL_OPTIONS = [*((p.stem, {}) for p in sorted((CONF / "model").glob("*.yaml"))),
                 ("mlp", {"pack": 2, "minibatch_std": 2}),
                 ("dcgan", {"minibatch_std": 2, "augment": ["translation", "color", "cutout"]}), ("r3gan", {"pack": 2})]


def build(device: str, loss=None, seed: int = 0, amp=None, model: str = "mlp", fused: bool = False,
          schedule_steps: int = 0, ema_kimg: float = 0.0, cures: dict | None = None, **knobs: float):
    """A seeded WGAN-GP iteration on ring8 (or a conv model on random 'images'), as gan_lab.training.train builds it.

    schedule_steps > 0: both learning rates fall linearly to 0 at that step (train.lr_schedule=linear);
    ema_kimg > 0: a generator EMA of that half-life with the default ramp-up (train.ema_kimg);
    knobs: the critic's schedule (n_critic, reg_every, ...; WGAN-GP's n_critic=5 without a loss).
    """
    torch.manual_seed(seed)
    if model == "mlp":
        G, critic = build_model("mlp", (2,), z_dim=2, hidden=64, depth=3, **(cures or {}))
        data = ToyMixture("ring8", sigma=0.02, device=device)
    elif model == "dcgan":
        G, critic = build_model("dcgan", (1, 28, 28), z_dim=16, width=16, critic_norm="layer", **(cures or {}))
        data = ImagesOnDevice(device)
    else:
        G, critic = build_model(model, (1, 28, 28), z_dim=16, **TINY_SIZES.get(model, {}), **(cures or {}))
        data = ImagesOnDevice(device)
    G, critic = G.to(device), critic.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.0, 0.9), fused=fused or None)
    opt_d = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.0, 0.9), fused=fused or None)
    schedule_knobs = {"n_critic": 5, **knobs} if loss is None else knobs
    loss = loss or Wasserstein(lambda_gp=10.0)
    guard = NonFiniteGuard("stop", torch.device(device))
    schedule = LRSchedule(linear, (opt_g, opt_d), schedule_steps, torch.device(device)) if schedule_steps else None
    ema = GeneratorEMA(G, ema_kimg, 0.05, 32) if ema_kimg else None
    return Iteration(G, critic, G, critic, loss, critic_schedule(**schedule_knobs), data, opt_g, opt_d, 32, guard,
                     amp, schedule, ema)


class ImagesOnDevice:
    """512 random uint8 'images' held on the device, sampled like gan_lab.data.ImageData."""

    def __init__(self, device: str):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (512, 1, 28, 28), generator=g, dtype=torch.uint8).to(device)
        self.shape, self.n_classes, self.size = (1, 28, 28), 0, 512

    def sample(self, batch_size: int):
        idx = torch.randint(self.size, (batch_size,), device=self.images.device)
        return self.images.index_select(0, idx).float().div_(127.5).sub_(1.0), None


def losses_over(run, steps: int) -> torch.Tensor:
    """(steps, 2) critic and generator losses, read back after every step."""
    out = []
    for step in range(1, steps + 1):
        stats, _ = run(step)
        out.append(torch.stack([stats["loss/critic"], stats["loss/generator"]]).float().cpu())
    return torch.stack(out)


# ---------------------------------------------------------------- CUDA graphs (skipped without CUDA)

@pytest.fixture
def deterministic():
    """Deterministic kernels, so that any difference between two runs is the graph's doing."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)


@requires_cuda
@pytest.mark.parametrize("model, cures", MODEL_OPTIONS, ids=[f"{m}{'-cured' if c else ''}" for m, c in MODEL_OPTIONS])
def test_graph_and_eager_give_the_same_losses(model: str, cures: dict, deterministic) -> None:
    eager = build("cuda", model=model, cures=cures)
    graphs.runner(eager, False, torch.device("cuda"), 0, skip=False)
    for opt in (eager.opt_g, eager.opt_d):
        # Adam's math as the graph runs it: capturable computes its bias corrections on the
        # device in float32 rather than on the host in float64 (a 1e-7 difference per step,
        # which a GAN run amplifies to 1e-3 in 300 steps)
        graphs.set_capturable(opt, True)
    graphed_iteration = build("cuda", model=model, cures=cures)
    graphed = graphs.runner(graphed_iteration, True, torch.device("cuda"), 0, skip=False)
    assert isinstance(graphed, graphs.GraphedIteration)
    torch.manual_seed(1)
    a = losses_over(eager, 300)
    torch.manual_seed(1)
    b = losses_over(graphed, 300)
    assert graphed.graph is not None and not graphed.eager  # really captured and replayed
    assert torch.isfinite(b).all()
    if model == "mlp":  # packing and minibatch std add no kernel that is not bitwise reproducible
        # The same kernels on the same random numbers: equal up to float rounding after 300 steps,
        # and the same weights at the end, not only the same losses.
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        for p, q in zip(eager.critic.parameters(), graphed_iteration.critic.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    else:
        # The conv models' cuDNN kernels are not bitwise reproducible even eagerly: on an H100 the two
        # runs differ by 1e-5 at step 1, an eager warm-up step of the graphed run, and a GAN run
        # amplifies that to ~6e-2 by step 300 (losses of size 1 to 3). Different random numbers
        # or a wrong captured step would differ by O(1) at once.
        torch.testing.assert_close(b[:10], a[:10], rtol=1e-3, atol=5e-3)


@requires_cuda
@pytest.mark.parametrize("fused", [False, True])
def test_graph_with_linear_schedule_matches_eager(fused: bool, deterministic) -> None:
    # The schedule is captured: every replay sets its own step's learning rates from the graph's
    # step counter (fused Adam reads them through a pointer, capturable Adam as tensor operands).
    steps = 200
    eager = build("cuda", fused=fused, schedule_steps=steps)
    graphs.runner(eager, False, torch.device("cuda"), 0, skip=False, lr_schedule="linear")
    for opt in (eager.opt_g, eager.opt_d):
        graphs.set_capturable(opt, True)  # the graph's Adam math, as in the test above
    graphed_iteration = build("cuda", fused=fused, schedule_steps=steps)
    graphed = graphs.runner(graphed_iteration, True, torch.device("cuda"), 0, skip=False, lr_schedule="linear")
    assert isinstance(graphed, graphs.GraphedIteration)
    torch.manual_seed(1)
    a = losses_over(eager, steps)
    torch.manual_seed(1)
    b = losses_over(graphed, steps)
    assert graphed.graph is not None and not graphed.eager
    lr = graphed_iteration.opt_d.param_groups[0]["lr"]
    assert lr.device.type == "cuda" and float(lr) == pytest.approx(1e-4 / steps, rel=1e-6)  # the last step's
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    for p, q in zip(eager.critic.parameters(), graphed_iteration.critic.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    # and the schedule really acted inside the graph: a constant lr ends elsewhere
    constant = build("cuda", fused=fused)
    graphs.runner(constant, True, torch.device("cuda"), 0, skip=False)
    torch.manual_seed(1)
    c = losses_over(constant, steps)
    assert not torch.allclose(c[-20:], b[-20:], rtol=1e-3, atol=1e-3)


@requires_cuda
def test_graph_linear_schedule_cli_runs_graphed_and_resumes_on_the_cpu(tmp_path: Path, capsys) -> None:
    scheduled = [*TINY, *TINY_MLP, "train.lr_schedule=linear", "optimizer.lr=1e-3", "train.steps=8",
                 "train.checkpoint_every=4", "train.log_every=1"]
    run_cli("train", *scheduled, "device=cuda", "train.cuda_graph=true", f"hydra.run.dir={tmp_path}")
    out = " ".join(capsys.readouterr().err.split())
    assert "CUDA graph" in out and "no CUDA graph" not in out
    lrs = {e.step: e.value for e in read_events(tmp_path).Scalars("train/lr_critic")}
    assert lrs == pytest.approx({s: 1e-3 * (1 - (s - 1) / 8) for s in range(1, 9)}, rel=1e-6)  # replays too
    state = load_checkpoint(tmp_path)
    assert state["opt_d"]["param_groups"][0]["lr"].dtype == torch.float32  # mapped to the CPU on load
    run_cli("train", *scheduled, "device=cpu", "train.steps=8",
            f"resume={tmp_path / 'checkpoints' / 'step_00000004.pt'}", f"hydra.run.dir={tmp_path / 'cpu'}")
    assert load_checkpoint(tmp_path / "cpu")["step"] == 8


@requires_cuda
def test_graph_linear_schedule_with_unfused_sgd_trains_eagerly_with_a_warning(tmp_path: Path, capsys) -> None:
    run_cli("train", *TINY, *TINY_MLP, "device=cuda", "optimizer=sgd", "train.lr_schedule=linear",
            f"hydra.run.dir={tmp_path}")
    out = " ".join(capsys.readouterr().err.split())
    assert out.count("no CUDA graph for this run") == 1 and "with optimizer SGD" in out
    run_cli("train", *TINY, *TINY_MLP, "device=cuda", "optimizer=sgd", "+optimizer.fused=true",
            "train.lr_schedule=linear", f"hydra.run.dir={tmp_path / 'fused'}")
    assert "no CUDA graph" not in " ".join(capsys.readouterr().err.split())


@requires_cuda
def test_graph_guard_records_the_step_a_nan_appeared() -> None:
    iteration = build("cuda")
    run = graphs.runner(iteration, True, torch.device("cuda"), 0, skip=False)
    for step in range(1, 11):
        run(step)
    iteration.guard.check("fine")  # nothing non-finite yet
    with torch.no_grad():
        next(iteration.critic.parameters()).fill_(float("nan"))  # the graph reads this very tensor
    for step in range(11, 16):
        run(step)
    with pytest.raises(GanLabError, match="at generator step 11"):
        iteration.guard.check("the last good checkpoint")


@requires_cuda
def test_graph_cli_run_resumes_eagerly(tmp_path: Path) -> None:
    run_cli("train", *TINY, *TINY_MLP, "device=cuda", "train.steps=8", "train.checkpoint_every=4",
            f"hydra.run.dir={tmp_path}")
    state = load_checkpoint(tmp_path)
    assert state["opt_d"]["param_groups"][0]["capturable"] is True
    run_cli("train", *TINY, *TINY_MLP, "device=cuda", "train.steps=12", "train.cuda_graph=false",
            f"hydra.run.dir={tmp_path}")
    run_cli("train", *TINY, *TINY_MLP, "device=cpu", "train.steps=16", f"hydra.run.dir={tmp_path}")
    assert load_checkpoint(tmp_path)["step"] == 16
    values = [e.value for e in read_events(tmp_path).Scalars("loss/critic")]
    assert len(values) == 8 and all(torch.isfinite(torch.tensor(values)))


@requires_cuda
def test_graph_with_skip_falls_back_with_a_warning(tmp_path: Path, capsys) -> None:
    run_cli("train", *TINY, *TINY_MLP, "device=cuda", "train.nonfinite=skip", "train.cuda_graph=true",
            f"hydra.run.dir={tmp_path}")
    out = " ".join(capsys.readouterr().err.split())
    assert "no CUDA graph for this run: train.nonfinite=skip" in out
    assert load_checkpoint(tmp_path)["step"] == 4


@requires_cuda
def test_graph_bf16_and_compile_run(tmp_path: Path, capsys) -> None:
    run_cli("train", *TINY, *TINY_MLP, "device=cuda", "train.precision=bf16", "train.compile=aot_eager",
            "train.steps=6", f"hydra.run.dir={tmp_path}")
    out = " ".join(capsys.readouterr().err.split())
    assert "CUDA graph" in out and "compiled generator" in out
    penalty = [e.value for e in read_events(tmp_path).Scalars("loss/gradient_penalty")]
    assert penalty and all(torch.isfinite(torch.tensor(penalty)))


# ---------------------------------------------------------------- CPU: bf16, compile, settings

@pytest.mark.slow
def test_bf16_runs_and_the_penalty_stays_finite(tmp_path: Path) -> None:
    run_cli("train", *TINY, *TINY_MLP, "train.precision=bf16", "train.steps=6", f"hydra.run.dir={tmp_path}")
    events = read_events(tmp_path)
    penalty = [e.value for e in events.Scalars("loss/gradient_penalty")]
    assert len(penalty) == 3 and all(torch.isfinite(torch.tensor(penalty)))
    assert load_checkpoint(tmp_path)["config"]["train"]["precision"] == "bf16"


def test_bf16_penalty_norm_is_float32() -> None:
    iteration = build("cpu", amp=torch.bfloat16)
    stats, _ = iteration(1)
    assert stats["loss/gradient_penalty"].dtype == torch.float32
    assert stats["loss/critic"].dtype == torch.float32 and torch.isfinite(stats["loss/critic"])


@pytest.mark.slow
def test_compile_penalised_compiles_the_generator_only(tmp_path: Path, capsys) -> None:
    run_cli("train", *TINY, *TINY_MLP, "train.compile=aot_eager", f"hydra.run.dir={tmp_path}")
    out = " ".join(capsys.readouterr().err.split())
    assert "compiled generator (" in out and "the critic stays eager" in out
    assert load_checkpoint(tmp_path)["step"] == 4  # state dicts of the plain modules: no _orig_mod. prefix
    assert not any(k.startswith("_orig_mod") for k in load_checkpoint(tmp_path)["G"])


@pytest.mark.slow  # torch.compile's first compilation takes seconds on a CPU
def test_compile_without_penalty_compiles_both_and_matches_eager() -> None:
    eager = build("cpu", loss=Hinge())
    torch.manual_seed(3)
    a = losses_over(eager, 5)
    compiled = graphs.compiled(build("cpu", loss=Hinge()), "aot_eager", penalised=False)
    torch.manual_seed(3)
    b = losses_over(compiled, 5)
    assert compiled.graphs["generator"] >= 1 and compiled.graphs["critic"] >= 1
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("override, message", [
    ("train.cuda_graph=true", "train.cuda_graph=true needs the run on a CUDA device"),
    ("train.cuda_graph=sometimes", "train.cuda_graph='sometimes' is not known"),
    ("train.precision=fp16", "train.precision='fp16' is not known: use fp32 or bf16"),
    ("train.compile=nonsense", "train.compile='nonsense' is not a torch.compile backend"),
    ("train.lr_schedule=cosine", "train.lr_schedule='cosine' is not known: use constant, or linear"),
])
def test_bad_fast_path_settings(override: str, message: str, tmp_path: Path, capsys) -> None:
    assert message in user_error(capsys, "train", *TINY, *TINY_MLP, override, f"hydra.run.dir={tmp_path}")


def test_graph_blockers_name_the_setting() -> None:
    assert graphs.graph_blocker(skip=False) is None
    assert "train.nonfinite=skip" in graphs.graph_blocker(skip=True)


@requires_cuda
@pytest.mark.parametrize("loss", [RaGAN(), RpGAN(lambda_r1=0.1, lambda_r2=0.1)])
def test_graph_replays_a_relativistic_generator_step(loss, deterministic) -> None:
    # the generator step's fresh real batch is drawn inside the graph, like the critic's: the same
    # losses as eager steps on the same random numbers
    eager = build("cuda", loss=loss)
    graphs.runner(eager, False, torch.device("cuda"), 0, skip=False)
    for opt in (eager.opt_g, eager.opt_d):
        graphs.set_capturable(opt, True)  # Adam's float32 device-side bias corrections, as the graph's
    graphed = graphs.runner(build("cuda", loss=loss), True, torch.device("cuda"), 0, skip=False)
    torch.manual_seed(1)
    a = losses_over(eager, 50)
    torch.manual_seed(1)
    b = losses_over(graphed, 50)
    assert graphed.graph is not None and not graphed.eager
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_graph_blockers_of_a_schedule_name_the_optimizer() -> None:
    # a schedule is captured when the optimizer step reads the lr tensor in device memory
    p = [torch.nn.Parameter(torch.zeros(3))]
    optim = torch.optim
    for opt in (optim.Adam(p, fused=True), optim.Adam(p), optim.Adam(p, foreach=False), optim.AdamW(p),
                optim.RMSprop(p), optim.SGD(p, momentum=0.5, fused=True)):
        assert graphs.graph_blocker(False, "linear", (opt,)) is None, opt
        assert graphs.graph_blocker(False, "constant", (opt,)) is None
    for opt in (optim.SGD(p, lr=0.1, momentum=0.5), optim.RMSprop(p, foreach=False)):
        name = type(opt).__name__
        assert f"train.lr_schedule=linear with optimizer {name}" in graphs.graph_blocker(False, "linear", (opt,))
        assert graphs.graph_blocker(False, "constant", (opt,)) is None  # a float lr is captured as it is


def test_set_capturable_moves_step_counts() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.Adam([p], capturable=False)
    p.grad = torch.ones(3)
    opt.step()
    graphs.set_capturable(opt, False)
    assert opt.state[p]["step"].device.type == "cpu" and opt.param_groups[0]["capturable"] is False
    state = opt.state_dict()
    state["param_groups"][0]["capturable"] = True  # as a graphed run saves it
    opt.load_state_dict(state)
    graphs.set_capturable(opt, False)  # resuming eagerly on the CPU
    opt.step()
    assert opt.param_groups[0]["capturable"] is False and float(opt.state[p]["step"]) == 2


def test_gpu_checks_script_is_valid_bash() -> None:
    # scripts/gpu_checks.sh runs only on a lent GPU machine: here its syntax, and that it names what exists
    import subprocess

    script = Path(__file__).parent.parent / "scripts" / "gpu_checks.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True).returncode == 0
    text = script.read_text()
    for test_file in ("tests/test_graphs.py", "tests/test_data_sampling.py", "scripts/bench.py"):
        assert test_file in text and (script.parent.parent / test_file).is_file()


@requires_cuda
def test_graph_per_phase_of_lazy_regularisation_matches_eager(deterministic) -> None:
    loss = lambda: RpGAN(lambda_r1=0.1, lambda_r2=0.1)
    eager = build("cuda", loss=loss(), reg_every=4)
    graphs.runner(eager, False, torch.device("cuda"), 0, skip=False)
    for opt in (eager.opt_g, eager.opt_d):
        graphs.set_capturable(opt, True)
    graphed = graphs.runner(build("cuda", loss=loss(), reg_every=4), True, torch.device("cuda"), 0, skip=False)
    torch.manual_seed(1)
    a = losses_over(eager, 40)
    torch.manual_seed(1)
    b = losses_over(graphed, 40)
    assert len(graphed.graphs) == 2 and not graphed.eager  # a regularising phase and a skipping one
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@requires_cuda
def test_graph_with_ema_matches_eager(deterministic) -> None:
    # the EMA's update is captured: every replay applies its own step's beta (ramp-up included)
    eager = build("cuda", ema_kimg=0.5)
    graphs.runner(eager, False, torch.device("cuda"), 0, skip=False)
    for opt in (eager.opt_g, eager.opt_d):
        graphs.set_capturable(opt, True)
    graphed_iteration = build("cuda", ema_kimg=0.5)
    graphed = graphs.runner(graphed_iteration, True, torch.device("cuda"), 0, skip=False)
    torch.manual_seed(1)
    losses_over(eager, 60)
    torch.manual_seed(1)
    losses_over(graphed, 60)
    assert graphed.graph is not None and not graphed.eager
    for p, q in zip(eager.ema.G_ema.parameters(), graphed_iteration.ema.G_ema.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(graphed_iteration.ema.G_ema.net[0].weight, graphed_iteration.G.net[0].weight)


def eager_and_captured(read: str | None = None, steps: int = 6, **build_kwargs):
    """One iteration trained by the eager loop's int steps, its twin by what a CUDA graph records.

    The graph's body runs on the CPU here: the step a device tensor incremented in place, the
    phase chosen on the host. Returns both iterations and, per step, the scalar `read` of each.
    """
    eager, body = build("cpu", **build_kwargs), build("cpu", **build_kwargs)
    graphed = graphs.GraphedIteration(body, 0, torch.device("cpu"))
    torch.manual_seed(1)
    a = [eager(step)[0].get(read, torch.zeros(())).clone() for step in range(1, steps + 1)]
    torch.manual_seed(1)
    b = [graphed._body(body.phase(step))[0].get(read, torch.zeros(())).clone() for step in range(1, steps + 1)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    return eager, body, a


def same_state(*pairs: tuple[torch.nn.Module, torch.nn.Module]) -> bool:
    return all(torch.equal(p, q) for a, b in pairs for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_captured_body_with_a_schedule_trains_as_the_eager_loop() -> None:
    eager, body, _ = eager_and_captured(schedule_steps=6)
    assert same_state((eager.G, body.G), (eager.critic, body.critic))
    assert float(body.opt_g.param_groups[0]["lr"]) == 1e-4 * (1 - 5 / 6)  # the last step's, exactly


def test_captured_body_with_lazy_regularisation_trains_as_the_eager_loop() -> None:
    # reg_every=3 with 2 critic steps: three phases, each its own graph on CUDA
    loss = RpGAN(lambda_r1=0.1, lambda_r2=0.1)
    eager, body, logged = eager_and_captured("loss/r1_penalty", loss=loss, n_critic=2, reg_every=3)
    assert {body.phase(step) for step in range(1, 7)} == {(True, False), (False, True), (False, False)}
    assert same_state((eager.G, body.G), (eager.critic, body.critic))
    assert torch.equal(logged[2], logged[1])  # step 3 skips the penalties: it reports step 2's value


def test_captured_body_with_ema_averages_as_the_eager_loop() -> None:
    # the EMA's beta and ramp-up computed from the step as a device tensor: G_ema bitwise as the eager loop's
    eager, body, _ = eager_and_captured(ema_kimg=0.5)
    assert same_state((eager.G, body.G), (eager.ema.G_ema, body.ema.G_ema))
    assert not torch.equal(body.ema.G_ema.net[0].weight, body.G.net[0].weight)
