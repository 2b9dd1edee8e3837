"""torchvision's data sets, opened with one paragraph when they are missing, and torchvision itself, checked.

Below gan_lab.data (which builds data sets from them) and gan_lab.evaluation.classifier (which trains
the digit classifier on them), so neither imports the other for it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from typing import Any
from urllib.error import URLError

import torch
from torch import Tensor

from gan_lab.errors import GanLabError

# torchvision class and the folder it keeps under root, per data set name
_TORCHVISION = {
    "mnist": ("MNIST", "MNIST"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
    "celeba": ("CelebA", "celeba"),  # aligned faces, 64 px centre crop (CELEBA_RESOLUTION), unlabelled
}


def _version(text: str) -> tuple[int, int, str | None] | None:
    # "2.14.1+cu130" -> (2, 14, "cu13"): major, minor and the build (cpu, cuda's major, rocm x.y); None if odd
    found = re.match(r"(\d+)\.(\d+)[^+]*(?:\+(cpu|cu\d\d|rocm[\d.]+))?", text)
    return (int(found[1]), int(found[2]), found[3]) if found else None


def import_torchvision() -> Any:
    """torchvision, once it is known to be the build that goes with this torch; else one paragraph with the fix.

    torchvision X.Y is built for torch 2.(Y-15) and for one platform (+cpu, +cu130, ...). A pair
    that does not match fails on import ("operator torchvision::nms does not exist") or later;
    the versions are compared first, from the installed metadata, before anything is imported.
    """
    try:
        theirs = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        theirs = None
    ours, tv = _version(torch.__version__), _version(theirs or "")
    if ours and tv and ours[0] == 2 and tv[0] == 0 and tv[1] != ours[1] + 15:
        problem = f"torchvision 0.{tv[1]} is built for torch 2.{tv[1] - 15}"
    elif ours and tv and ours[0] == 2 and tv[0] == 0 and ours[2] and tv[2] and ours[2] != tv[2]:
        problem = (f"this torch is a {torch.__version__.partition('+')[2]} build and this torchvision a "
                   f"{theirs.partition('+')[2]} build")
    else:
        try:
            import torchvision  # noqa: F401  (its C extension is loaded here)

            return torchvision
        except (ImportError, RuntimeError, OSError) as err:
            problem = f"importing torchvision failed ({type(err).__name__}: {' '.join(str(err).split())})"
    local = torch.__version__.partition("+")[2]
    index = f" --index-url https://download.pytorch.org/whl/{local}" if re.fullmatch(r"cpu|cu\d+|rocm[\d.]+", local) \
        else ""
    wanted = f"torchvision==0.{ours[1] + 15}.*" if ours else "torchvision"
    raise GanLabError(
        f"torch {torch.__version__} and torchvision {theirs or '(not installed)'} do not go together: {problem}. "
        f"gan-lab needs torchvision for image data and image grids, and torchvision "
        f"{'0.' + str(ours[1] + 15) if ours else 'of the matching version'} is the one built for this torch. "
        f"Install it, leaving torch as it is, with: {sys.executable} -m pip install --force-reinstall --no-deps "
        f"\"{wanted}\"{index}")  # no full stop after the command: it would be copied with the index's address


def open_torchvision(name: str, root: str, download: bool, train: bool) -> Any:
    """torchvision's data set object for one of _TORCHVISION's names, or one paragraph saying how to get it."""
    torchvision = import_torchvision()  # imported here: the toy data sets do not need it at start-up

    cls_name, folder = _TORCHVISION[name]
    where = os.path.abspath(os.path.expanduser(root))
    split = {"split": "train" if train else "test", "target_type": []} if name == "celeba" else {"train": train}
    try:
        return getattr(torchvision.datasets, cls_name)(root=where, download=download, **split)
    except (RuntimeError, OSError, URLError, ValueError) as err:
        how = ("The download failed (no internet?): put the files there by hand, or point data.root at a "
               "folder that has them" if download else
               "Pass data.download=true to fetch it, or point data.root at a folder that has it")
        reason = " ".join(str(err).split()) or type(err).__name__  # torchvision's lines, as one paragraph
        raise GanLabError(
            f"Could not load {name} from {where} (torchvision looks for {os.path.join(where, folder)}): "
            f"{reason.rstrip('.')}. {how}, e.g. data.root=/path/to/data "
            f"(or set GAN_LAB_DATA_ROOT)."
        ) from None


def load_arrays(name: str, root: str, download: bool, train: bool) -> tuple[Tensor, Tensor]:
    """An array data set's images as uint8 (N, C, H, W) and its labels (MNIST, Fashion-MNIST, CIFAR)."""
    ds = open_torchvision(name, root, download, train)
    images = torch.as_tensor(ds.data)
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)  # (N,H,W[,C]) -> (N,C,H,W)
    return images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)
