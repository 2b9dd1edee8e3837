"""A folder or zip of images, read once into a resized uint8 cache (data=folder's preprocessing).

The source is a torchvision ImageFolder tree (class subfolders become labels), a flat folder
(unlabelled), or a zip in StyleGAN2-ADA dataset_tool's layout; a `dataset.json` at its top,
{"labels": [[name, label], ...]}, gives the labels instead. The cache is `images.npy` (N, C, R, R)
uint8 and `labels.npy` (N,) int64 in a folder named by a hash of the listing (relative names,
sizes, mtimes) and the preprocessing (resolution, fit, channels): a changed folder gets a new
cache. Rows are stored in a fixed random order, so any first n rows are a uniform subset (what the
metrics read). Several jobs starting on one folder at once (a SLURM array, torchrun's ranks) take
a file lock: one builds into a temporary folder and renames it into place, the others wait and read.
Nothing read from the cache runs code (np.load with allow_pickle=False, json).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from gan_lab.errors import GanLabError

CACHE_FORMAT = 1  # part of the key: a new layout of the cache never reads an old one
LABELS_FILE = "dataset.json"


def image_extensions() -> frozenset[str]:
    """The file extensions Pillow can open (.png, .jpg, .webp, ...): other files are not images."""
    Image.init()
    return frozenset(ext.lower() for ext in Image.registered_extensions())


@dataclass
class Source:
    """What is in a folder or zip: its image names (sorted, relative, '/'-separated) and how to read one."""

    path: Path
    names: list[str]
    listing: list[tuple]   # (name, size, mtime or crc) of the images and dataset.json: the cache key's content
    read: Callable[[str], bytes]
    labels_text: bytes | None  # dataset.json, when there is one


def open_source(path: str) -> Source:
    """List a folder or a .zip of images, or raise one paragraph saying what is wrong with `path`."""
    where = Path(os.path.expanduser(path)).absolute()
    images = image_extensions()
    fix = "Point data.path at a folder of images (class subfolders for labels) or a .zip of them."
    if not where.exists():
        raise GanLabError(f"data.path={path} does not exist. {fix}")
    if where.is_dir():
        listing = []
        for root, dirs, files in os.walk(where):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # hidden folders (.git, .ipynb_checkpoints)
            folder = Path(root).relative_to(where).as_posix()  # once per folder: pathlib per file is the slow part
            for file in sorted(files):
                stat = os.stat(os.path.join(root, file))
                listing.append((file if folder == "." else f"{folder}/{file}", stat.st_size, stat.st_mtime_ns))
        read = lambda name: (where / name).read_bytes()  # noqa: E731
    elif zipfile.is_zipfile(where):
        archive = zipfile.ZipFile(where)
        listing = sorted((i.filename, i.file_size, i.CRC) for i in archive.infolist() if not i.is_dir())
        read = archive.read
    else:
        raise GanLabError(f"data.path={path} is neither a folder nor a zip file. {fix}")
    names = [n for n, *_ in listing if os.path.splitext(n)[1].lower() in images]
    if not names:
        raise GanLabError(f"data.path={path} holds no image files (none of {len(listing)} files has an extension "
                          f"Pillow reads, such as .png or .jpg). {fix}")
    labels_text = read(LABELS_FILE) if any(n == LABELS_FILE for n, *_ in listing) else None
    wanted = set(names) | {LABELS_FILE}  # a README or a thumbnail database beside the images changes nothing
    return Source(where, names, [entry for entry in listing if entry[0] in wanted], read, labels_text)


def read_labels(source: Source) -> tuple[list[int] | None, list[str]]:
    """Each image's label and the class names: dataset.json's, else the class subfolders', else none."""
    if source.labels_text is not None:
        return _labels_from_json(source)
    tops = [name.split("/")[0] for name in source.names]
    if any("/" not in name for name in source.names):  # images at the top: a flat, unlabelled folder
        return None, []
    classes = sorted(set(tops))  # torchvision's ImageFolder: sorted class folder names -> 0, 1, ...
    index = {c: i for i, c in enumerate(classes)}
    return [index[t] for t in tops], classes


def _labels_from_json(source: Source) -> tuple[list[int] | None, list[str]]:
    where = source.path / LABELS_FILE
    fix = (f"Its form (StyleGAN2-ADA's dataset_tool) is {{\"labels\": [[\"<image name>\", <class index>], ...]}} "
           f"with one entry per image, or {{\"labels\": null}} for none; fix or remove it.")
    try:
        labels = json.loads(source.labels_text).get("labels")
    except (ValueError, AttributeError) as err:
        raise GanLabError(f"{where} is not a labels file gan-lab can read ({err}). {fix}") from None
    if labels is None:
        return None, []
    if not (isinstance(labels, list) and all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                             and type(e[1]) is int and e[1] >= 0 for e in labels)):
        raise GanLabError(f"{where}: 'labels' must be a list of [name, class index >= 0] pairs. {fix}")
    given = dict(labels)
    missing = [n for n in source.names if n not in given]
    unknown = sorted(set(given) - set(source.names))
    if missing or unknown:
        what = "; ".join(part for part in (
            missing and f"{len(missing)} image(s) have no label (e.g. {', '.join(missing[:3])})",
            unknown and f"{len(unknown)} label(s) name no image file (e.g. {', '.join(unknown[:3])})") if part)
        raise GanLabError(f"{where} does not match the images beside it: {what}. {fix}")
    n_classes = max(given.values()) + 1
    return [given[n] for n in source.names], [str(c) for c in range(n_classes)]


def cache_key(source: Source, resolution: int, fit: str, channels: int) -> str:
    """A hash of the listing (names, sizes, mtimes) and the preprocessing: the cache folder's name."""
    content = json.dumps([CACHE_FORMAT, source.listing, resolution, fit, channels]).encode()
    return hashlib.sha256(content).hexdigest()[:24]


def cache_root(cache: str | None) -> Path:
    """Where folder caches live: data.cache, else $GAN_LAB_CACHE/folders, else ~/.cache/gan-lab/folders."""
    if cache:
        return Path(os.path.expanduser(cache))
    return Path(os.path.expanduser(os.environ.get("GAN_LAB_CACHE", "~/.cache/gan-lab"))) / "folders"


def decode(data: bytes, resolution: int, fit: str, channels: int) -> np.ndarray:
    """One image file -> uint8 (C, R, R): EXIF orientation applied, any mode to RGB or L, centre-crop or pad."""
    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened)  # a phone photo stored sideways stands up
        if image.mode == "P" or image.mode == "PA":
            image = image.convert("RGBA")  # a palette with transparency converts cleanly through RGBA
        image = image.convert("RGB" if channels == 3 else "L")  # RGBA drops alpha; CMYK, I, F, LA ... convert
    size = (resolution, resolution)
    if fit == "crop":
        image = ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)  # the centre square, resized
    else:
        image = ImageOps.pad(image, size, method=Image.Resampling.LANCZOS, color=0)  # all of it, black bars
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


# What Pillow raises for a file it cannot read: broken, truncated, not the image its name says, too large.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def build(source: Source, labels: list[int] | None, resolution: int, fit: str, channels: int,
          target: Path, progress: Callable[[int], None] = lambda done: None) -> list[str]:
    """Decode every image into `target`/images.npy and labels.npy in a fixed random order; the skipped names."""
    n = len(source.names)
    order = np.random.default_rng(0).permutation(n)  # row k holds image order[k]: any first rows are a uniform subset
    rows = np.lib.format.open_memmap(target / "images.npy", mode="w+", dtype=np.uint8,
                                     shape=(n, channels, resolution, resolution))  # on disk: bounded memory
    kept, skipped = [], []
    for done, i in enumerate(order):
        name = source.names[i]
        try:
            rows[len(kept)] = decode(source.read(name), resolution, fit, channels)
        except UNREADABLE:
            skipped.append(name)
            continue
        kept.append(i)
        if done % 1000 == 999:
            progress(done + 1)
    if not kept:
        raise GanLabError(f"data.path={source.path}: none of its {n} image files could be read by Pillow "
                          f"(e.g. {', '.join(sorted(skipped)[:3])}). Check that they are images and not empty.")
    rows.flush()
    if skipped:  # keep only the rows written: a sequential copy into a file of the right length
        del rows
        _truncate(target / "images.npy", len(kept))
    y = np.asarray([labels[i] for i in kept] if labels is not None else [-1] * len(kept), dtype=np.int64)
    np.save(target / "labels.npy", y, allow_pickle=False)
    return sorted(skipped)


def _truncate(file: Path, n: int, chunk: int = 4096) -> None:
    full = np.load(file, mmap_mode="r", allow_pickle=False)
    short = np.lib.format.open_memmap(file.with_suffix(".tmp"), mode="w+", dtype=np.uint8,
                                      shape=(n, *full.shape[1:]))
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        short[start:end] = full[start:end]
    short.flush()
    del full, short
    os.replace(file.with_suffix(".tmp"), file)


def load_or_build(source: Source, labels: list[int] | None, classes: list[str], resolution: int, fit: str,
                  channels: int, cache: str | None, on_build: Callable[[int], None] = lambda n: None,
                  progress: Callable[[int], None] = lambda done: None) -> tuple[Path, dict]:
    """The cache folder of this source and preprocessing and its meta.json, built first when there is none.

    One process builds (under a file lock, into a temporary folder renamed into place once complete);
    a process that finds the lock held waits for it and reads what the builder left.
    """
    from filelock import FileLock  # torch's own dependency

    root = cache_root(cache)
    key = cache_key(source, resolution, fit, channels)
    final = root / key
    try:
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / f"{key}.lock")):
            if not (final / "meta.json").exists():
                on_build(len(source.names))
                building = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
                try:
                    skipped = build(source, labels, resolution, fit, channels, building, progress)
                    meta = {"source": str(source.path), "images": len(source.names) - len(skipped),
                            "skipped": skipped, "classes": classes, "resolution": resolution, "fit": fit,
                            "channels": channels}
                    (building / "meta.json").write_text(json.dumps(meta, indent=1))
                    os.rename(building, final)  # atomic: a reader sees no cache or a whole one
                finally:
                    shutil.rmtree(building, ignore_errors=True)
    except OSError as err:
        raise GanLabError(f"The image cache could not be written at {root} ({err.strerror or err}). Point "
                          f"data.cache (or $GAN_LAB_CACHE) at a writable folder with room for "
                          f"{len(source.names)} images of {channels}x{resolution}x{resolution} bytes.") from None
    return final, json.loads((final / "meta.json").read_text())
