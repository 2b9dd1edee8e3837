"""metrics/* during training, `gan-lab eval`, `gan-lab sample`, and the critic landscape."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY, TINY_DCGAN, TINY_MLP, build_model, run_cli, user_error
from gan_lab.data import ToyMixture
from gan_lab.evaluation.evaluate import make_evaluator
from test_train import read_events


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("toy")
    run_cli("train", *TINY, *TINY_MLP, "train.eval_every=2", f"hydra.run.dir={run_dir}")
    return run_dir


def test_mixture_metrics_are_logged_during_training(toy_run: Path) -> None:
    events = read_events(toy_run)
    modes = events.Scalars("metrics/modes_covered")
    assert [e.step for e in modes] == [2, 4]
    assert all(0 <= e.value <= 8 for e in modes)
    assert "metrics/high_quality" in events.Tags()["scalars"] and "metrics/reverse_kl" in events.Tags()["scalars"]
    assert "critic/landscape" in events.Tags()["images"]
    assert (toy_run / "samples" / "critic_step_00000004.png").exists()


def test_mixture_evaluator_scores_a_perfect_generator_full_marks() -> None:
    data = ToyMixture("ring8", sigma=0.01)

    class Perfect(torch.nn.Module):  # maps z to exact samples of the mixture
        z_dim, n_classes = 3, 0

        def __init__(self) -> None:
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))

        def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            uniform = 0.5 * (1 + torch.erf(z[:, 0] / 2**0.5))  # the normal CDF makes z_0 uniform
            mode = (uniform * 8).long().clamp(max=7)
            return data.centers[mode] + 0.01 * z[:, 1:]

    torch.manual_seed(0)
    metrics = make_evaluator(data)(Perfect())
    assert metrics["metrics/modes_covered"] == 8
    assert 0.97 < metrics["metrics/high_quality"] <= 1.0
    assert metrics["metrics/reverse_kl"] < 0.01


def test_eval_command_writes_a_table_and_json(toy_run: Path, capsys: pytest.CaptureFixture) -> None:
    run_cli("eval", f"checkpoint={toy_run}")
    result = json.loads((toy_run / "eval.json").read_text())
    assert result["metrics/n_modes"] == 8
    assert 0 <= result["metrics/modes_covered"] <= 8
    err = capsys.readouterr().err
    assert "modes_covered" in err
    # beside each value, the same protocol on draws of the mixture itself: what a good generator scores
    assert "real held-out" in err
    real = result["real_held_out"]
    assert real["metrics/modes_covered"] == 8 and 0.98 < real["metrics/high_quality"] < 1.0
    assert 0 <= real["metrics/reverse_kl"] < 0.01
    # 2-D points have no training images to copy: said so, and no picture (gan_lab.evaluation.memorisation)
    assert "memorisation: not applicable to data 'ring8'" in " ".join(err.split())
    assert not list(toy_run.glob("nearest_neighbours*")) and not any(k.startswith("memorisation/") for k in result)
    # the same weights and seed give the same numbers
    run_cli("eval", f"checkpoint={toy_run / 'checkpoints' / 'last.pt'}", f"out={toy_run / 'again.json'}")
    again = json.loads((toy_run / "again.json").read_text())
    assert again["metrics/high_quality"] == result["metrics/high_quality"]


def test_each_evaluation_keeps_its_own_record_and_the_report_shows_them_all(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run_cli("train", *TINY, *TINY_MLP, "loss=nonsaturating", "threads=1", "metrics=false", f"hydra.run.dir={run}")
    run_cli("eval", f"checkpoint={run}")
    plain = json.loads((run / "eval.json").read_text())
    run_cli("eval", f"checkpoint={run}", "rejection=drs")
    run_cli("eval", f"checkpoint={run / 'checkpoints' / 'step_00000002.pt'}", "seed=1")
    assert json.loads((run / "eval.json").read_text()) == plain  # the plain evaluation is still there
    drs = json.loads((run / "eval_drs.json").read_text())
    assert plain["rejection"] == "none" and drs["rejection"] == "drs" and 0 < drs["rejection/acceptance_rate"] <= 1
    early = json.loads((run / "eval_step_00000002_seed1.json").read_text())
    assert early["seed"] == 1 and early["checkpoint"].endswith("step_00000002.pt")

    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "400")  # each table in one block: a row on one line
    run_cli("report", str(run))
    printed = capsys.readouterr().out
    rows = {line.split("│")[2].strip(): line for line in printed.splitlines() if line.count("│") > 3}
    assert {"plain", "rejection=drs", "step_00000002.pt seed=1"} <= set(rows), printed
    assert f"{plain['metrics/high_quality']:.4g}" in rows["plain"].split()
    assert f"{drs['metrics/high_quality']:.4g}" in rows["rejection=drs"].split()
    assert f"{drs['rejection/acceptance_rate']:.4g}" in rows["rejection=drs"].split()
    markdown = (run / "report.md").read_text()
    assert "| rejection=drs |" in markdown and "| plain |" in markdown


def test_eval_reproduces_the_runs_final_metrics_exactly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # enough steps that some samples reach a mode: then every metric depends on the exact z drawn
    run_cli("train", "train.steps=80", "train.batch_size=64", "train.log_every=40", "train.sample_every=1000",
            "optimizer.lr=1e-3", "device=cpu", *TINY_MLP, f"hydra.run.dir={tmp_path}")
    logged = {k: v for k, v in json.loads((tmp_path / "status.json").read_text())["metrics"].items()
              if k.startswith("metrics/")}
    # (15 of 2,500 samples: too few to cover a mode, which needs a tenth of its fair share, 31)
    assert logged["metrics/high_quality"] > 0 and math.isfinite(logged["metrics/reverse_kl"])
    capsys.readouterr()
    run_cli("eval", f"checkpoint={tmp_path}")
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert {k: evaluated[k] for k in logged} == logged  # bitwise: the same z, the same G mode
    assert evaluated["samples"] == 2500 and evaluated["seed"] == 0
    assert "the run's own final metrics/* used the same" in " ".join(capsys.readouterr().err.split())
    # another seed: other numbers, and the output says why
    run_cli("eval", f"checkpoint={tmp_path}", "seed=1", f"out={tmp_path / 'seed1.json'}")
    assert "used seed 0, so these differ" in " ".join(capsys.readouterr().err.split())


def test_sample_command_2d(toy_run: Path, tmp_path: Path) -> None:
    run_cli("sample", f"checkpoint={toy_run}", "n=300", f"out={tmp_path}")
    samples = torch.load(tmp_path / "sample_step4_seed0.pt", weights_only=True)
    assert samples.shape == (300, 2) and torch.isfinite(samples).all()
    assert (tmp_path / "sample_step4_seed0.png").stat().st_size > 1000


def test_sample_command_images_and_interpolation(tmp_path: Path, tiny_mnist_root: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", *TINY, *TINY_DCGAN, f"hydra.run.dir={run_dir}")
    run_cli("sample", f"checkpoint={run_dir}", "n=16")
    grid = run_dir / "samples" / "sample_step4_seed0.png"
    assert grid.exists() and torch.load(grid.with_suffix(".pt"), weights_only=True).shape == (16, 1, 28, 28)
    run_cli("sample", f"checkpoint={run_dir}", "n=30", "interpolate=true")
    path = torch.load(run_dir / "samples" / "interpolation_step4_seed0.pt", weights_only=True)
    assert path.shape == (30, 1, 28, 28)


@pytest.mark.parametrize("args, fragment", [
    (["checkpoint=/nonexistent"], "No checkpoint at /nonexistent"),
    (["n=0"], "n=0 is out of range"),
    (["label=3"], "label=3 needs a conditional model"),
    (["number=3"], "unknown argument 'number=3'"),
])
def test_sample_bad_arguments(args: list[str], fragment: str, toy_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert fragment in user_error(capsys, "sample", f"checkpoint={toy_run}", *args)


def test_eval_without_checkpoint(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run_cli("eval")
    assert "needs checkpoint=" in capsys.readouterr().err


def test_class_metrics_during_an_mnist_run(tmp_path: Path, tiny_mnist_root: Path) -> None:
    # the classifier is trained on first use (on the tiny data here, into the tests' cache)
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", *TINY, "model.width=8", "model.z_dim=16",
            "metrics=true", f"hydra.run.dir={tmp_path}")
    tags = read_events(tmp_path).Tags()["scalars"]
    assert {"metrics/classes_covered", "metrics/class_kl", "metrics/confidence", "metrics/frechet_distance",
            "metrics/precision", "metrics/recall", "metrics/density", "metrics/coverage"} <= set(tags)
    # `gan-lab eval` of its checkpoint gives the run's final numbers (the Fréchet distance moves with any other z)
    logged = json.loads((tmp_path / "status.json").read_text())["metrics"]
    run_cli("eval", f"checkpoint={tmp_path}")
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert {k: evaluated[k] for k in logged if k.startswith("metrics/")} == {
        k: v for k, v in logged.items() if k.startswith("metrics/")}


def test_eval_reads_the_data_where_it_lives_on_this_machine(tmp_path: Path, tiny_mnist_root: Path,
                                                             capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "other_machine"  # where the run found its data when it trained
    shutil.copytree(tiny_mnist_root, elsewhere)
    run = tmp_path / "run"
    run_cli("train", "data=mnist", f"data.root={elsewhere}", *TINY, *TINY_DCGAN, f"hydra.run.dir={run}")
    shutil.rmtree(elsewhere)  # the checkpoint moved to a machine where the data lives elsewhere
    monkeypatch.delenv("GAN_LAB_DATA_ROOT", raising=False)
    err = user_error(capsys, "eval", f"checkpoint={run}")
    assert str(elsewhere) in err and "data.root=" in err and "GAN_LAB_DATA_ROOT" in err
    run_cli("eval", f"checkpoint={run}", f"data.root={tiny_mnist_root}", f"out={tmp_path / 'given.json'}")
    monkeypatch.setenv("GAN_LAB_DATA_ROOT", str(tiny_mnist_root))  # train's default root, used when the run's is gone
    run_cli("eval", f"checkpoint={run}", f"out={tmp_path / 'env.json'}")
    assert (tmp_path / "given.json").is_file() and (tmp_path / "env.json").is_file()


@pytest.mark.parametrize("model", ["mlp", "dcgan"])
def test_conditional_models_take_labels(model: str) -> None:
    shape = (2,) if model == "mlp" else (1, 28, 28)
    G, critic = build_model(model, shape, z_dim=8, conditional=True, n_classes=10,
                            **({"hidden": 16} if model == "mlp" else {"width": 8}))
    z, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 9])
    x = G(z, y)
    assert x.shape == (6, *shape) and critic(x, y).shape == (6,)
    # the label changes the sample and the score: the networks really read it
    assert not torch.allclose(G(z, y), G(z, (y + 1) % 10))
    assert not torch.allclose(critic(x, y), critic(x, (y + 1) % 10))


def test_label_accuracy_overall_and_per_class() -> None:
    from gan_lab.evaluation.evaluate import label_accuracy

    requested = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 1, 0, 0, 0])  # class 0: 1/2, class 1: 3/4, class 2: 0/2
    got = label_accuracy(predicted, requested, n_classes=4)
    assert got["metrics/label_accuracy"] == pytest.approx(4 / 8)
    assert [got[f"metrics/label_accuracy/class_{c}"] for c in range(3)] == pytest.approx([0.5, 0.75, 0.0])
    assert math.isnan(got["metrics/label_accuracy/class_3"])  # never requested: undefined, not 0


def test_conditional_needs_labelled_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run_cli("train", "data=swissroll", "model.conditional=true", *TINY, f"hydra.run.dir={tmp_path}")
    assert "model.conditional=true needs labelled data" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("loss", ["wgan_gp", "nonsaturating", "hinge"])
def test_conditional_ring8_trains_and_samples_the_requested_label(loss: str, tmp_path: Path) -> None:
    run_cli("train", f"loss={loss}", "model.conditional=true", *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path}")
    tags = set(read_events(tmp_path).Tags()["scalars"])
    assert {"metrics/label_accuracy", *(f"metrics/label_accuracy/class_{c}" for c in range(8))} <= tags
    run_cli("sample", f"checkpoint={tmp_path}", "n=20", "label=3")
    samples = torch.load(tmp_path / "samples" / "sample_step4_seed0_label3.pt", weights_only=True)
    assert samples.shape == (20, 2)


def test_conditional_mnist_run_and_label_out_of_range(tmp_path: Path, tiny_mnist_root: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", "model.conditional=true", *TINY, *TINY_DCGAN,
            f"hydra.run.dir={tmp_path}")
    run_cli("sample", f"checkpoint={tmp_path}", "n=8", "label=7")
    assert torch.load(tmp_path / "samples" / "sample_step4_seed0_label7.pt", weights_only=True).shape == (8, 1, 28, 28)
    with pytest.raises(SystemExit):
        run_cli("sample", f"checkpoint={tmp_path}", "label=10")
    assert "labels 0 to 9" in capsys.readouterr().err


def rgb_data(n: int = 40):
    from gan_lab.data import ImageData

    data = ImageData.__new__(ImageData)  # an RGB data set without files: CIFAR-10's shape
    data.images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    data.labels = torch.arange(n) % 10
    data.name, data.shape, data.n_classes, data.size, data.split = "cifar10", (3, 32, 32), 10, n, "train"
    return data


def test_inception_metrics_without_weights_say_so_once_and_go_on(monkeypatch, tmp_path, capsys) -> None:
    from urllib.error import URLError

    calls = []

    def no_internet(url, dst, *args, **kwargs):
        calls.append(url)
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached copy of torch-fidelity's weights
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_internet)
    G, _ = build_model("dcgan", (3, 32, 32), z_dim=8, width=4)
    evaluator = make_evaluator(rgb_data())
    assert evaluator(G) == {} and evaluator(G) == {}
    assert len(calls) == 1 and calls[0].endswith("weights-inception-2015-12-05-6726825d.pth")  # not retried
    err = " ".join(capsys.readouterr().err.split())
    assert "Inception metrics (FID, IS, KID, precision/recall) are off for this run" in err
    assert "inception_weights=" in err and "by download" in err
    # a given file that is not there: the same note, naming it
    assert make_evaluator(rgb_data(), inception_weights=str(tmp_path / "missing.pth"))(G) == {}
    assert f"could not be loaded from {tmp_path / 'missing.pth'}" in " ".join(capsys.readouterr().err.split())
