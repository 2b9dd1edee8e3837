"""A file handed to gan-lab is data: a crafted or foreign checkpoint is refused in one paragraph and runs nothing.

Every case goes through `sample`, `eval` and `resume=`; each must exit 2 with one paragraph naming the
file, print no traceback, and leave every file as it was (the victim a crafted config aims at above all).
"""

from __future__ import annotations

import io
import os
import signal
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

from conftest import TINY, TINY_MLP, make_tiny_mnist, run_cli

COMMANDS = ["sample", "eval", "resume"]


@pytest.fixture(scope="module")
def good_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run_dir = tmp_path_factory.mktemp("good")
    run_cli("train", *TINY, *TINY_MLP, f"hydra.run.dir={run_dir}")
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


@pytest.fixture(autouse=True)
def never_hang() -> Iterator[None]:
    # a FIFO opened for reading blocks until a writer comes: fail the test instead of hanging the suite
    def hung(*_: Any) -> None:
        raise TimeoutError("gan-lab blocked on a file")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def run_command(command: str, path: Path, tmp_path: Path) -> None:
    """The command on the checkpoint `path`; resume runs the real `gan-lab train resume=<path>`."""
    if command == "resume":
        # resume_force: past the comparison of configs, so only the file's own checks can refuse it
        run_cli("train", *TINY, *TINY_MLP, "train.steps=8", f"resume={path}", "resume_force=true",
                f"hydra.run.dir={tmp_path / 'resumed'}")
    elif command == "sample":
        run_cli("sample", f"checkpoint={path}", "n=10", f"out={tmp_path / 'out'}")
    else:
        run_cli("eval", f"checkpoint={path}", f"out={tmp_path / 'eval.json'}")


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file under folder and its bytes (None for what is not a regular file)."""
    return {str(p): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))
            if not p.name.startswith("resumed") and "resumed" not in p.parts}


def assert_refused(command: str, path: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                   fragment: str) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_command(command, path, tmp_path)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Traceback" not in err
    message = next(line for line in err.splitlines() if line.startswith("gan-lab: error:"))
    assert str(path) in message and fragment in message, message  # one line: one paragraph, naming the file
    assert snapshot(tmp_path) == before  # nothing touched: not the victim, not the file, nothing new
    assert not (tmp_path / "out").exists() and not (tmp_path / "eval.json").exists()
    assert not (tmp_path / "resumed" / "checkpoints").exists()


# A crafted config: (what is changed, the key the message must name). Each `victim` is a file that
# Hydra's instantiate of the stored config would truncate or replace on today's gan-lab.
def opens(victim: Path) -> dict[str, Any]:
    return {"_target_": "builtins.open", "_args_": [str(victim), "w"]}


CRAFTED: dict[str, tuple[Callable[[dict, Path], None], str]] = {
    "nested target in model": (lambda c, v: c["model"].update(hidden=opens(v)), "model.hidden"),
    "nested target in data": (lambda c, v: c["data"].update(sigma=opens(v)), "data.sigma"),
    "model target outside gan_lab": (lambda c, v: c.update(model=opens(v)), "model._target_"),
    "data target outside gan_lab": (lambda c, v: c.update(data={"_target_": "pathlib.Path.write_text",
                                                                 "self": str(v), "data": ""}), "data._target_"),
    "_args_ key": (lambda c, v: c["model"].update(_args_=[[2], str(v)]), "model._args_"),
    "_partial_ key": (lambda c, v: c["model"].update(_partial_=True), "model._partial_"),
    "_convert_ key": (lambda c, v: c["data"].update(_convert_="all"), "data._convert_"),
    "_recursive_ key": (lambda c, v: c["model"].update(_recursive_=False), "model._recursive_"),
    "unknown key": (lambda c, v: c["model"].update(callback="os.system"), "model.callback"),
    "build-time key": (lambda c, v: c["data"].update(device="cuda:7"), "data.device"),
    "wrong type: str for float": (lambda c, v: c["data"].update(sigma="0.01"), "data.sigma"),
    "wrong type: str for bool": (lambda c, v: c["model"].update(conditional="yes"), "model.conditional"),
    "wrong type: bool for int": (lambda c, v: c["model"].update(hidden=True), "model.hidden"),
    "wrong type: list for str": (lambda c, v: c["data"].update(name=["ring8"]), "data.name"),
    "recommended holds a node": (lambda c, v: c["data"]["recommended"].update(steps=opens(v)), "data.recommended"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_config_in_a_checkpoint_is_refused_and_runs_nothing(
        case: str, command: str, good_state: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("a researcher's notes")
    craft, key = CRAFTED[case]
    state = {**good_state, "config": {**good_state["config"], "model": dict(good_state["config"]["model"]),
                                      "data": {**good_state["config"]["data"],
                                               "recommended": dict(good_state["config"]["data"]["recommended"])}}}
    craft(state["config"], victim)
    crafted = tmp_path / "crafted.pt"
    torch.save(state, crafted)
    assert_refused(command, crafted, tmp_path, capsys, key)
    assert victim.read_text() == "a researcher's notes"


def zip_of_something_else(path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes/readme.txt", "not a checkpoint")
    path.write_bytes(buffer.getvalue())


def tensor_file(path: Path) -> None:
    torch.save(torch.zeros(3), path)  # a real torch.save file, but no dict


def gutted_checkpoint(path: Path, state: dict[str, Any]) -> None:
    torch.save({k: v for k, v in state.items() if k != "G"}, path)


def wrong_weights(path: Path, state: dict[str, Any]) -> None:
    torch.save({**state, "G": {"net.0.weight": torch.zeros(1)}}, path)


def ema_not_a_mapping(path: Path, state: dict[str, Any]) -> None:
    torch.save({**state, "G_ema": torch.zeros(3)}, path)


def ema_weights_that_do_not_fit(path: Path, state: dict[str, Any]) -> None:
    torch.save({**state, "G_ema": {"net.0.weight": torch.zeros(1)}}, path)


def random_bytes(path: Path) -> None:
    noise = torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    path.write_bytes(noise.numpy().tobytes())


NOT_CHECKPOINTS: dict[str, tuple[Callable[..., None], str]] = {
    "text": (lambda p: p.write_text("hello\n"), "not a PyTorch file"),
    "random bytes": (random_bytes, "not a PyTorch file"),
    "zip of something else": (zip_of_something_else, "not a PyTorch file"),
    "empty file": (lambda p: p.write_bytes(b""), "not a PyTorch file"),
    "a tensor, not a dict": (tensor_file, "not a gan-lab checkpoint"),
    "directory": (lambda p: p.mkdir(), "No checkpoint at"),
    "fifo": (lambda p: os.mkfifo(p), "not a regular file"),
    "checkpoint without weights": (gutted_checkpoint, "entry 'G' is missing"),
    "weights that do not fit": (wrong_weights, "do not fit"),
    "G_ema not a mapping": (ema_not_a_mapping, "entry 'G_ema' is Tensor"),
    "G_ema weights that do not fit": (ema_weights_that_do_not_fit, "do not fit"),
}
TAKES_STATE = (gutted_checkpoint, wrong_weights, ema_not_a_mapping, ema_weights_that_do_not_fit)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(NOT_CHECKPOINTS))
def test_a_file_that_is_not_a_checkpoint_is_refused(case: str, command: str, good_state: dict[str, Any],
                                                    tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make, fragment = NOT_CHECKPOINTS[case]
    if case in ("weights that do not fit", "G_ema weights that do not fit") and command == "resume":
        pytest.skip("resume loads the weights into the models its own config built (train.restore), not these")
    path = tmp_path / "x.pt"
    make(path, good_state) if make in TAKES_STATE else make(path)
    assert_refused(command, path, tmp_path, capsys, fragment)


class Evil:
    """Unpickling this touches a marker file: the code a crafted pickle would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("spelling", ["separate", "equals", "abbreviated"])
def test_hydras_pickle_rerun_is_refused(spelling: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pickle

    marker = tmp_path / "PWNED"
    evil = tmp_path / "config.pickle"
    evil.write_bytes(pickle.dumps(Evil(marker)))
    args = {"separate": ["--experimental-rerun", str(evil)], "equals": [f"--experimental-rerun={evil}"],
            "abbreviated": ["--exp", str(evil)]}[spelling]  # argparse takes a unique prefix
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", *args)
    assert exit_info.value.code == 2 and not marker.exists()
    assert "--experimental-rerun" in capsys.readouterr().err


def test_a_checkpoint_cannot_make_eval_download_into_a_folder_it_names(good_state: dict[str, Any], tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # the stored data node asks for MNIST with download=true into a folder of the file's choosing
    monkeypatch.delenv("GAN_LAB_DATA_ROOT", raising=False)  # no other place to read MNIST from on this machine
    target = tmp_path / "written-by-the-file"
    state = {**good_state, "config": {**good_state["config"], "data": {
        "_target_": "gan_lab.data.ImageData", "name": "mnist", "root": str(target), "download": True, "train": True}}}
    path = tmp_path / "downloads.pt"
    torch.save(state, path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("eval", f"checkpoint={path}", f"out={tmp_path / 'eval.json'}")
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2 and "not on this machine. Pass data.root=" in err
    assert not target.exists()  # torchvision's download would have created it
    # with the data where this machine keeps it, the file still cannot fetch into its folder
    with pytest.raises(SystemExit) as exit_info:
        run_cli("eval", f"checkpoint={path}", f"data.root={tmp_path / 'empty'}", f"out={tmp_path / 'eval.json'}")
    assert exit_info.value.code == 2 and "Could not load mnist" in capsys.readouterr().err
    assert not target.exists() and not (tmp_path / "empty").exists()


def test_a_data_node_that_does_not_fit_the_generator_is_refused(good_state: dict[str, Any], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    # a 2-D generator's file that names MNIST (readable here): measuring its points as images would crash
    root = make_tiny_mnist(tmp_path / "data")
    state = {**good_state, "config": {**good_state["config"], "data": {
        "_target_": "gan_lab.data.ImageData", "name": "mnist", "root": str(root), "download": False, "train": True}}}
    path = tmp_path / "mismatch.pt"
    torch.save(state, path)
    for command in (["eval", f"out={tmp_path / 'eval.json'}"], ["sample", "n=4", f"out={tmp_path / 's'}"]):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(command[0], f"checkpoint={path}", *command[1:])
        err = " ".join(capsys.readouterr().err.split())
        assert exit_info.value.code == 2 and "samples of shape (1, 28, 28), but its generator makes samples of shape (2,)" in err, err
        assert "Traceback" not in err
