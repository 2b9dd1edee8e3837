"""Data sets that live on the training device and hand out random batches.

Every data set has `shape` (of one sample), `n_classes`, `size` (None when samples
are generated on the fly), `augment` (the DiffAugment ops the critic applies to what it
sees, passed to the model builder like the shape; gan_lab.augment) and
`sample(batch_size) -> (x, y)`, with y the label (the mode index for mixtures). Batches are drawn with randint + index_select on the device:
no DataLoader, no per-sample PIL transforms, no host round trip in the hot loop.

A data set also declares what it measures: `measures()` returns gan_lab.measures objects (ModeCoverage,
DigitClasses, StackedDigits, InceptionScores, NearestTraining), each carrying its own computation, which
gan_lab.evaluation calls; a data set that declares none has no metrics, and the run says so.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import Tensor

from gan_lab.augment import parse_policy
from gan_lab.errors import GanLabError
from gan_lab.measures import DigitClasses, InceptionScores, ModeCoverage, NearestTraining, StackedDigits
# import_torchvision and _TORCHVISION stay importable from here, as every caller has them
from gan_lab.torchvision_sets import _TORCHVISION, import_torchvision, load_arrays, open_torchvision  # noqa: F401


def build_data(node: dict, device: str | torch.device = "cpu", **build_time: Any) -> Any:
    """The data set a config's `data` node describes (its `recommended` defaults are for other groups).

    build_time: what gan-lab passes that only some data sets take (FolderData's rank, world_size, say
    and before_reading), each given to the data sets whose builder declares it.
    """
    from hydra.utils import instantiate

    node = {k: v for k, v in node.items() if k != "recommended"}
    return instantiate(node, device=device, **declared(node.get("_target_"), build_time))


def declared(target: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The build-time values among `given` that a builder (a `_target_` string or a callable) declares."""
    import inspect

    from hydra.utils import get_object

    try:
        params = inspect.signature(get_object(target) if isinstance(target, str) else target).parameters
    except (ImportError, AttributeError, TypeError, ValueError):  # a bad _target_: instantiate says why
        return {}
    return {k: v for k, v in given.items() if k in params}


def check_batch_size(data: Any, batch_size: int) -> None:
    """Refuse a batch larger than a data set of fixed size (generated data sets have none).

    A data set that declares `resamples = True` draws every batch with replacement by design (a table's
    training-by-sampling, as CTGAN's batch of 500 on any table) and takes any batch size.
    """
    if data.size is not None and batch_size > data.size and not getattr(data, "resamples", False):
        raise GanLabError(f"train.batch_size={batch_size} is larger than the data set ({data.size} "
                          f"samples). Use a batch size of at most {data.size}.")


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

    capturable = True  # sample() draws on the device from torch's generator (gan_lab.capture)

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

    capturable = True  # sample() draws on the device from torch's generator (gan_lab.capture)

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


CELEBA_RESOLUTION = 64  # the 178x178 centre of the 178x218 aligned faces, resized: the DCGAN/WGAN-GP protocol


class ImageData:
    """An image data set from torchvision, held once on the device as uint8 (N, C, H, W)."""

    capturable = True  # sample(): randint + index_select on images held on the device (gan_lab.capture)

    def __init__(self, name: str, root: str, download: bool, train: bool = True,
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

    capturable = True  # sample(): randint + index_select on images held on the device (gan_lab.capture)

    def __init__(self, root: str, download: bool, train: bool = True,
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


def _load_torchvision(name: str, root: str, download: bool, train: bool) -> tuple[Tensor, Tensor]:
    if name == "celeba":
        return _celeba_images(open_torchvision(name, root, download, train))
    return load_arrays(name, root, download, train)


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
