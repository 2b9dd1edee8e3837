"""The built-in classifier: training on a tiny synthetic set, caching, and the class metrics.

Training the real MNIST classifier takes minutes; scripts/classifier_accuracy.py measures that.
Here a 10-class set of bright squares trains in about a second.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from conftest import make_tiny_mnist, run_cli
from gan_lab.evaluation import classifier as classifier_module
from gan_lab.evaluation.classifier import (Classifier, class_metrics, classifier_path, default_cache_dir, evaluate_accuracy,
                                load_or_train_classifier, train_classifier)
from gan_lab.errors import GanLabError


def squares(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (10 n, 1, 28, 28) images: class k is a bright 4x4 square at its own place, on noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    images = torch.randint(0, 80, (len(labels), 1, 28, 28), generator=generator)
    for k in range(10):
        top, left = 4 + 12 * (k // 5), 2 + 5 * (k % 5)  # two rows of five, 1 pixel apart
        images[labels == k, :, top:top + 4, left:left + 4] = 255
    return images.to(torch.uint8), labels


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1  # what a generator outputs


@pytest.fixture(scope="module")
def trained() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """A classifier trained on the squares, with held-out squares (uint8) and their labels."""
    images, labels = squares(40, seed=0)
    model = train_classifier(images, labels, epochs=2, batch_size=32, seed=0, progress=False)
    test_images, test_labels = squares(20, seed=1)
    return model, test_images, test_labels


# ---- training --------------------------------------------------------------------------------

def test_learns_separable_classes(trained: tuple[Classifier, torch.Tensor, torch.Tensor]) -> None:
    model, test_images, test_labels = trained
    assert not model.training  # handed back ready for evaluation
    assert evaluate_accuracy(model, test_images, test_labels) > 0.9
    x = to_unit_range(test_images[:5])
    assert model(x).shape == (5, 10)
    assert model.features(x).shape == (5, 128)


def test_same_seed_same_weights_and_global_rng_untouched() -> None:
    images, labels = squares(10, seed=0)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    runs = [train_classifier(images, labels, epochs=1, batch_size=16, seed=seed, progress=False)
            for seed in (7, 7, 8)]
    assert torch.equal(torch.random.get_rng_state(), before)
    same, other = runs[0].state_dict(), runs[1].state_dict()
    assert all(torch.equal(same[name], other[name]) for name in same)
    assert not torch.equal(same["head.1.weight"], runs[2].state_dict()["head.1.weight"])


def test_progress_lines_count_every_twentieth_step_to_the_last(capsys: pytest.CaptureFixture[str]) -> None:
    # piped (pytest's capture is no terminal): a plain line every 5% of the 2 x 20 one-image steps
    images, labels = squares(2, seed=0)
    train_classifier(images, labels, epochs=2, batch_size=1, seed=0, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "training the classifier: 40 steps"
    steps = [re.fullmatch(r"classifier step (\d+)/40  .*it/s  ETA .*  loss (\d+\.\d{4})", line) for line in lines[1:]]
    assert all(steps), lines
    assert [int(m[1]) for m in steps] == list(range(2, 41, 2))  # every 2nd step, the final count last
    assert all(math.isfinite(float(m[2])) for m in steps)


def test_progress_bar_on_a_terminal_counts_to_the_last_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from gan_lab.runs import tracker

    screen = io.StringIO()
    monkeypatch.setattr(tracker, "console", Console(file=screen, force_terminal=True, width=120))
    images, labels = squares(2, seed=0)
    train_classifier(images, labels, epochs=1, batch_size=4, seed=0, progress=True)  # 5 steps
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # the bar's frames, cursor codes removed
    assert "training classifier" in shown and "5/5" in shown  # rich's M/N column at the last step
    assert "6/5" not in shown and "classifier step" not in shown  # the plain lines go to the log file only


# ---- caching ---------------------------------------------------------------------------------

def test_trains_once_then_loads_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    root, cache = make_tiny_mnist(tmp_path / "data", "MNIST", n=64), tmp_path / "cache"
    first = load_or_train_classifier("mnist", str(root), cache, epochs=1, seed=3, progress=False)
    assert "test accuracy" in capsys.readouterr().out

    path = classifier_path(cache, "mnist")
    assert path == cache / "mnist_classifier.pt"
    assert sorted(cache.iterdir()) == [path]  # the temp file was renamed, not left behind
    saved = torch.load(path, weights_only=True)
    assert {k: saved[k] for k in ("format", "version", "data", "seed", "epochs")} == {
        "format": "gan-lab-classifier", "version": 1, "data": "mnist", "seed": 3, "epochs": 1}
    assert 0.0 <= saved["test_accuracy"] <= 1.0

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached classifier should have been loaded, not retrained")

    monkeypatch.setattr(classifier_module, "train_classifier", no_training)
    second = load_or_train_classifier("mnist", str(root), cache)
    assert not second.training
    assert all(torch.equal(first.state_dict()[k], v) for k, v in second.state_dict().items())


@pytest.mark.parametrize("contents", ["garbage", "foreign", "old_version", "other_data", "bad_weights"])
def test_unusable_cache_file_says_delete_it(tmp_path: Path, contents: str) -> None:
    path = classifier_path(tmp_path, "mnist")
    good = {"format": "gan-lab-classifier", "version": 1, "data": "mnist",
            "state_dict": Classifier().state_dict(), "test_accuracy": 0.99, "seed": 0, "epochs": 1}
    if contents == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    else:
        payload = {"foreign": {"weights": torch.zeros(3)},
                   "old_version": {**good, "version": 0},
                   "other_data": {**good, "data": "fashion_mnist"},
                   "bad_weights": {**good, "state_dict": {"head.1.weight": torch.zeros(3)}}}[contents]
        torch.save(payload, path)
    with pytest.raises(GanLabError, match="Delete the file"):
        load_or_train_classifier("mnist", "unused", tmp_path)


def test_unknown_data_set_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(GanLabError, match="mnist and fashion_mnist"):
        load_or_train_classifier("cifar10", "unused", tmp_path)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GAN_LAB_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("GAN_LAB_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "gan-lab"


# ---- class metrics ---------------------------------------------------------------------------

@pytest.mark.slow
def test_generated_equal_to_real_scores_perfect(trained: tuple[Classifier, torch.Tensor, torch.Tensor]) -> None:
    model, test_images, _ = trained
    real = to_unit_range(test_images)
    metrics = class_metrics(model, real.clone(), real)
    assert metrics["classes_covered"] == 10
    assert_close(metrics["class_kl"], 0.0, atol=1e-12, rtol=0)
    assert_close(metrics["frechet_distance"], 0.0, atol=1e-6, rtol=0)
    assert 0.9 < metrics["confidence"] <= 1.0
    assert (metrics["precision"], metrics["recall"], metrics["coverage"]) == (1.0, 1.0, 1.0)  # k-NN metrics
    # batching changes nothing
    assert_close(class_metrics(model, real.clone(), real, batch_size=7), metrics, atol=1e-6, rtol=1e-6)


def test_collapse_to_one_class(trained: tuple[Classifier, torch.Tensor, torch.Tensor]) -> None:
    model, test_images, test_labels = trained
    real = to_unit_range(test_images)
    collapsed = class_metrics(model, real[test_labels == 3], real)
    assert collapsed["classes_covered"] == 1
    # KL(one-hot at c || q) = -log q_c, with q the real images' predicted class histogram
    with torch.no_grad():
        q = torch.bincount(model(real).argmax(dim=1), minlength=10).double() / len(real)
    predicted = int(model(real[test_labels == 3][:1]).argmax())
    assert_close(collapsed["class_kl"], -math.log(q[predicted].item()), atol=1e-9, rtol=0)
    # the collapsed set is far from the real one, much farther than two halves of real data are
    halves = class_metrics(model, real[0::2], real[1::2])
    assert collapsed["frechet_distance"] > 10 * halves["frechet_distance"]
    # real images of one digit: all inside the real manifold, but covering little of it
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.5 and collapsed["coverage"] < 0.5
    assert halves["recall"] > 0.8 and halves["coverage"] > 0.8
    assert halves["classes_covered"] == 10


def test_classifier_command_trains_reports_reuses_and_retrains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, cache = make_tiny_mnist(tmp_path / "data", "MNIST", n=64), tmp_path / "cache"
    common = ["classifier", "train", "data=mnist", f"data.root={root}", "data.download=false", f"cache_dir={cache}",
              "epochs=1", "device=cpu"]
    run_cli(*common, "seed=3")
    assert "test accuracy" in capsys.readouterr().out
    path = classifier_path(cache, "mnist")
    first = torch.load(path, weights_only=True)
    assert first["seed"] == 3 and first["epochs"] == 1
    # a second call keeps the cached one and says so
    run_cli(*common, "seed=4")
    assert "already cached" in " ".join(capsys.readouterr().err.split())
    assert torch.load(path, weights_only=True)["seed"] == 3
    # force=true trains a new one in its place
    run_cli(*common, "seed=4", "force=true")
    second = torch.load(path, weights_only=True)
    assert second["seed"] == 4 and sorted(cache.iterdir()) == [path]
    assert any(not torch.equal(v, second["state_dict"][k]) for k, v in first["state_dict"].items())


@pytest.mark.parametrize("args, message", [
    ([], "gan-lab classifier takes one action: train"),
    (["train", "epochs=0"], "epochs=0 must be a whole number >= 1"),
    (["train", "data=cifar10"], "no built-in classifier for data set 'cifar10'"),
    (["train", "colour=red"], "unknown argument 'colour=red'"),
    (["train", "data.root=/nonexistent/folder", "data.download=false"], "Could not load mnist from /nonexistent/folder"),
])
def test_classifier_command_bad_input(args: list[str], message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("classifier", *args, f"cache_dir={tmp_path}") if args else run_cli("classifier")
    assert exit_info.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not list(tmp_path.iterdir())  # nothing half-written into the cache


@pytest.mark.slow
def test_a_run_interrupted_while_its_classifier_trains_keeps_its_progress_in_the_log(tmp_path: Path) -> None:
    # `gan-lab train data=mnist` on a terminal trains the metrics' classifier at its first evaluation (here
    # step 2 of 4), behind a live bar; a Ctrl-C there left train.log with one newline and nothing else. The
    # evaluation is part of its step: the Ctrl-C checkpoints once the classifier is trained, then stops
    import os
    import pty
    import re
    import select
    import signal
    import subprocess
    import sys
    import time

    root = make_tiny_mnist(tmp_path / "data", n=6000)  # 5 epochs of 47 batches: seconds, time to interrupt
    run_dir = tmp_path / "run"
    primary, secondary = pty.openpty()  # a terminal: the live bar, as a user sees it
    proc = subprocess.Popen([sys.executable, "-m", "gan_lab", "train", "data=mnist", f"data.root={root}",
                             "threads=1", "device=cpu", "train.steps=4", "train.eval_every=2", f"hydra.run.dir={run_dir}"],
                            stdin=secondary, stdout=secondary, stderr=secondary, cwd=tmp_path,
                            env={**os.environ, "GAN_LAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"})
    os.close(secondary)
    shown, deadline, interrupted = "", time.monotonic() + 120, False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1)
            try:
                chunk = os.read(primary, 4096).decode(errors="replace") if ready else ""
            except OSError:  # the terminal closed: the process ended
                break
            shown += chunk
            log = run_dir / "train.log"  # the classifier trains under the run's own bar: read the log
            steps = [int(n) for n in re.findall(r"classifier step (\d+)/235", log.read_text() if log.exists() else "")]
            if not interrupted and steps and max(steps) >= 24:  # two of the log's 5% lines
                proc.send_signal(signal.SIGINT)
                interrupted = True
        proc.wait(timeout=150)
    finally:
        proc.kill()
        os.close(primary)
    assert interrupted and proc.returncode == 130, shown[-2000:]
    log = (run_dir / "train.log").read_text()
    assert "training the classifier: 235 steps" in log and "classifier step 22/235" in log, log
    assert log.rstrip().splitlines()[-1].startswith("gan-lab: stopped by SIGINT at step 3"), log  # checkpointed


def test_a_run_trains_the_classifier_at_its_first_evaluation_not_before_its_first_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # train.eval_every=0: nothing is evaluated until the end, so the classifier's minutes come after the steps
    root, run = make_tiny_mnist(tmp_path / "data", "MNIST", n=64), tmp_path / "run"
    monkeypatch.setenv("GAN_LAB_CACHE", str(tmp_path / "cache"))
    real_training = classifier_module.train_classifier
    seen = []

    def training(*args: object, **kwargs: object) -> Classifier:
        seen.append(sorted(p.name for p in (run / "checkpoints").glob("*")) if (run / "checkpoints").exists() else [])
        return real_training(*args, **{**kwargs, "epochs": 1})

    monkeypatch.setattr(classifier_module, "train_classifier", training)
    run_cli("train", "data=mnist", f"data.root={root}", "loss=wgan_gp", "train.steps=4", "train.batch_size=16",
            "train.eval_every=0", "train.checkpoint_every=2", "device=cpu", "threads=1", "model=dcgan",
            "model.width=8", "model.z_dim=16", f"hydra.run.dir={run}")
    assert len(seen) == 1 and seen[0] != []  # once, after the run's steps had written a checkpoint
    out = " ".join(capsys.readouterr().out.split())
    announced = re.search(r"Training the mnist classifier the metrics read \(([\d,]+) steps, 5 epochs of 64 images\)",
                          out)
    assert announced and announced.group(1) == "5"
