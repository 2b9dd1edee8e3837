"""End-to-end runs through the CLI entry point: every loss, event files, checkpoints, resume."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.testing import assert_close

from conftest import TINY, TINY_DCGAN, TINY_MLP, build_model, critic_schedule, run_cli, straight_and_resumed
from gan_lab.data import ToyMixture
from gan_lab.losses import Loss, RaGAN, RpGAN, Wasserstein
from gan_lab.app.options import conf_options
from gan_lab.runs.checkpoint import load_checkpoint
from gan_lab.runs.rebuild import builders
from gan_lab.runs.safety import NonFiniteGuard
from gan_lab.training.train import Iteration, critic_step, generator_step

LOSSES = conf_options("loss")  # every loss the CLI offers
TAGS = {"loss/critic", "loss/generator", "critic/real", "critic/fake",
        "grad_norm/critic", "grad_norm/generator", "grad_norm/critic_input", "grad_norm/critic_input_std"}


def read_events(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def check_run(run_dir: Path, extra_tags: set[str], steps: int = 4) -> None:
    events = read_events(run_dir)
    scalars = set(events.Tags()["scalars"])
    assert TAGS | extra_tags <= scalars, TAGS | extra_tags - scalars
    # the Wasserstein estimate is logged exactly for the losses that declare a Wasserstein-like critic
    loss = builders("loss")[load_checkpoint(run_dir)["config"]["loss"]["_target_"]]
    assert ("critic/wasserstein_estimate" in scalars) == loss.wasserstein_critic
    # r_t = E[sign(D(x) - undecided_at)] exactly for the losses whose one score means something
    assert ("critic/r_t" in scalars) == (loss.undecided_at is not None)
    if loss.undecided_at is not None:
        r_t = [e.value for e in events.Scalars("critic/r_t")]
        assert all(-1.0 <= v <= 1.0 for v in r_t) and all(v * 16 == round(v * 16) for v in r_t), r_t  # batch 16: k/16
    assert [e.step for e in events.Scalars("loss/critic")] == list(range(2, steps + 1, 2))
    assert all(torch.isfinite(torch.tensor(e.value)) for e in events.Scalars("loss/generator"))
    assert "samples" in events.Tags()["images"]
    state = load_checkpoint(run_dir)
    assert state["step"] == steps and set(state) >= {"G", "critic", "opt_g", "opt_d", "rng", "config"}
    assert (run_dir / "checkpoints" / f"step_{steps:08d}.pt").exists()
    assert (run_dir / "samples" / f"step_{steps:08d}.png").exists()


def penalty_tags(run_dir: Path) -> set[str]:
    """The loss/<penalty> tags the run's loss turns on, from its checkpoint's config (no target instantiated)."""
    penalties = {f.name for f in fields(Loss)}  # the loss node's other keys are the critic's schedule
    settings = {k: v for k, v in load_checkpoint(run_dir)["config"]["loss"].items() if k in penalties}
    return {f"loss/{penalty.tag}" for penalty in Loss(**settings).penalties()}


# the default loss trains in the quick tier; every other loss's run is `slow` (their math: test_losses.py)
@pytest.mark.parametrize("loss", [loss if loss == "wgan_gp" else pytest.param(loss, marks=pytest.mark.slow)
                                  for loss in LOSSES])
def test_every_loss_trains_on_ring8(loss: str, tmp_path: Path) -> None:
    run_cli("train", f"loss={loss}", *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path}")
    check_run(tmp_path, penalty_tags(tmp_path))


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_dcgan_on_tiny_images(loss: str, tmp_path: Path, tiny_mnist_root: Path) -> None:
    run_cli("train", f"loss={loss}", "data=mnist", f"data.root={tiny_mnist_root}", "data.download=false",
            *TINY, *TINY_DCGAN, f"hydra.run.dir={tmp_path}")
    check_run(tmp_path, penalty_tags(tmp_path))
    assert load_checkpoint(tmp_path)["config"]["model"]["_target_"] == "gan_lab.models.dcgan"


@pytest.mark.parametrize("penalty", ["r1", pytest.param("r2", marks=pytest.mark.slow),
                                     pytest.param("dragan", marks=pytest.mark.slow)])
def test_penalty_options_are_logged(penalty: str, tmp_path: Path) -> None:
    run_cli("train", "loss=nonsaturating", f"loss.lambda_{penalty}=1.0", *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path}")
    check_run(tmp_path, {f"loss/{penalty}_penalty"})


@pytest.mark.slow
def test_relativistic_bf16_skip_resume_gives_the_weights_of_a_straight_run(tmp_path: Path) -> None:
    # r3gan (RpGAN + R1 + R2): the generator step's real batch comes from the same RNG stream, so a
    # resumed run continues it exactly; the penalties run lazily here, on every second critic step
    common = ["loss=r3gan", "loss.reg_every=2", "train.precision=bf16", "train.nonfinite=skip",
              "train.batch_size=16", "train.log_every=1", "train.sample_every=6", "train.checkpoint_every=3",
              "device=cpu", *TINY_MLP]
    straight, resumed = straight_and_resumed(tmp_path, common)
    for net in ("G", "critic"):
        for key, value in straight[net].items():
            assert_close(resumed[net][key], value, rtol=0, atol=0)
    events = read_events(tmp_path / "straight")
    assert all(torch.isfinite(torch.tensor(e.value)) for e in events.Scalars("loss/generator"))
    for tag in penalty_tags(tmp_path / "straight"):  # lazily computed penalties are still logged at every log step
        assert [e.step for e in events.Scalars(tag)] == list(range(1, 7))


@pytest.mark.slow
def test_weight_clipping_holds_in_a_run(tmp_path: Path) -> None:
    run_cli("train", "loss=wgan_clip", *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path}")
    critic = load_checkpoint(tmp_path)["critic"]
    assert max(t.abs().max().item() for t in critic.values()) <= 0.01


def test_hparams_are_written(tmp_path: Path) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_cli("train", *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path}")
    events = read_events(tmp_path)
    plugins = [plugin_data_pb2.HParamsPluginData.FromString(events.summary_metadata[tag].plugin_data.content)
               for tag in events.summary_metadata if events.summary_metadata[tag].plugin_data.plugin_name == "hparams"]
    (start,) = [p.session_start_info for p in plugins if p.HasField("session_start_info")]
    assert start.hparams["Loss"].string_value == "wgan_gp" and start.hparams["loss.lambda_gp"].number_value == 0.1
    # no experiment summary: TensorBoard then builds the columns from every run's hparams (swept keys
    # first) and the metrics from the runs' own curves, so no one-point hparams/* copies in the Scalars tab
    assert not [p for p in plugins if p.HasField("experiment")]
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("hparams/")]


@pytest.mark.slow  # three runs of 6 steps each
def test_resume_gives_the_weights_of_a_straight_run(tmp_path: Path) -> None:
    common = ["loss=wgan_gp", "train.batch_size=16", "train.log_every=3", "train.sample_every=3",
              "train.checkpoint_every=3", "device=cpu", *TINY_MLP]
    straight, resumed = straight_and_resumed(tmp_path, common)
    assert resumed["step"] == straight["step"] == 6
    for net in ("G", "critic"):
        for key, value in straight[net].items():
            assert_close(resumed[net][key], value, rtol=0, atol=0)
    # and the first half really was different from the end: resume trained for real
    first = load_checkpoint(tmp_path / "first")
    assert not torch.equal(first["G"]["net.0.weight"], straight["G"]["net.0.weight"])


def test_keep_checkpoints_prunes_old_step_files(tmp_path: Path) -> None:
    run_cli("train", "train.steps=8", "train.checkpoint_every=1", "train.keep_checkpoints=2", "train.batch_size=8",
            "train.sample_every=8", "device=cpu", *TINY_MLP, f"hydra.run.dir={tmp_path}")
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_00000007.pt", "step_00000008.pt"]


def test_checkpoints_follow_the_umask_and_last_is_a_link_not_a_copy(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        run_cli("train", *TINY, *TINY_MLP, "threads=1", "train.keep_checkpoints=1", f"hydra.run.dir={tmp_path / 'run'}")
        run_cli("train", *TINY, *TINY_MLP, "threads=1", "train.keep_checkpoints=0", f"hydra.run.dir={tmp_path / 'none'}")
    finally:
        os.umask(old)
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_00000004.pt"]
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path  # readable by the lab, like every other file
    assert (folder / "last.pt").samefile(folder / "step_00000004.pt")  # one copy on disk, two names
    # keep_checkpoints=0 prunes every step file; last.pt stays whole
    assert sorted(p.name for p in (tmp_path / "none" / "checkpoints").iterdir()) == ["last.pt"]
    assert load_checkpoint(tmp_path / "none")["step"] == 4


def test_real_mnist_short_run(tmp_path: Path, real_data_root: Path) -> None:
    run_cli("train", "data=mnist", f"data.root={real_data_root}", "data.download=false", *TINY, *TINY_DCGAN,
            f"hydra.run.dir={tmp_path}")
    check_run(tmp_path, {"loss/gradient_penalty"})
    state = load_checkpoint(tmp_path)
    assert state["config"]["loss"]["lambda_gp"] == 10 and state["G"]["net.0.weight"].shape == (8 * 4 * 7 * 7, 16)


@pytest.mark.slow
def test_multirun_sweep_makes_one_run_directory_per_value(tmp_path: Path) -> None:
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    out = subprocess.run([sys.executable, "-m", "gan_lab", "train", "-m", "loss=wgan_gp", "loss.lambda_gp=0.1,10",
                          *TINY, *TINY_MLP, f"hydra.sweep.dir={sweep}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name != ".hydra")
    assert len(runs) == 2  # named by job number and overrides
    assert runs[0].name.startswith("0_") and "loss.lambda_gp=0.1," in runs[0].name
    assert runs[1].name.startswith("1_") and "loss.lambda_gp=10," in runs[1].name
    for run, lam in zip(runs, (0.1, 10.0)):
        assert len(list(run.glob("events.out.tfevents.*"))) == 1  # one writer per job, none leaking
        assert load_checkpoint(run)["config"]["loss"]["lambda_gp"] == lam
        penalty = read_events(run).Scalars("loss/gradient_penalty")
        assert len(penalty) == 2


@pytest.mark.slow
def test_linear_lr_schedule_logs_and_resumes_exactly(tmp_path: Path) -> None:
    common = ["train.batch_size=16", "train.log_every=2", "train.sample_every=8", "train.checkpoint_every=4",
              "train.steps=8", "train.lr_schedule=linear", "optimizer.lr=1e-3", "device=cpu", *TINY_MLP]
    run_cli("train", *common, f"hydra.run.dir={tmp_path / 'straight'}")
    events = read_events(tmp_path / "straight")
    for tag in ("train/lr_generator", "train/lr_critic"):  # step s updates with lr * (1 - (s - 1) / steps)
        logged = {e.step: e.value for e in events.Scalars(tag)}
        assert logged == pytest.approx({s: 1e-3 * (1 - (s - 1) / 8) for s in (2, 4, 6, 8)}, rel=1e-6)
    # resuming the step-4 checkpoint continues the same schedule: the same weights as the straight run
    run_cli("train", *common, f"resume={tmp_path / 'straight' / 'checkpoints' / 'step_00000004.pt'}",
            f"hydra.run.dir={tmp_path / 'resumed'}")
    straight, resumed = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    for net in ("G", "critic"):
        for key, value in straight[net].items():
            assert_close(resumed[net][key], value, rtol=0, atol=0)
    # the step-4 checkpoint as a graphed CUDA run writes it, read on the CPU: float32 learning-rate
    # tensors and capturable optimizers. It loads safely and resumes on the CPU to the same weights.
    state = torch.load(tmp_path / "straight" / "checkpoints" / "step_00000004.pt", weights_only=True)
    for opt in ("opt_g", "opt_d"):
        for group in state[opt]["param_groups"]:
            assert isinstance(group["lr"], torch.Tensor) and group["lr"].dtype == torch.float64
            group["lr"], group["capturable"] = group["lr"].float(), True
        for param_state in state[opt]["state"].values():
            param_state["step"] = param_state["step"].float()
    torch.save(state, tmp_path / "from_cuda.pt")
    run_cli("train", *common, f"resume={tmp_path / 'from_cuda.pt'}", f"hydra.run.dir={tmp_path / 'from_cuda'}")
    from_cuda = load_checkpoint(tmp_path / "from_cuda")
    assert from_cuda["opt_d"]["param_groups"][0]["capturable"] is False
    for net in ("G", "critic"):
        for key, value in straight[net].items():
            assert torch.equal(from_cuda[net][key], value), f"{net}.{key}"
    # and the schedule really changed the training: a constant lr ends elsewhere
    run_cli("train", *common, "train.lr_schedule=constant", f"hydra.run.dir={tmp_path / 'constant'}")
    assert not torch.equal(load_checkpoint(tmp_path / "constant")["G"]["net.0.weight"], straight["G"]["net.0.weight"])


@pytest.mark.slow
def test_wgan_gp_learns_the_ring8_modes(tmp_path: Path) -> None:
    # The learning test: the default run (WGAN-GP, lambda 0.1, 3 x 128 MLPs, batch 256), cut to
    # 1,500 generator steps. Over seeds 0-4 these settings covered 8/8 modes with 18-36% of the
    # 2,500 samples within 3 sigma (seed 0: 36%). Mode counts alone say little this early (at
    # step 250 the runs touched 6-8 modes with <= 1% of samples near them), hence both checks.
    run_cli("train", "train.steps=1500", "train.eval_every=1500", "train.sample_every=1500",
            "train.checkpoint_every=1500", "seed=0", "device=cpu", f"hydra.run.dir={tmp_path}")
    events = read_events(tmp_path)
    coverage, quality = events.Scalars("metrics/modes_covered"), events.Scalars("metrics/high_quality")
    assert [e.step for e in coverage] == [1500]
    assert coverage[-1].value >= 7, f"WGAN-GP covered only {coverage[-1].value:.0f} of the 8 ring8 modes"
    assert quality[-1].value >= 0.1, f"only {quality[-1].value:.1%} of samples lie within 3 sigma of a mode"


def lambdalr_iteration(monkeypatch: pytest.MonkeyPatch, steps: int) -> None:
    """Make every Iteration set its learning rates as gan-lab did before they were tensors.

    That is torch's LambdaLR on float lrs, created when training starts and stepped on the
    host after every generator step, so step s updates with lr * max(0, 1 - (s - 1) / steps).
    """
    from gan_lab.training.train import Iteration

    original = Iteration.__call__

    def call(self, step):
        if "lambdalr" not in self.__dict__:
            self.lambdalr = [torch.optim.lr_scheduler.LambdaLR(opt, lambda done: max(0.0, 1 - done / steps))
                             for opt in (self.opt_g, self.opt_d)]
        out = original(self, step)
        for schedule in self.lambdalr:
            schedule.step()
        return out

    monkeypatch.setattr(Iteration, "__call__", call)


@pytest.mark.parametrize("optimizer", ["adam", *[pytest.param(o, marks=pytest.mark.slow) for o in ("rmsprop", "sgd")]])
def test_linear_schedule_trains_bitwise_as_float_learning_rates(optimizer: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The learning rates are device tensors written from the step (the code path a CUDA graph
    # captures); on the CPU that must train exactly as torch's LambdaLR on float lrs did.
    common = [f"optimizer={optimizer}", "optimizer.lr=1e-3", "train.steps=6", "train.batch_size=16",
              "train.log_every=3", "train.sample_every=6", "device=cpu", *TINY_MLP]
    run_cli("train", *common, "train.lr_schedule=linear", f"hydra.run.dir={tmp_path / 'tensor'}")
    tensor = load_checkpoint(tmp_path / "tensor")
    assert isinstance(tensor["opt_d"]["param_groups"][0]["lr"], torch.Tensor)  # read with weights_only=True
    with monkeypatch.context() as patch:
        lambdalr_iteration(patch, steps=6)
        run_cli("train", *common, "train.lr_schedule=constant", f"hydra.run.dir={tmp_path / 'lambdalr'}")
    floats = load_checkpoint(tmp_path / "lambdalr")
    assert isinstance(floats["opt_d"]["param_groups"][0]["lr"], float)
    for net in ("G", "critic"):
        for key, value in floats[net].items():
            assert torch.equal(tensor[net][key], value), f"{net}.{key}"


def toy_iteration(loss, conditional: bool = False, **knobs: float) -> Iteration:
    """A seeded ring8 iteration with tiny MLPs and SGD, as gan_lab.training.train builds it; knobs: the critic's schedule."""
    torch.manual_seed(0)
    data = ToyMixture("ring8", sigma=0.02)
    G, critic = build_model("mlp", (2,), z_dim=2, hidden=16, depth=2, conditional=conditional, n_classes=data.n_classes)
    opt_g, opt_d = (torch.optim.SGD(net.parameters(), lr=0.01) for net in (G, critic))
    return Iteration(G, critic, G, critic, loss, critic_schedule(**knobs), data, opt_g, opt_d, 16,
                     NonFiniteGuard("stop", torch.device("cpu")))


@pytest.mark.parametrize("conditional", [False, True])
def test_non_relativistic_losses_draw_what_they_always_drew(conditional: bool) -> None:
    # The loop body before relativistic losses, written out: n_critic critic steps on fresh (x, y, z),
    # then labels (conditional G only) and z for the generator step. Iteration must make exactly these
    # draws in this order: the same weights, bit for bit, and the same RNG state after.
    loss = Wasserstein(lambda_gp=1.0)
    ours = toy_iteration(loss, conditional, n_critic=2)
    for step in (1, 2, 3):
        ours(step)
    ours_rng = torch.get_rng_state()
    ref = toy_iteration(loss, conditional, n_critic=2)
    G, critic, n = ref.G, ref.critic, ref.batch_size
    for step in (1, 2, 3):
        for _ in range(2):
            x, y = ref.data.sample(n)
            z = torch.randn(n, G.z_dim)
            critic_step(G, critic, loss, ref.opt_d, x, z, y if conditional else None)
        y_g = torch.randint(G.n_classes, (n,)) if G.n_classes else None
        generator_step(G, critic, loss, ref.opt_g, torch.randn_like(z), y_g)
    assert torch.equal(ours_rng, torch.get_rng_state())
    for a, b in zip([*ours.G.parameters(), *ours.critic.parameters()], [*G.parameters(), *critic.parameters()]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("loss, n_critic, real_batches", [(Wasserstein(), 2, 2), (RpGAN(), 2, 3), (RaGAN(), 1, 2)])
def test_relativistic_generator_step_scores_a_fresh_real_batch(loss, n_critic: int, real_batches: int) -> None:
    iteration = toy_iteration(loss, n_critic=n_critic)
    drawn = []
    sample = iteration.data.sample
    iteration.data.sample = lambda n: drawn.append(n) or sample(n)
    iteration(1)
    assert len(drawn) == real_batches  # n_critic critic batches, plus one for a relativistic generator step


def test_lazy_regularisation_every_k_critic_steps_and_its_value_carried_to_log_steps() -> None:
    iteration = toy_iteration(Wasserstein(lambda_r1=1.0), n_critic=2, reg_every=3)
    # global critic steps 0, 1 | 2, 3 | 4, 5 of generator steps 1, 2, 3: every third is regularised
    assert [iteration.phase(step) for step in (1, 2, 3)] == [(True, False), (False, True), (False, False)]
    # (read each step's scalars before the next, as the loop does: like a CUDA graph's outputs, the
    # reported penalty is one tensor written in place)
    first = iteration(1)[0]["loss/r1_penalty"].clone()  # its last critic step skipped it: the first step's value
    second = iteration(2)[0]["loss/r1_penalty"].clone()
    third = iteration(3)[0]["loss/r1_penalty"].clone()
    assert not torch.equal(first, second)  # step 2's own evaluation
    assert torch.equal(third, second)  # step 3 skips the penalties: step 2's value is carried


def test_train_py_is_the_loop_and_the_steps() -> None:
    # settings, observers and resume state have their own modules; the loop and the steps stay
    import gan_lab.training.train as train_module
    from gan_lab.training import observers, resume, settings

    assert len(Path(train_module.__file__).read_text().splitlines()) <= 330
    assert callable(observers.observing) and callable(resume.restore) and settings.TrainSettings
    defined = {name for name, obj in vars(train_module).items() if getattr(obj, "__module__", "") == train_module.__name__}
    assert defined == {"autocast", "critic_step", "critic_objective", "critic_forward", "generator_step", "_grad_norm",
                       "Iteration", "train"}
