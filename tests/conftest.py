"""Shared fixtures: tiny overrides, tiny IDX data sets, and the CLI run in-process."""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gan_lab.app.cli import main

# cuBLAS picks deterministic kernels only with a fixed workspace, read when CUDA starts: set
# before any test touches the GPU (test_graphs compares graphed and eager runs exactly).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# One CPU thread in this process and in every gan-lab the tests start. Tests compare runs bit for
# bit, and a run with threads: auto follows the cores other processes leave free (gan_lab.runs.busy):
# on a busy CI machine two runs of one test could otherwise train on different thread counts, whose
# last digits differ for convolutions. One thread is also the faster choice on two shared cores.
# The tests of that adaptation fake the thread count and the CPU counters.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

# Classifiers trained on the tests' tiny data must never land in the user's cache.
os.environ["GAN_LAB_CACHE"] = tempfile.mkdtemp(prefix="gan-lab-test-cache-")

# Overrides that make any run take a second or two on a CPU.
TINY = ["train.steps=4", "train.batch_size=16", "train.log_every=2", "train.sample_every=4",
        "train.checkpoint_every=2", "device=cpu"]
TINY_MLP = ["model.hidden=32", "model.depth=2"]
TINY_DCGAN = ["model.width=8", "model.z_dim=16", "metrics=false"]
MODEL_SIZE_KEYS = ("channels", "width", "hidden", "features")


def small_model(model: str) -> list[str]:
    """Overrides that shrink a model option: its size keys (named as MODEL_SIZE_KEYS) set to 8, group_channels to 4."""
    node = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / f"{model}.yaml")
    overrides = []
    for key in node:
        value = node._get_node(key)._value()  # as written: interpolations (z_dim) stay unresolved
        if isinstance(value, int) and not isinstance(value, bool) and str(key).endswith(MODEL_SIZE_KEYS):
            overrides.append(f"model.{key}={4 if key == 'group_channels' else 8}")
    return overrides

CONF = Path(__file__).resolve().parents[1] / "conf"

# Tests that need a GPU (CUDA graphs, bf16 kernels, the GPU's own RNG): skipped cleanly on a CPU-only machine.
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def run_cli(*args: str) -> None:
    """Run `gan-lab ...` in this process (raises SystemExit on user errors)."""
    main(list(args))


def user_error(capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run `gan-lab ...` expecting a user error (exit 2, no traceback); its message, the panel's wrapping undone."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    return " ".join(err.split())


def straight_and_resumed(root: Path, common: list[str], steps: int = 6) -> tuple[dict, dict]:
    """Train `steps` steps straight, and half of them then resumed to `steps`; both final checkpoints."""
    from gan_lab.runs.checkpoint import load_checkpoint

    run_cli("train", *common, f"train.steps={steps}", f"hydra.run.dir={root / 'straight'}")
    run_cli("train", *common, f"train.steps={steps // 2}", f"hydra.run.dir={root / 'first'}")
    run_cli("train", *common, f"train.steps={steps}", f"resume={root / 'first'}", f"hydra.run.dir={root / 'resumed'}")
    return load_checkpoint(root / "straight"), load_checkpoint(root / "resumed")


def write_idx(path: Path, array: torch.Tensor) -> None:
    """Write a uint8 tensor in the IDX format MNIST uses (magic, big-endian dims, raw bytes)."""
    dims = array.shape
    header = struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    path.write_bytes(header + array.to(torch.uint8).contiguous().numpy().tobytes())


def make_tiny_mnist(root: Path, folder: str = "MNIST", n: int = 64, seed: int = 0) -> Path:
    """A tiny MNIST-layout data set: n random 28x28 images with labels 0..9 (train and test)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for split in ("train", "t10k"):
        write_idx(raw / f"{split}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), generator=g))
        write_idx(raw / f"{split}-labels-idx1-ubyte", torch.arange(n) % 10)
    return root


@pytest.fixture(scope="session")
def tiny_mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_tiny_mnist(root, "MNIST")
    make_tiny_mnist(root, "FashionMNIST", seed=1)
    return root


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The real MNIST root (GAN_LAB_DATA_ROOT, as .ci/run sets it); skips when it is absent."""
    root = os.environ.get("GAN_LAB_DATA_ROOT")
    if not root or not (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip("real MNIST not available: set GAN_LAB_DATA_ROOT to a folder holding MNIST/raw")
    return Path(root)


def critic_schedule(**knobs: float) -> "CriticSchedule":
    """The critic's schedule with conf/_loss_knobs.yaml's defaults (n_critic 1, ...) and these knobs changed."""
    from dataclasses import fields

    from omegaconf import OmegaConf

    from gan_lab.training.settings import CriticSchedule

    defaults = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "_loss_knobs.yaml")
    return CriticSchedule(**{**{f.name: defaults[f.name] for f in fields(CriticSchedule)}, **knobs})


# a table's layout for model=table (gan_lab.table_data.TableData.layout): a scalar, a 3-way mode block, a
# conditional 2-category block (seen 5 and 3 times); its encoded rows are 6 wide, its condition 2
TABLE_LAYOUT = {"spans": [["tanh", 1, False], ["softmax", 3, False], ["softmax", 2, True]], "frequency": [5, 3]}


def write_table_csv(path: Path, n: int = 40) -> Path:
    """A small mixed CSV (test_table.mixed_frame: numbers, integers, a date, booleans, text, missing values)."""
    from test_table import mixed_frame

    path.parent.mkdir(parents=True, exist_ok=True)
    mixed_frame(n=n).to_csv(path, index=False)
    return path


def build_model(name: str, shape: tuple[int, ...], **overrides: object) -> tuple:
    """(G, critic) of conf/model/<name>.yaml's builder with the YAML's values and these overrides.

    Builders have no Python defaults (the YAML holds each default once), so tests call them through
    this. A value the YAML takes from the data (`${data.recommended.z_dim}`) comes from the shared
    node of 2-D data (conf/_data_points.yaml) or of images (conf/_images.yaml) by the shape.
    """
    import hydra.utils
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{name}.yaml"), resolve=False)
    shared = OmegaConf.load(CONF / ("_data_points.yaml" if len(shape) == 1 else "_images.yaml"))
    for key, value in node.items():
        if isinstance(value, str) and value.startswith("${data.recommended."):
            node[key] = shared.recommended[value[len("${data.recommended."):-1]]
    builder = hydra.utils.get_object(node.pop("_target_"))
    return builder(shape, **{**node, **overrides})
