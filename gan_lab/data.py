"""Data sets that live on the training device and hand out random batches.

Every data set has `shape` (of one sample), `n_classes`, `size` (None when samples
are generated on the fly), `augment` (the DiffAugment ops the critic applies to what it
sees, passed to the model builder like the shape; gan_lab.augment) and
`sample(batch_size) -> (x, y)`, with y the label (the mode index for mixtures). Batches are drawn with randint + index_select on the device:
no DataLoader, no per-sample PIL transforms, no host round trip in the hot loop.

A data set also declares what it measures: `measures()` returns plain descriptions (ModeCoverage,
DigitClasses, StackedDigits, InceptionScores, NearestTraining) that gan_lab.evaluation turns into metrics;
a data set that declares none has no metrics, and the run says so.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import re
import sys
from dataclasses import dataclass
from typing import Any
from urllib.error import URLError

import torch
from torch import Tensor

from gan_lab.augment import parse_policy
from gan_lab.errors import GanLabError


def build_data(node: dict, device: str | torch.device = "cpu") -> Any:
    """The data set a config's `data` node describes (its `recommended` defaults are for other groups)."""
    from hydra.utils import instantiate

    return instantiate({k: v for k, v in node.items() if k != "recommended"}, device=device)


def check_batch_size(data: Any, batch_size: int) -> None:
    """Refuse a batch larger than a data set of fixed size (generated data sets have none)."""
    if data.size is not None and batch_size > data.size:
        raise GanLabError(f"train.batch_size={batch_size} is larger than the data set ({data.size} "
                          f"samples). Use a batch size of at most {data.size}.")


# ---- what a data set measures: plain descriptions the evaluator builds its metrics from --------

@dataclass(frozen=True)
class ModeCoverage:
    """A Gaussian mixture's mode coverage (VEEGAN / PacGAN): a sample within 3 sigma of a centre covers its mode."""

    centers: Tensor  # (K, D) mode centres
    sigma: float     # the modes' standard deviation


@dataclass(frozen=True)
class DigitClasses:
    """Class coverage, Fréchet distance and precision / recall in the features of gan-lab's digit classifier."""

    classifier: str  # the data set the classifier is trained on: mnist or fashion_mnist
    real: Tensor     # uint8 (N, 1, H, W): the real images the samples are compared with


@dataclass(frozen=True)
class StackedDigits:
    """The histogram over 10^digits modes: the classifier's digit on each channel (VEEGAN / PacGAN's Stacked MNIST)."""

    classifier: str              # the data set the per-channel classifier is trained on
    digits: int                  # channels, each one digit: 10^digits modes
    device: torch.device | str   # where the classifier runs: the data's device


@dataclass(frozen=True)
class InceptionScores:
    """FID, Inception Score and KID through torch-fidelity's Inception network."""

    name: str     # names the cache of the real images' Inception features
    real: Tensor  # uint8 (N, 3, H, W): the real images
    split: str = "train"  # which split `real` is, recorded with the metrics


@dataclass(frozen=True)
class NearestTraining:
    """Memorisation (`gan-lab eval`): each sample's distance to its nearest training image, in pixels and features."""

    name: str  # the data set: names the cache of its training images' Inception features
    # uint8 (N, C, H, W): the training images a generator could copy. Samples with k times as many
    # channels are k images each, one per group of C channels (Stacked MNIST: three digits).
    real: Tensor
    classifier: str | None = None  # the digit classifier whose features are the feature space; None: Inception's


def ring8_centers(radius: float = 1.0) -> Tensor:
    """The 8 mode centres of the 2-D ring mixture: radius * (cos 2πk/8, sin 2πk/8), k = 0..7 (float64)."""
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


def grid25_centers() -> Tensor:
    """The 25 mode centres of the 2-D grid mixture: {-4, -2, 0, 2, 4}^2, row-major in (x, y) (float64)."""
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
    return torch.cartesian_prod(axis, axis)


class ToyMixture:
    """A mixture of equal-weight isotropic 2-D Gaussians (the PacGAN / VEEGAN protocol)."""

    def __init__(self, name: str, sigma: float, device: str | torch.device = "cpu", radius: float = 1.0,
                 augment: str | list[str] | None = None):
        if not (isinstance(radius, (int, float)) and not isinstance(radius, bool) and radius > 0):
            raise GanLabError(f"data.radius={radius!r} is out of range: the ring's radius must be a number > 0 "
                              f"(PacGAN: 1), e.g. data.radius=1.")
        if name == "ring8":
            centers = ring8_centers(radius)
        elif name == "grid25":
            centers = grid25_centers()
        else:
            raise GanLabError(f"data.name={name!r} is not a mixture gan-lab knows: use ring8 or grid25.")
        if not sigma > 0:
            raise GanLabError(f"data.sigma={sigma} is out of range: the mixture's standard deviation must be > 0.")
        self.name, self.sigma = name, float(sigma)
        self.centers = centers.to(device=device, dtype=torch.float32)
        self.shape, self.n_classes, self.size = (2,), len(centers), None
        self.augment = parse_policy(augment, self.shape)  # refused: DiffAugment is for images

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """A batch of fresh samples and their mode indices."""
        y = torch.randint(len(self.centers), (batch_size,), device=self.centers.device)
        x = self.centers.index_select(0, y) + self.sigma * torch.randn(batch_size, 2, device=self.centers.device)
        return x, y

    def measures(self) -> tuple[ModeCoverage]:
        """Mode coverage around the centres it samples from."""
        return (ModeCoverage(self.centers, self.sigma),)


class SwissRoll:
    """The 2-D swiss roll of the WGAN-GP toy experiments (sklearn's, x/z plane, scaled by 1/7.5)."""

    def __init__(self, noise: float = 0.25, device: str | torch.device = "cpu",
                 augment: str | list[str] | None = None):
        if not noise >= 0:
            raise GanLabError(f"data.noise={noise} is out of range: it must be >= 0.")
        self.name, self.noise, self.device = "swissroll", float(noise), torch.device(device)
        self.shape, self.n_classes, self.size = (2,), 0, None
        self.augment = parse_policy(augment, self.shape)  # refused: DiffAugment is for images

    def sample(self, batch_size: int) -> tuple[Tensor, None]:
        """A batch of fresh samples (the swiss roll has no labels)."""
        # t ~ U[1.5 pi, 4.5 pi]; point (t cos t, t sin t) plus Gaussian noise, as sklearn.make_swiss_roll
        t = 1.5 * math.pi * (1 + 2 * torch.rand(batch_size, device=self.device))
        x = torch.stack([t * t.cos(), t * t.sin()], dim=1)
        x = x + self.noise * torch.randn_like(x)
        return x / 7.5, None

    def measures(self) -> tuple[()]:
        """None yet: a swiss roll has no modes to count."""
        return ()


# torchvision class and the folder it keeps under root, per data set name
_TORCHVISION = {
    "mnist": ("MNIST", "MNIST"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
    "celeba": ("CelebA", "celeba"),  # aligned faces, 64 px centre crop (CELEBA_RESOLUTION), unlabelled
}
CELEBA_RESOLUTION = 64  # the 178x178 centre of the 178x218 aligned faces, resized: the DCGAN/WGAN-GP protocol


class ImageData:
    """An image data set from torchvision, held once on the device as uint8 (N, C, H, W)."""

    def __init__(self, name: str, root: str = "data", download: bool = True, train: bool = True,
                 device: str | torch.device = "cpu", augment: str | list[str] | None = None):
        if name not in _TORCHVISION:
            raise GanLabError(f"data.name={name!r} is not an image data set gan-lab knows: "
                              f"use one of {', '.join(_TORCHVISION)}.")
        images, labels = _load_torchvision(name, root, download, train)
        # uint8 on the device: 4x less memory than float; converted per batch in sample()
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.name, self.split = name, "train" if train else "test"
        self.shape = tuple(self.images.shape[1:])
        self.n_classes = int(self.labels.max()) + 1 if int(self.labels.min()) >= 0 else 0  # -1: unlabelled
        self.size = len(self.images)
        self.augment = parse_policy(augment, self.shape)

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """A batch drawn uniformly with replacement, scaled to [-1, 1]."""
        idx = torch.randint(self.size, (batch_size,), device=self.images.device)
        x = self.images.index_select(0, idx).float().div_(127.5).sub_(1.0)
        return x, self.labels.index_select(0, idx) if self.n_classes else None

    def measures(self) -> tuple[Any, ...]:
        """Digits (MNIST, Fashion-MNIST): gan-lab's classifier; RGB images: Inception; both: nearest training images."""
        if self.name in ("mnist", "fashion_mnist"):
            return DigitClasses(self.name, self.images), NearestTraining(self.name, self.images, classifier=self.name)
        if self.shape[0] == 3:
            return InceptionScores(self.name, self.images, self.split), NearestTraining(self.name, self.images)
        return (NearestTraining(self.name, self.images),)


class StackedMNIST:
    """Three independent MNIST digits as the three channels of one image: 1,000 modes.

    The VEEGAN / PacGAN benchmark: a mode is the triple of digits, label 100*d0 + 10*d1 + d2.
    """

    def __init__(self, root: str = "data", download: bool = True, train: bool = True,
                 device: str | torch.device = "cpu", augment: str | list[str] | None = None):
        images, labels = _load_torchvision("mnist", root, download, train)
        self.images, self.labels = images.to(device), labels.to(device)  # uint8 (N, 1, 28, 28)
        self.name, self.shape, self.n_classes, self.size = "stacked_mnist", (3, 28, 28), 1000, len(images)
        self._place = torch.tensor([100, 10, 1], device=device)
        self.augment = parse_policy(augment, self.shape)

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """A batch of stacked images in [-1, 1] and their 3-digit mode labels."""
        idx = torch.randint(self.size, (batch_size, 3), device=self.images.device)  # independent digits
        x = self.images.index_select(0, idx.flatten()).view(batch_size, 3, 28, 28)
        y = (self.labels.index_select(0, idx.flatten()).view(batch_size, 3) * self._place).sum(1)
        return x.float().div_(127.5).sub_(1.0), y

    def measures(self) -> tuple[StackedDigits, NearestTraining]:
        """The 1,000-mode histogram, MNIST's classifier reading each channel; each channel's nearest MNIST digit."""
        return (StackedDigits("mnist", digits=3, device=self.images.device),
                NearestTraining("mnist", self.images, classifier="mnist"))


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


def _load_torchvision(name: str, root: str, download: bool, train: bool) -> tuple[Tensor, Tensor]:
    torchvision = import_torchvision()  # imported here: the toy data sets do not need it at start-up

    cls_name, folder = _TORCHVISION[name]
    where = os.path.abspath(os.path.expanduser(root))
    split = {"split": "train" if train else "test", "target_type": []} if name == "celeba" else {"train": train}
    try:
        ds = getattr(torchvision.datasets, cls_name)(root=where, download=download, **split)
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
    if name == "celeba":
        return _celeba_images(ds)
    images = torch.as_tensor(ds.data)
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)  # (N,H,W[,C]) -> (N,C,H,W)
    return images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)


def _celeba_images(ds: Any) -> tuple[Tensor, Tensor]:
    """CelebA's split as uint8 (N, 3, 64, 64): decoded once into gan_lab.image_cache's cache, read from it after."""
    from pathlib import Path

    import numpy as np

    from gan_lab.image_cache import Source, load_or_build

    folder = Path(ds.root) / ds.base_folder / "img_align_celeba"
    names = list(ds.filename)
    try:
        stats = [os.stat(folder / name) for name in names]
    except OSError as err:
        raise GanLabError(f"CelebA's list_eval_partition.txt names {err.filename}, which is not there: the "
                          f"images in {folder} are incomplete. Extract img_align_celeba.zip there again.") from None
    listing = [(name, stat.st_size, stat.st_mtime_ns) for name, stat in zip(names, stats)]  # the cache's key
    source = Source(folder, names, listing, lambda name: (folder / name).read_bytes(), None)
    cached, _ = load_or_build(source, None, [], CELEBA_RESOLUTION, "crop", 3, None,
                              background=(255, 255, 255))  # JPEGs: nothing is transparent
    images = torch.from_numpy(np.load(cached / "images.npy", allow_pickle=False))
    return images, torch.from_numpy(np.load(cached / "labels.npy", allow_pickle=False))  # labels: -1, none
