"""Every option of the model and data groups trains one step from the command line.

The options are read from conf/ (a new YAML is walked the day it is added). A data option needs its
input on disk: MNIST-like data use conftest's tiny IDX files; CIFAR and CelebA get tiny files in
torchvision's layout, written here, with torchvision's checksum check (of the real archives) bypassed;
a folder gets a few PNGs. A new data option whose input cannot be made here fails below, naming
where to add how to make it.

Models are trained small (conftest.small_model: a new model whose size keys are named as the others'
trains small here too).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_mnist, run_cli, small_model
from gan_lab.app.options import conf_options
from gan_lab.runs.checkpoint import load_checkpoint

ONE_STEP = ["train.steps=1", "train.batch_size=8", "train.log_every=1", "train.sample_every=1",
            "train.checkpoint_every=1", "metrics=false", "device=cpu", "threads=1"]
# ---- tiny inputs in each data option's layout ------------------------------------------------------

def _cifar(root: Path, folder: str, files: list[str], meta: str, labels_key: str, n_classes: int) -> None:
    # torchvision's CIFAR layout: pickled dicts of uint8 rows (N, 3072) and their labels
    (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in files:
        batch = {"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8), labels_key: list(range(8))}
        (root / folder / name).write_bytes(pickle.dumps(batch))
    names = "label_names" if n_classes == 10 else "fine_label_names"
    (root / folder / meta).write_bytes(pickle.dumps({names: [f"class{i}" for i in range(n_classes)]}))


def cifar10(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _cifar(root, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "batches.meta",
           "labels", 10)
    return _unchecked(monkeypatch, root)


def cifar100(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _cifar(root, "cifar-100-python", ["train", "test"], "meta", "fine_labels", 100)
    return _unchecked(monkeypatch, root)


def celeba(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # img_align_celeba/ and the list files CelebA's loader reads (space-separated; two header lines where it has them)
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, 9)]
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(base / "img_align_celeba" / name)
    (base / "list_eval_partition.txt").write_text("".join(f"{name} 0\n" for name in names))
    (base / "identity_CelebA.txt").write_text("".join(f"{name} 1\n" for name in names))
    for file, columns in (("list_bbox_celeba.txt", 4), ("list_landmarks_align_celeba.txt", 10),
                          ("list_attr_celeba.txt", 40)):
        header = " ".join(f"c{i}" for i in range(columns))
        rows = "".join(f"{name} {' '.join(['1'] * columns)}\n" for name in names)
        (base / file).write_text(f"{len(names)}\n{header}\n{rows}")
    return _unchecked(monkeypatch, root)


def _unchecked(monkeypatch: pytest.MonkeyPatch, root: Path) -> list[str]:
    # torchvision checks its files against the md5 of the real archives: these tiny ones pass as they are
    import torchvision

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    monkeypatch.setattr(torchvision.datasets.CelebA, "_check_integrity", lambda self: True)
    return [f"data.root={root}", "data.download=false"]


def mnist_like(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    make_tiny_mnist(root, "MNIST")
    make_tiny_mnist(root, "FashionMNIST", seed=1)
    return [f"data.root={root}", "data.download=false"]


def folder(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for i in range(4):
            (root / "images" / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(root / "images" / label / f"{i}.png")
    return [f"data.path={root / 'images'}", f"data.cache={root / 'cache'}", "data.resolution=32", "data.workers=0"]


def generated(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return []  # sampled on the fly


def table(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # a small mixed CSV (numbers, integers, a date, booleans, text, missing values); pack 2 fits ONE_STEP's batch of 8
    from test_table import mixed_frame

    root.mkdir(parents=True)
    mixed_frame(n=40).to_csv(root / "t.csv", index=False)
    return [f"data.path={root / 't.csv'}", "model.pack=2"]


# what a data option that reads files needs on disk; one whose YAML names no files (no root, no path) is
# generated on the fly and needs nothing here
INPUTS: dict[str, Callable[[Path, pytest.MonkeyPatch], list[str]]] = {
    "mnist": mnist_like, "fashion_mnist": mnist_like, "stacked_mnist": mnist_like,
    "cifar10": cifar10, "cifar100": cifar100, "celeba": celeba, "folder": folder, "table": table,
}


def default_model(data: str) -> tuple[str, bool]:
    """The model option a data option brings (its defaults list, else the root's mlp), and whether it reads files."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"data={data}"], return_hydra_config=True)
    return cfg.hydra.runtime.choices["model"], bool({"root", "path"} & set(cfg.data))


def trained_one_step(run_dir: Path) -> None:
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed", status
    state = load_checkpoint(run_dir)
    assert state["step"] == 1
    assert all(torch.isfinite(t).all() for t in state["G"].values() if t.is_floating_point())


@pytest.mark.parametrize("data", conf_options("data"))
def test_every_data_option_trains_one_step(data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, reads_files = default_model(data)
    assert data in INPUTS or not reads_files, (f"data={data} reads files: add how to make its tiny input to INPUTS "
                                               f"in {__file__}, so this test trains it")
    given = INPUTS.get(data, generated)(tmp_path / "input", monkeypatch)
    run_cli("train", f"data={data}", *given, *small_model(model), *ONE_STEP, f"hydra.run.dir={tmp_path / 'run'}")
    trained_one_step(tmp_path / "run")


# each model option on a data set it takes: the 2-D ring for MLPs, 28 px digits for the image models, a CSV for tables
MODEL_DATA = {"mlp": "ring8", "table": "table"}  # model=table: a table's layout


@pytest.mark.parametrize("model", conf_options("model"))
def test_every_model_option_trains_one_step(model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = MODEL_DATA.get(model, "mnist")
    given = INPUTS.get(data, generated)(tmp_path / "input", monkeypatch)
    run_cli("train", f"model={model}", f"data={data}", *given, *small_model(model), *ONE_STEP,
            f"hydra.run.dir={tmp_path / 'run'}")
    trained_one_step(tmp_path / "run")
