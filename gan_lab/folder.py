"""data=folder: your own images, from a class-folder tree, a flat folder or a zip (gan_lab.image_cache).

The images are read once into a uint8 cache (N, C, R, R). When the cache fits data.memory_budget
it is held on the training device as one tensor and batches are drawn as ImageData draws them
(randint + index_select, no host round trip). Otherwise it stays memory-mapped and a DataLoader's
workers read random batches from it (pinned on CUDA), so a data set larger than memory trains with
memory bounded by the batches in flight. Under torchrun each rank draws from its own share of the
images (every world_size-th row, starting at its rank).

Like `device`, `rank`, `world_size` and `say` (where its progress lines and the warning about
unreadable files go: the composition root passes the console, whose lines the run's train.log
copies) are passed in at build time, never read from its config: a data set reaches up to no layer.
So is `before_reading`: called with the data set once its shape, class count and augment policy are
known from the config and the file listing, before a single image is read, so that the composition
root builds the models there and a size they refuse costs no cache.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from gan_lab.augment import parse_policy
from gan_lab.measures import InceptionScores, NearestTraining
from gan_lab.errors import GanLabError
from gan_lab.image_cache import background_rgb, load_or_build, open_source, read_labels

FITS = ("crop", "pad")


def _check(path: str, resolution: int, fit: str, channels: int, memory_budget: float, workers: int) -> None:
    if not path:
        raise GanLabError("data=folder needs data.path: a folder of images (class subfolders for labels) or a "
                          ".zip of them, e.g. data.path=/my/images.")
    if not (isinstance(resolution, int) and 32 <= resolution <= 256):
        raise GanLabError(f"data.resolution={resolution!r} is out of range: images are made square at a side of "
                          f"32 to 256 pixels, e.g. data.resolution=64.")
    if fit not in FITS:
        raise GanLabError(f"data.fit={fit!r} is not known: crop (the centre square) or pad (all of the image, "
                          f"with black bars).")
    if channels not in (1, 3):
        raise GanLabError(f"data.channels={channels!r} is not known: 3 (RGB) or 1 (greyscale).")
    if not memory_budget > 0:
        raise GanLabError(f"data.memory_budget={memory_budget} is out of range: the GiB the images may take on "
                          f"the training device, > 0 (beyond it they are streamed from disk).")
    if not (isinstance(workers, int) and workers >= 0):
        raise GanLabError(f"data.workers={workers!r} is out of range: DataLoader processes, 0 or more.")


class _Rows(torch.utils.data.Dataset):
    """Batches of rows of the memory-mapped cache: one item is a whole batch (its indices sorted: fewer seeks)."""

    def __init__(self, file: Path, labels: np.ndarray):
        self.file, self.labels, self.rows = file, labels, None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: list[int]) -> tuple[Tensor, Tensor]:
        if self.rows is None:  # opened in the worker that reads: a memory map is not shared across processes
            self.rows = np.load(self.file, mmap_mode="r", allow_pickle=False)
        index = np.sort(np.asarray(index))
        return torch.from_numpy(np.ascontiguousarray(self.rows[index])), torch.from_numpy(self.labels[index])


class _RandomBatches(torch.utils.data.Sampler):
    """Endless batches of indices drawn uniformly with replacement from `share` (as the in-memory path draws)."""

    def __init__(self, share: Tensor, batch_size: int, seed: int):
        self.share, self.batch_size, self.seed = share, batch_size, seed

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            yield self.share[torch.randint(len(self.share), (self.batch_size,), generator=generator)].tolist()


class FolderData:
    """Images from a folder or zip, resized once into a uint8 cache; labels from class folders or dataset.json."""

    def __init__(self, path: str, resolution: int = 64, fit: str = "crop", channels: int = 3, xflip: bool = False,
                 cache: str | None = None, memory_budget: float = 4.0, workers: int = 2,
                 device: str | torch.device = "cpu", augment: str | list[str] | None = None, rank: int = 0,
                 world_size: int = 1, say: Callable[[str], None] = lambda text: None,
                 background: str | list[int] = "white",
                 before_reading: Callable[[FolderData], None] = lambda data: None):
        _check(path, resolution, fit, channels, memory_budget, workers)
        rgb = background_rgb(background)
        started = time.perf_counter()
        source = open_source(path)  # listing the files (their sizes and mtimes key the cache) is part of start-up
        for line in source.notes + source.warnings:  # hidden files ignored, a wrapped tree unwrapped, stray images
            say(line)
        labels, classes = read_labels(source)
        self.n_classes = len(classes)
        self.shape = (channels, resolution, resolution)
        self.augment = parse_policy(augment, self.shape)
        before_reading(self)  # the models are built (and a size they refuse is refused) before any image is read
        building = lambda n: say(  # noqa: E731
            f"[bold]data[/] reading {n:,} images from {source.path} into a {channels}x{resolution}x{resolution} "
            f"cache, transparent pixels over {background} {rgb} (once; later runs read the cache)")
        broken = lambda folder, why: say(  # noqa: E731
            f"[bold]data[/] the cache {folder} failed its check ({why}): building it again")
        folder, meta = load_or_build(source, labels, classes, resolution, fit, channels, cache, background=rgb,
                                     on_build=building, on_broken=broken)
        self.cache_folder, self.skipped = folder, list(meta["skipped"])
        if self.skipped:
            shown = ", ".join(self.skipped[:5]) + (", ..." if len(self.skipped) > 5 else "")
            say(f"[yellow]warning:[/] {len(self.skipped)} of {len(source.names)} image files in {source.path} "
                f"could not be read and are skipped: {shown} (all of them are listed in {folder / 'meta.json'}).")

        self.device, self.xflip, self.workers = torch.device(device), bool(xflip), workers
        self.name = f"folder-{folder.name}"  # names the Inception features' cache: one per content
        self.labels_np = np.load(folder / "labels.npy", allow_pickle=False)
        self.size = len(self.labels_np)
        nbytes = self.size * channels * resolution * resolution
        self.streamed = nbytes > memory_budget * 2**30
        # memorisation compares samples with as many training images as the budget holds (all, when held)
        self.held_rows = min(self.size, int(memory_budget * 2**30) // (nbytes // self.size))
        if self.streamed:
            self.images = np.load(folder / "images.npy", mmap_mode="r", allow_pickle=False)  # read by the workers
            self._loaders: dict[int, Iterator] = {}
        else:  # uint8 on the device: 4x less memory than float; converted per batch in sample()
            self.images = torch.from_numpy(np.load(folder / "images.npy", allow_pickle=False)).to(self.device)
        self.labels = torch.from_numpy(self.labels_np).to(self.device)
        self.share = (torch.arange(rank, self.size, world_size, device=self.device)  # this rank's rows
                      if world_size > 1 else None)
        if self.share is not None and not len(self.share):
            raise GanLabError(f"data.path={path} has {self.size} images, fewer than the {world_size} ranks training "
                              f"on it.")
        held = "streamed from disk" if self.streamed else f"held on {self.device}"
        say(f"[bold]data[/] {self.size:,} images{f' in {self.n_classes} classes' if self.n_classes else ''} from "
            f"{source.path}, {held} ({nbytes / 2**20:,.0f} MiB; ready in {time.perf_counter() - started:.1f} s)")

    @property
    def capturable(self) -> bool:
        """Held images are sampled on the device (gan_lab.capture's contract); streamed ones are read from disk."""
        return not self.streamed

    @property
    def not_capturable(self) -> str:
        """Why a streamed folder's sample() cannot run inside a CUDA graph."""
        return ("streams its images from disk through DataLoader workers (they exceed data.memory_budget): host "
                "I/O that a graph cannot record: a replay would not read the next batch")

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor | None]:
        """A batch drawn uniformly with replacement (from this rank's share), in [-1, 1], x-flipped per sample."""
        if self.streamed:
            x, y = next(self._loader(batch_size))
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        else:
            idx = torch.randint(self.size if self.share is None else len(self.share), (batch_size,),
                                device=self.device)
            if self.share is not None:
                idx = self.share.index_select(0, idx)
            x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
        x = x.float().div_(127.5).sub_(1.0)
        if self.xflip:  # each image mirrored left-right with probability 1/2 (StyleGAN2-ADA's --mirror)
            flip = torch.rand(batch_size, 1, 1, 1, device=x.device) < 0.5
            x = torch.where(flip, x.flip(3), x)
        return x, (y if self.n_classes else None)

    def _loader(self, batch_size: int) -> Iterator:
        if batch_size not in self._loaders:
            seed = int(torch.randint(2**62, ()))  # from the run's seed (per rank): reproducible batches
            share = self.share.cpu() if self.share is not None else torch.arange(self.size)
            loader = torch.utils.data.DataLoader(
                _Rows(self.cache_folder / "images.npy", self.labels_np), batch_size=None,
                sampler=_RandomBatches(share, batch_size, seed), num_workers=self.workers,
                pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0,
                prefetch_factor=4 if self.workers else None)
            self._loaders[batch_size] = iter(loader)
        return self._loaders[batch_size]

    def measures(self) -> tuple[InceptionScores, NearestTraining] | tuple[NearestTraining]:
        """RGB: FID, IS and KID through Inception; every folder: memorisation against its images (gan-lab eval)."""
        images = self.images
        if self.streamed:  # read-only memory map: the rows are stored shuffled, so the first ones are a uniform subset
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                images = torch.from_numpy(self.images)
        nearest = NearestTraining(self.name, images[:self.held_rows])
        return (InceptionScores(self.name, images), nearest) if self.shape[0] == 3 else (nearest,)
