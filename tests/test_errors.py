"""Bad input: one clear paragraph naming what was wrong, a non-zero exit code, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY, TINY_DCGAN, TINY_MLP, run_cli, user_error

# (overrides, expected fragment of the message); each exits with code 2
USER_ERRORS = [
    (["loss.lambda_gp=-1"], "loss.lambda_gp=-1"),
    (["loss.n_critic=0"], "loss.n_critic=0"),
    (["loss=wgan_clip", "loss.clip=-0.01"], "loss.clip=-0.01"),
    (["loss.lambda_r1=-2"], "loss.lambda_r1=-2"),
    (["loss.lambda_r2=-2"], "loss.lambda_r2=-2"),
    (["loss.lambda_dragan=-1"], "loss.lambda_dragan=-1"),
    (["loss.reg_every=0"], "loss.reg_every=0"),
    (["loss=r3gan", "model.critic_norm=batch"], "gradient penalty on a critic with batch norm"),
    (["loss=hinge", "loss.lambda_dragan=1", "model.critic_norm=batch"], "gradient penalty on a critic with batch norm"),
    (["train.steps=0"], "train.steps=0"),
    (["train.batch_size=-4"], "train.batch_size=-4"),
    (["train.log_every=0"], "train.log_every=0"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 is out of range"),
    (["model.hidden=0"], "model.hidden=0"),
    (["model.critic_norm=group"], "model.critic_norm='group'"),
    (["model.critic_norm=batch"], "gradient penalty on a critic with batch norm"),
    (["model=dcgan"], "model=dcgan needs square 28x28 or 32x32 images"),
    (["data.sigma=0"], "data.sigma=0"),
    (["data.radius=-1"], "data.radius=-1 is out of range"),
    (["data.radius=abc"], "data.radius='abc' is out of range"),
    (["device=tpu"], "device='tpu'"),
    (["resume=/nonexistent/run"], "No checkpoint at /nonexistent/run"),
    (["optimizer.lr=0"], "optimizer.lr=0 is out of range"),
    (["optimizer_critic.lr=-1"], "optimizer_critic.lr=-1 is out of range"),
    (["train.keep_checkpoints=-1"], "train.keep_checkpoints=-1"),
    (["train.sample_every=0"], "train.sample_every=0"),
    (["train.checkpoint_every=0"], "train.checkpoint_every=0"),
    (["train.steps=1.5"], "train.steps=1.5"),
    (["train.nonfinite=maybe"], "train.nonfinite='maybe'"),
    (["model.depth=0"], "model.depth=0"),
    (["model.z_dim=0"], "model.z_dim=0"),
    (["loss.n_critic=-3"], "loss.n_critic=-3"),
    (["optimizer=sgd", "optimizer.momentum=-0.5"], "Invalid momentum"),
    (["lr_scaling=cubic"], "lr_scaling='cubic' is not known"),
    (["optimizer=adam_ttur", "optimizer.per_network.critic.lr=-1"], "optimizer.per_network.critic.lr=-1 is out of range"),
]


@pytest.mark.parametrize("overrides, fragment", USER_ERRORS, ids=[" ".join(o) for o, _ in USER_ERRORS])
def test_user_errors_exit_2_with_a_message(overrides: list[str], fragment: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    err = user_error(capsys, "train", *TINY, *overrides, f"hydra.run.dir={tmp_path}")
    assert "gan-lab: error" in err and " ".join(fragment.split()) in err
    assert not (tmp_path / "checkpoints").exists()  # refused before training wrote anything


def test_batch_larger_than_the_data_set(tmp_path: Path, tiny_mnist_root: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", "train.batch_size=65", *TINY[2:],
                f"hydra.run.dir={tmp_path}")
    assert exit_info.value.code == 2
    assert "train.batch_size=65 is larger than the data set (64 samples)" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("download", ["false", "true"])
def test_missing_data_names_the_directory(download: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.utils as tv_utils

    def no_internet(*args, **kwargs):
        raise OSError("Tried mirror A, got:\nName or service not known\nTried mirror B")  # torchvision's shape

    monkeypatch.setattr(tv_utils, "download_url", no_internet)  # a failed download, with or without internet
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", no_internet)
    root = tmp_path / "empty"
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", "data=mnist", f"data.root={root}", f"data.download={download}", *TINY,
                f"hydra.run.dir={tmp_path / 'run'}")
    assert exit_info.value.code == 2
    printed = capsys.readouterr().err
    message = next(line for line in printed.splitlines() if line.startswith("gan-lab: error:"))
    assert message.endswith("GAN_LAB_DATA_ROOT)."), "one paragraph, one line"
    assert ("Tried mirror B" in message) == (download == "true")
    err = " ".join(printed.split())
    assert f"Could not load mnist from {root}" in err and "data.root=" in err
    assert ("download failed" in err) == (download == "true")


class _BrokenTorchvision:
    """An import hook standing in for a torchvision built for another torch: its C extension does not load."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")  # what a mismatched pair raises
        return None


def test_a_torchvision_that_does_not_load_is_one_paragraph_with_the_fix(
        tmp_path: Path, tiny_mnist_root: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        monkeypatch.delitem(sys.modules, name)  # put back after the test: the real venv is untouched
    monkeypatch.setattr(sys, "meta_path", [_BrokenTorchvision(), *sys.meta_path])
    err = user_error(capsys, "train", "data=mnist", f"data.root={tiny_mnist_root}", *TINY, *TINY_DCGAN,
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert "operator torchvision::nms does not exist" in err and f"torch {torch.__version__}" in err
    assert "-m pip install --force-reinstall --no-deps" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("torch_version, torchvision_version, fix", [
    ("2.14.1+cpu", "0.29.1+cu130", '"torchvision==0.29.*" --index-url https://download.pytorch.org/whl/cpu'),
    ("2.6.0+cu124", "0.29.1+cu124", '"torchvision==0.21.*" --index-url https://download.pytorch.org/whl/cu124'),
    ("2.14.1", "0.21.0", '--no-deps "torchvision==0.29.*"'),  # PyPI's own builds: no index
])
def test_a_torchvision_built_for_another_torch_is_named_before_it_is_imported(
        torch_version: str, torchvision_version: str, fix: str, tmp_path: Path, tiny_mnist_root: Path,
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    real_version = importlib.metadata.version
    monkeypatch.setattr(torch, "__version__", torch_version)
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: torchvision_version if name == "torchvision" else real_version(name))
    err = user_error(capsys, "train", "data=mnist", f"data.root={tiny_mnist_root}", *TINY, *TINY_DCGAN,
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert f"torch {torch_version}" in err and f"torchvision {torchvision_version}" in err
    assert err.rstrip().endswith(fix)  # the command last, whole, ready to copy


def make_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_cli("train", *TINY, *TINY_MLP, f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.mark.slow
def test_corrupt_checkpoints_are_refused_and_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = make_run(tmp_path)
    last = run_dir / "checkpoints" / "last.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(last.read_bytes()[:1000])
    random_file = tmp_path / "random.pt"
    random_file.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    future = tmp_path / "future.pt"
    torch.save({**torch.load(last, weights_only=True), "version": 99}, future)
    for path, fragment in [(truncated, "truncated or not a PyTorch file"), (random_file, "truncated or not a PyTorch file"),
                           (foreign, "not a gan-lab checkpoint"), (future, "format version 99")]:
        before = path.read_bytes()
        with pytest.raises(SystemExit) as exit_info:
            run_cli("train", *TINY, *TINY_MLP, "train.steps=8", f"resume={path}", f"hydra.run.dir={tmp_path / 'r'}")
        assert exit_info.value.code == 2
        assert fragment in " ".join(capsys.readouterr().err.split())
        assert path.read_bytes() == before


class Evil:
    """Unpickling this touches a marker file: the code a malicious checkpoint would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_that_runs_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    evil = tmp_path / "evil.pt"
    marker = tmp_path / "PWNED"
    torch.save({"format": "gan-lab-checkpoint", "version": 1, "payload": Evil(marker)}, evil)
    with pytest.raises(SystemExit):
        run_cli("train", *TINY, *TINY_MLP, f"resume={evil}", f"hydra.run.dir={tmp_path / 'r'}")
    assert not marker.exists()
    assert "Refused to load" in capsys.readouterr().err


def test_resume_past_the_end_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = make_run(tmp_path)
    with pytest.raises(SystemExit):
        run_cli("train", *TINY, *TINY_MLP, f"resume={run_dir}", f"hydra.run.dir={tmp_path / 'r'}")
    assert "raise train.steps" in capsys.readouterr().err


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gan_lab", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_unknown_group_option_lists_the_choices_without_traceback(tmp_path: Path) -> None:
    out = cli("train", "loss=wgan", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    assert "no option loss=wgan" in " ".join(out.stderr.split()) and "wgan_gp" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("overrides, hint", [
    (["loss.lamda_gp=1"], "no key loss.lamda_gp; did you mean loss.lambda_gp?"),
    (["+loss.lamda_gp=1"], "no key loss.lamda_gp; did you mean loss.lambda_gp?"),  # Hydra's own advice, followed
    (["train.step=3"], "no key train.step; did you mean train.steps?"),
    (["lss=hinge"], "no key lss; did you mean loss?"),
    (["loss=wgangp"], "no option loss=wgangp; did you mean loss=wgan_gp?"),
    (["data=mnist", "model.widht=8"], "no key model.widht; did you mean model.width?"),  # data=mnist chose dcgan
    (["-m", "loss=hinge,wgangp", "loss.lambda_gp=0.1,1"], "no option loss=wgangp; did you mean loss=wgan_gp?"),
    (["-m", "loss=hinge,wgan_gp", "loss.lamda_gp=0.1,1"], "no key loss.lamda_gp; did you mean loss.lambda_gp?"),
    (["+optimizer_critic.weight_decy=1e-5"], "no key optimizer_critic.weight_decy; did you mean "
                                             "optimizer_critic.weight_decay?"),
])
def test_a_typo_names_the_key_that_was_meant(overrides: list[str], hint: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    err = user_error(capsys, "train", *overrides, *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path / 'run'}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert hint in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()  # refused before any run began


def test_overrides_that_exist_pass_the_typo_check() -> None:
    from gan_lab.app.overrides import check_overrides

    check_overrides(["-m", "loss=hinge,wgan_gp", "loss.lambda_gp=0.1,1", "+optimizer_critic.weight_decay=1e-5",
                     "data=mnist", "model.width=8", "hydra.run.dir=x", "hydra/launcher=joblib",
                     "+experiment=grid25_sharp", "--cfg", "job", "optimizer_generator.lr=1e-4", "~seed"])


@pytest.mark.parametrize("args, hint", [
    (["eval", "chekpoint=run"], "no key chekpoint; did you mean checkpoint?"),
    (["sample", "--chekpoint", "run"], "no key chekpoint; did you mean checkpoint?"),
    (["report", "sortt=-step"], "no key sortt; did you mean sort?"),
    (["classifier", "train", "epoch=1"], "no key epoch; did you mean epochs?"),
])
def test_a_typo_in_a_subcommand_names_the_key_that_was_meant(args: list[str], hint: str,
                                                            capsys: pytest.CaptureFixture) -> None:
    assert hint in user_error(capsys, *args)


def test_a_misspelt_command_gets_the_one_that_was_meant(capsys: pytest.CaptureFixture) -> None:
    assert "Unknown command 'trian'; did you mean train? gan-lab knows: train, sample" in user_error(capsys, "trian")
    assert "did you mean" not in user_error(capsys, "fly")  # nothing close: the list alone


@pytest.mark.slow
def test_user_error_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    out = cli("train", "loss.n_critic=0", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2 and "loss.n_critic=0" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_unknown_command_and_bare_command() -> None:
    assert cli("trian").returncode == 2 and "Unknown command 'trian'" in cli("trian").stderr
    bare = cli()
    assert bare.returncode == 2 and "gan-lab train" in bare.stdout


# A researcher's own builders with a bug in their bodies, named by `model._target_=` / `loss._target_=`.
def buggy_model(shape: tuple[int, ...], n_classes: int = 0, **settings: object) -> None:
    per_layer = settings["hidden"] // (settings["depth"] - 2)  # depth=2: ZeroDivisionError, the researcher's bug
    raise AssertionError(f"unreachable {per_layer}")


class BuggyLoss:
    def __init__(self, **settings: object):
        self.n_critic = len(settings["n_critic"])  # TypeError: an int has no len(), the researcher's bug


@pytest.mark.parametrize("overrides, error, line", [
    (["model._target_=test_errors.buggy_model"], "ZeroDivisionError", 'settings["hidden"] // (settings["depth"] - 2)'),
    (["loss._target_=test_errors.BuggyLoss"], "TypeError", 'len(settings["n_critic"])'),
])
def test_a_bug_inside_a_builder_keeps_its_traceback(overrides: list[str], error: str, line: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", *TINY, *TINY_MLP, *overrides, f"hydra.run.dir={tmp_path}")
    err = capsys.readouterr().err
    assert exit_info.value.code == 1  # a bug, not a user error
    assert "gan-lab: error" not in err and "bad override" not in err
    assert "Traceback" in err and line in err  # the line that failed
    assert err.rstrip().splitlines()[-2].startswith(error) or f"{error}:" in err


@pytest.mark.parametrize("overrides, fragment", [
    (["+model.hiden=64"], "no key model.hiden; did you mean model.hidden?"),
    (["+loss.gamma=2"], "no key loss.gamma: gan_lab.losses.Wasserstein takes "),
    (["model._target_=gan_lab.models.transformer"], "Error locating target 'gan_lab.models.transformer'"),
    (["+optimizer.betaz=[0.5,0.9]"], "no key optimizer.betaz; did you mean optimizer.betas?"),
])
def test_a_key_the_builder_does_not_take_is_a_one_paragraph_error(
        overrides: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", *TINY, *TINY_MLP, *overrides, f"hydra.run.dir={tmp_path}")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    message = next(line for line in err.splitlines() if line.startswith("gan-lab: error:"))
    assert fragment in message and "Traceback" not in err
