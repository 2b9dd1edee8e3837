"""A folder or zip of images, read once into a resized uint8 cache (data=folder's preprocessing).

The source is a torchvision ImageFolder tree (class subfolders become labels), a flat folder
(unlabelled), or a zip in StyleGAN2-ADA dataset_tool's layout; a `dataset.json` at its top,
{"labels": [[name, label], ...]}, gives the labels instead. The cache is `images.npy` (N, C, R, R)
uint8 and `labels.npy` (N,) int64 in a folder named by a hash of the listing (relative names,
sizes, mtimes) and the preprocessing (resolution, fit, channels, background): a changed folder gets a
new cache. Transparent pixels are composited over data.background, 16-bit and float images rescaled
by their mode's range. Hidden files (.DS_Store, Thumbs.db, a Mac's ._* and __MACOSX/) are ignored,
symlinked folders followed, and a class tree wrapped in one top folder unwrapped. A cache that fails
its check on opening (truncated, no or corrupt meta.json, pickled or misshapen arrays) is rebuilt.
Rows are stored in a fixed random order, so any first n rows are a uniform subset (what the
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageOps

from gan_lab.errors import GanLabError

CACHE_FORMAT = 2  # part of the key: a new layout or decoding never reads an old one (2: alpha, 16 bits rescaled)
LABELS_FILE = "dataset.json"
HIDDEN_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})  # what Windows and a Mac's zip leave beside images


def hidden(name: str) -> bool:
    """A path ('/'-separated) that is no one's image: dot files and folders (.DS_Store, ._*), Thumbs.db, __MACOSX/."""
    return any(part.startswith(".") or part.lower() in HIDDEN_NAMES for part in name.split("/"))


def background_rgb(value: object) -> tuple[int, int, int]:
    """data.background as an RGB triple: a colour name or #rrggbb (Pillow's ImageColor), or [r, g, b] in 0..255."""
    try:
        if isinstance(value, str):
            rgb = ImageColor.getrgb(value)[:3]
        else:
            rgb = tuple(value)
            if len(rgb) != 3 or not all(type(c) is int and 0 <= c <= 255 for c in rgb):
                raise ValueError
        return (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    except (ValueError, TypeError):
        raise GanLabError(f"data.background={value!r} is not a colour: transparent pixels are composited over it. "
                          f"Give a colour name (white, black, gray), '#rrggbb' in quotes, or [r,g,b] with each "
                          f"0 to 255, e.g. data.background=white.") from None


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
    classes_in: str = ""       # the folder ('top/', or '' for data.path itself) whose subfolders are the classes
    notes: list[str] = field(default_factory=list)     # what was ignored or unwrapped: one line each
    warnings: list[str] = field(default_factory=list)  # what the user should fix: one line each


def open_source(path: str) -> Source:
    """List a folder or a .zip of images, or raise one paragraph saying what is wrong with `path`."""
    where = Path(os.path.expanduser(path)).absolute()
    images = image_extensions()
    fix = "Point data.path at a folder of images (class subfolders for labels) or a .zip of them."
    if not where.exists():
        raise GanLabError(f"data.path={path} does not exist. {fix}")
    if where.is_dir():
        listing = _list_folder(where)
        read = lambda name: (where / name).read_bytes()  # noqa: E731
    elif zipfile.is_zipfile(where):
        archive = zipfile.ZipFile(where)
        listing = sorted((i.filename, i.file_size, i.CRC) for i in archive.infolist() if not i.is_dir())
        read = archive.read
    else:
        raise GanLabError(f"data.path={path} is neither a folder nor a zip file. {fix}")
    n_hidden = sum(hidden(n) for n, *_ in listing)
    listing = [entry for entry in listing if not hidden(entry[0])]
    names = [n for n, *_ in listing if os.path.splitext(n)[1].lower() in images]
    if not names:
        raise GanLabError(f"data.path={path} holds no image files (none of {len(listing)} files has an extension "
                          f"Pillow reads, such as .png or .jpg). {fix}")
    labels_text = read(LABELS_FILE) if any(n == LABELS_FILE for n, *_ in listing) else None
    wanted = set(names) | {LABELS_FILE}  # a README or a thumbnail database beside the images changes nothing
    source = Source(where, names, [entry for entry in listing if entry[0] in wanted], read, labels_text)
    if n_hidden:
        source.notes.append(f"[bold]data[/] {n_hidden:,} hidden file(s) ignored (.DS_Store, Thumbs.db, a Mac's ._* "
                            f"and __MACOSX/, dot files)")
    if labels_text is None:
        _find_classes(source)
    return source


def _list_folder(where: Path) -> list[tuple]:
    """(name, size, mtime) of every file below `where`, symlinked folders followed once (a link loop is cut)."""
    listing, seen = [], set()
    for root, dirs, files in os.walk(where, followlinks=True):
        real = os.stat(root)
        if (real.st_dev, real.st_ino) in seen:  # a folder reached again through a link: a loop, or a second way in
            dirs[:] = []
            continue
        seen.add((real.st_dev, real.st_ino))
        dirs[:] = sorted(d for d in dirs if not hidden(d))  # hidden folders (.git, .ipynb_checkpoints, __MACOSX)
        folder = Path(root).relative_to(where).as_posix()  # once per folder: pathlib per file is the slow part
        for file in sorted(files):
            try:
                stat = os.stat(os.path.join(root, file))
            except OSError:  # a broken link: listed, so that reading it fails and it is counted as unreadable
                stat = os.stat_result((0,) * 10)
            listing.append((file if folder == "." else f"{folder}/{file}", stat.st_size, stat.st_mtime_ns))
    return listing


def _find_classes(source: Source) -> None:
    """Where the class folders are: a tree wrapped in one top folder is unwrapped; stray top images left out."""
    def split(prefix: str) -> tuple[set[str], list[str]]:
        rest = [n[len(prefix):] for n in source.names]
        return {r.split("/")[0] for r in rest if "/" in r}, [prefix + r for r in rest if "/" not in r]

    prefix, (folders, at_top) = "", split("")
    while not at_top and len(folders) == 1:  # one folder holding everything (a zip of the folder, not its content)
        prefix += folders.pop() + "/"
        folders, at_top = split(prefix)
    if len(folders) < 2:  # no class tree inside: as before (one top folder is one class; images at the top: flat)
        return
    source.classes_in = prefix
    if prefix:
        source.notes.append(f"[bold]data[/] the class folders sit inside {prefix} in {source.path}: its "
                            f"{len(folders)} subfolders are the classes")
    if at_top:  # two or more class folders and images beside them: the images belong to no class
        stray = set(at_top)
        source.names = [n for n in source.names if n not in stray]
        shown = ", ".join(at_top[:5]) + (", ..." if len(at_top) > 5 else "")
        source.warnings.append(
            f"[yellow]warning:[/] {len(at_top)} image(s) sit beside the {len(folders)} class folders of "
            f"{source.path / prefix} and belong to no class: {shown}. They are left out of training; move each "
            f"into its class folder to train on it.")


def read_labels(source: Source) -> tuple[list[int] | None, list[str]]:
    """Each image's label and the class names: dataset.json's, else the class subfolders', else none."""
    if source.labels_text is not None:
        return _labels_from_json(source)
    inner = [name[len(source.classes_in):] for name in source.names]
    tops = [name.split("/")[0] for name in inner]
    if any("/" not in name for name in inner):  # images at the top: a flat, unlabelled folder
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


def cache_key(source: Source, resolution: int, fit: str, channels: int, background: tuple[int, int, int]) -> str:
    """A hash of the listing (names, sizes, mtimes) and the preprocessing: the cache folder's name."""
    content = json.dumps([CACHE_FORMAT, source.listing, resolution, fit, channels, list(background)]).encode()
    return hashlib.sha256(content).hexdigest()[:24]


def cache_root(cache: str | None) -> Path:
    """Where folder caches live: data.cache, else $GAN_LAB_CACHE/folders, else ~/.cache/gan-lab/folders."""
    if cache:
        return Path(os.path.expanduser(cache))
    return Path(os.path.expanduser(os.environ.get("GAN_LAB_CACHE", "~/.cache/gan-lab"))) / "folders"


def decode(data: bytes, resolution: int, fit: str, channels: int, background: tuple[int, int, int]) -> np.ndarray:
    """One image file -> uint8 (C, R, R): EXIF orientation, 8 bits, alpha over `background`, centre-crop or pad."""
    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened)  # a phone photo stored sideways stands up
        image = _eight_bits(image, opened)
        if image.has_transparency_data:  # RGBA, LA, PA, or P / L / RGB with a transparent colour (tRNS)
            # composite before resizing: resampling straight alpha would bleed the colour stored under it
            image = Image.alpha_composite(Image.new("RGBA", image.size, (*background, 255)), image.convert("RGBA"))
        image = image.convert("RGB" if channels == 3 else "L")  # CMYK, YCbCr, 1, ... convert
    size = (resolution, resolution)
    if fit == "crop":
        image = ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)  # the centre square, resized
    else:
        image = ImageOps.pad(image, size, method=Image.Resampling.LANCZOS, color=0)  # all of it, black bars
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _eight_bits(image: Image.Image, opened: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grey image rescaled by its mode's range to 8-bit L (Pillow's convert clips)."""
    if image.mode.startswith("I;16"):  # I;16, I;16B, I;16L: 0..65535 -> 0..255, rounded (32768 -> 128)
        values, top = np.asarray(image).astype(np.float64), 65535.0
    elif image.mode == "I":
        # 32-bit integers have no range of their own: assume what the file declares, TIFF's BitsPerSample
        # (signed when SampleFormat says so: 0..2**31-1), else 16 bits (PNG and PGM carry at most 16 here);
        # negative values clip to 0
        bits, signed = _tiff_tag(opened, 258, 16), _tiff_tag(opened, 339, 1) == 2  # BitsPerSample, SampleFormat
        values, top = np.asarray(image).astype(np.float64), float(2 ** (bits - signed) - 1)
    elif image.mode == "F":  # float: assume 0..1 (as most tools write them), clip outside; NaN -> 0
        values, top = np.nan_to_num(np.asarray(image, dtype=np.float64)), 1.0
    else:
        return image
    return Image.fromarray(np.rint(np.clip(values / top, 0.0, 1.0) * 255.0).astype(np.uint8), "L")


def _tiff_tag(image: Image.Image, tag: int, default: int) -> int:
    """A TIFF tag's first value (Pillow gives one value or a tuple per sample), or `default` for other formats."""
    return int(np.ravel(getattr(image, "tag_v2", {}).get(tag, default))[0])


# What Pillow raises for a file it cannot read: broken, truncated, not the image its name says, too large.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def build(source: Source, labels: list[int] | None, resolution: int, fit: str, channels: int,
          background: tuple[int, int, int], target: Path,
          progress: Callable[[int], None] = lambda done: None) -> list[str]:
    """Decode every image into `target`/images.npy and labels.npy in a fixed random order; the skipped names."""
    n = len(source.names)
    order = np.random.default_rng(0).permutation(n)  # row k holds image order[k]: any first rows are a uniform subset
    rows = np.lib.format.open_memmap(target / "images.npy", mode="w+", dtype=np.uint8,
                                     shape=(n, channels, resolution, resolution))  # on disk: bounded memory
    kept, skipped = [], []
    for done, i in enumerate(order):
        name = source.names[i]
        try:
            rows[len(kept)] = decode(source.read(name), resolution, fit, channels, background)
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
                  channels: int, cache: str | None, *, background: tuple[int, int, int],
                  on_build: Callable[[int], None] = lambda n: None,
                  on_broken: Callable[[Path, str], None] = lambda folder, why: None,
                  progress: Callable[[int], None] = lambda done: None) -> tuple[Path, dict]:
    """The cache folder of this source and preprocessing and its checked meta.json, built first when there is none.

    One process builds (under a file lock, into a temporary folder renamed into place once complete);
    a process that finds the lock held waits for it and reads what the builder left. A cache that fails
    its check (check_cache) is removed and built again, after on_broken(folder, why).
    """
    from filelock import FileLock  # torch's own dependency

    root = cache_root(cache)
    key = cache_key(source, resolution, fit, channels, background)
    final = root / key
    try:
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / f"{key}.lock")):
            meta, why = check_cache(final, resolution, channels) if os.path.lexists(final) else (None, "")
            if meta is not None:
                return final, meta
            if why:  # a folder is there but is not a whole cache: remove it, or the rename below cannot land
                on_broken(final, why)
                shutil.rmtree(final) if final.is_dir() and not final.is_symlink() else final.unlink()
            on_build(len(source.names))
            building = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
            try:
                skipped = build(source, labels, resolution, fit, channels, background, building, progress)
                meta = {"source": str(source.path), "images": len(source.names) - len(skipped),
                        "skipped": skipped, "classes": classes, "resolution": resolution, "fit": fit,
                        "channels": channels, "background": list(background)}
                (building / "meta.json").write_text(json.dumps(meta, indent=1))
                os.rename(building, final)  # atomic: a reader sees no cache or a whole one
            finally:
                shutil.rmtree(building, ignore_errors=True)
    except OSError as err:
        raise GanLabError(f"The image cache could not be written at {root} ({err.strerror or err}). Point "
                          f"data.cache (or $GAN_LAB_CACHE) at a writable folder with room for "
                          f"{len(source.names)} images of {channels}x{resolution}x{resolution} bytes.") from None
    return final, meta


def check_cache(folder: Path, resolution: int, channels: int) -> tuple[dict | None, str]:
    """A cache's meta.json when its files are whole and agree with it, else (None, why not): nothing is trusted."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        return None, "it has no meta.json: a build was interrupted or the folder was edited by hand"
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None, f"its meta.json is not readable JSON ({err})"
    if not (isinstance(meta, dict) and type(meta.get("images")) is int and meta["images"] > 0
            and isinstance(meta.get("skipped"), list) and all(isinstance(n, str) for n in meta["skipped"])
            and isinstance(meta.get("classes"), list) and all(isinstance(c, str) for c in meta["classes"])):
        return None, "its meta.json lacks the image count, the skipped files or the class names"
    n, n_classes = meta["images"], len(meta["classes"])
    try:  # a memory map reads the header and checks the file's length: nothing is read into memory
        images = np.load(folder / "images.npy", mmap_mode="r", allow_pickle=False)
        labels = np.load(folder / "labels.npy", allow_pickle=False)  # a pickled array is refused, never run
    except (OSError, ValueError, EOFError) as err:
        return None, f"its arrays could not be read ({err})"
    if images.dtype != np.uint8 or images.shape != (n, channels, resolution, resolution):
        return None, (f"images.npy holds {images.dtype} {images.shape}, not the uint8 "
                      f"{(n, channels, resolution, resolution)} its meta.json describes")
    if labels.dtype != np.int64 or labels.shape != (n,):
        return None, f"labels.npy holds {labels.dtype} {labels.shape}, not int64 ({n},)"
    low, high = (0, n_classes - 1) if n_classes else (-1, -1)  # -1: unlabelled
    if labels.min() < low or labels.max() > high:
        return None, f"labels.npy holds labels outside {low}..{high} for its {n_classes} classes"
    return meta, ""
