"""Images as people have them (#31): transparency, 16-bit and float files, Mac zips, symlinks, broken caches."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import TINY, TINY_DCGAN, run_cli, user_error
from gan_lab.folder import FolderData
from gan_lab.image_cache import decode

WHITE = (255, 255, 255)
ORANGE = (255, 128, 0)


def folder(path: Path, cache: Path, **kwargs) -> FolderData:
    return FolderData(str(path), **{"resolution": 32, "cache": str(cache), "workers": 0, "say": print, **kwargs})


def rows(data: FolderData) -> np.ndarray:
    """The cached images a FolderData reads, held (a tensor) or streamed (a memory map)."""
    return data.images.cpu().numpy() if torch.is_tensor(data.images) else np.asarray(data.images)


def cut_out(mode: str, path: Path) -> Path:
    """A 32x32 `mode` image: an opaque 16x16 centre (red, or grey 90 for greyscale modes) on a transparent rest,
    whose stored colour under the transparency is black (what the issue's real icons held)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255) if mode in ("RGBA", "P") else (90, 90, 90, 255), (8, 8, 24, 24))
    if mode == "RGBA":
        rgba.save(path)
    elif mode == "LA":
        rgba.convert("LA").save(path)
    elif mode == "P":  # a palette whose entry 0 (black) is transparent: PNG's tRNS, GIF's transparency index
        palette = Image.new("P", (32, 32), 0)
        palette.putpalette([0, 0, 0, 255, 0, 0])
        palette.paste(1, (8, 8, 24, 24))
        palette.save(path, transparency=0)
    elif mode == "RGB":  # a truecolour PNG whose transparent colour (tRNS) is black
        rgba.convert("RGB").convert("L").convert("RGB").save(path, transparency=(0, 0, 0))
    return path


CUT_OUTS = [("RGBA", "png"), ("LA", "png"), ("P", "png"), ("P", "gif"), ("RGB", "png")]


@pytest.mark.parametrize("mode, suffix", CUT_OUTS)
@pytest.mark.parametrize("channels", [3, 1])
def test_transparent_pixels_are_composited_over_the_background(mode: str, suffix: str, channels: int,
                                                               tmp_path: Path) -> None:
    data = cut_out(mode, tmp_path / f"x.{suffix}").read_bytes()
    for background in (WHITE, ORANGE):
        image = decode(data, 32, "crop", channels, background).astype(int)
        grey_background = round(np.dot(background, (0.299, 0.587, 0.114)))  # Pillow's L from RGB (ITU-R 601-2)
        corner = tuple(image[:, 0, 0])
        assert corner == (background if channels == 3 else (grey_background,))  # the background, not black
        centre = (255, 0, 0) if mode in ("RGBA", "P") else (90, 90, 90)
        expected = centre if channels == 3 else (round(np.dot(centre, (0.299, 0.587, 0.114))),)
        assert np.abs(image[:, 16, 16] - expected).max() <= 1  # the opaque part untouched


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("archive", [False, True])
def test_every_path_reads_the_background_and_a_new_one_rebuilds(streamed: bool, archive: bool,
                                                                 tmp_path: Path) -> None:
    images = tmp_path / "icons"
    for i, (mode, suffix) in enumerate(CUT_OUTS):
        cut_out(mode, images / f"{i}.{suffix}")
    if archive:
        with zipfile.ZipFile(tmp_path / "icons.zip", "w") as z:
            for file in sorted(images.iterdir()):
                z.write(file, file.name)
        images = tmp_path / "icons.zip"
    budget = {"memory_budget": 1e-9} if streamed else {}
    white = folder(images, tmp_path / "cache", **budget)
    orange = folder(images, tmp_path / "cache", background=[255, 128, 0], **budget)
    assert white.streamed == orange.streamed == streamed
    assert white.cache_folder != orange.cache_folder  # the background is part of the cache's key
    for data, colour in ((white, WHITE), (orange, ORANGE)):
        corners = rows(data)[:, :, 0, 0]
        assert (corners == colour).all(), corners  # every image, every mode: the chosen background


def test_the_first_start_says_the_background_and_bad_ones_exit_2(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    images = tmp_path / "icons"
    for i in range(4):
        cut_out("RGBA", images / f"{i}.png")
    common = ["train", "data=folder", f"data.path={images}", "data.resolution=32", f"data.cache={tmp_path / 'c'}",
              *TINY, "model=dcgan", *TINY_DCGAN, "train.steps=1", "train.batch_size=4", "threads=1"]
    run_cli(*common, "data.background=black", f"hydra.run.dir={tmp_path / 'run'}")
    out = " ".join("".join(capsys.readouterr()).split())
    assert "cache, transparent pixels over black (0, 0, 0)" in out
    for i, bad in enumerate(("notacolour", "[300,0,0]", "[1,2]", "'#12345'")):
        message = user_error(capsys, *common, f"data.background={bad}", f"hydra.run.dir={tmp_path / str(i)}")
        assert "is not a colour: transparent pixels are composited over it" in message
        assert "e.g. data.background=white" in message and not (tmp_path / str(i) / "checkpoints").exists()
    run_cli(*common, "data.background='#ff8000'", f"hydra.run.dir={tmp_path / 'hex'}")  # '#': quoted for Hydra
    assert "transparent pixels over #ff8000 (255, 128, 0)" in " ".join("".join(capsys.readouterr()).split())


def test_help_documents_white_as_the_background(capsys: pytest.CaptureFixture) -> None:
    import inspect

    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", "--help", "data=folder")
    out = " ".join("".join(capsys.readouterr()).split())
    assert exit_info.value.code == 0
    assert "data.background= colour under transparent pixels" in out and "(default: white)" in out
    assert inspect.signature(FolderData).parameters["background"].default == "white"  # held equal to the YAML


# ---- bit depth ------------------------------------------------------------------------------------

@pytest.mark.parametrize("array, suffix, expected", [
    (np.full((32, 32), 32768, np.uint16), "png", 128),        # 16-bit PNG (I;16): mid-grey, not 255
    (np.full((32, 32), 65535, np.uint16), "png", 255),
    (np.full((32, 32), 257 * 40, ">u2"), "tif", 40),          # I;16B
    (np.full((32, 32), 0.5, np.float32), "tif", 128),         # F: 0..1, not 0
    (np.full((32, 32), 2.0, np.float32), "tif", 255),         # F beyond 1: clipped
    (np.full((32, 32), -1.0, np.float32), "tif", 0),
    (np.full((32, 32), 2**29, np.int32), "tif", 64),          # 32-bit signed TIFF: 2**29 / (2**31 - 1) * 255
])
@pytest.mark.parametrize("channels", [3, 1])
def test_deep_images_are_rescaled_by_their_range(array: np.ndarray, suffix: str, expected: int, channels: int,
                                                tmp_path: Path) -> None:
    file = tmp_path / f"deep.{suffix}"
    Image.fromarray(array).save(file)
    image = decode(file.read_bytes(), 32, "crop", channels, WHITE)
    assert image.shape == (channels, 32, 32) and np.abs(image.astype(int) - expected).max() <= 1


# ---- folders as people have them --------------------------------------------------------------------

def solid(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)


def test_symlinked_class_folders_are_followed_and_a_loop_is_cut(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "blue"
    for i in range(3):
        solid(tmp_path / "images" / "red" / f"{i}.png", (255, 0, 0))
        solid(elsewhere / f"{i}.png", (0, 0, 255))
    (tmp_path / "images" / "blue").symlink_to(elsewhere, target_is_directory=True)
    (tmp_path / "images" / "red" / "again").symlink_to(tmp_path / "images", target_is_directory=True)  # a loop
    data = folder(tmp_path / "images", tmp_path / "cache")
    assert (data.size, data.n_classes) == (6, 2) and not data.skipped


def mac_zip(path: Path, wrapped: str = "") -> Path:
    """A zip as a Mac's Finder makes it: __MACOSX/ with ._ resource forks, ._ files and .DS_Store beside."""
    with zipfile.ZipFile(path, "w") as z:
        for colour, rgb in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
            for i in range(3):
                solid(path.parent / "src" / f"{colour}{i}.png", rgb)
                z.write(path.parent / "src" / f"{colour}{i}.png", f"{wrapped}{colour}/{i}.png")
                z.writestr(f"__MACOSX/{wrapped}{colour}/._{i}.png", b"\x00\x05\x16\x07 AppleDouble")
            z.writestr(f"{wrapped}{colour}/._{i}.png", b"\x00\x05\x16\x07 AppleDouble")
        z.writestr(f"{wrapped}.DS_Store", b"\x00\x00\x00\x01Bud1")
        z.writestr(f"{wrapped}blue/Thumbs.db", b"\xd0\xcf\x11\xe0")
    return path


@pytest.mark.parametrize("wrapped", ["", "icons/"])
def test_a_zip_made_on_a_mac_has_its_classes_and_no_phantom(wrapped: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    data = folder(mac_zip(tmp_path / "mac.zip", wrapped), tmp_path / "cache")
    out = " ".join("".join(capsys.readouterr()).split())
    assert (data.size, data.n_classes, data.skipped) == (6, 2, [])  # no __MACOSX class, nothing "unreadable"
    assert json.loads((data.cache_folder / "meta.json").read_text())["classes"] == ["blue", "red"]
    x, y = data.sample(64)
    assert torch.equal((x[:, 2].mean((1, 2)) > x[:, 0].mean((1, 2))).long(), 1 - y)  # blue -> 0, red -> 1
    # 6 ._ in __MACOSX/, 2 beside the images, .DS_Store and Thumbs.db
    assert out.count("hidden file(s) ignored") == 1 and "10 hidden file(s) ignored" in out
    assert ("the class folders sit inside icons/" in out and "its 2 subfolders are the classes" in out) == bool(wrapped)


def test_hidden_files_in_a_folder_are_ignored_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for i in range(3):
        solid(tmp_path / "images" / "red" / f"{i}.png", (255, 0, 0))
        solid(tmp_path / "images" / "blue" / f"{i}.png", (0, 0, 255))
    (tmp_path / "images" / "red" / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "images" / ".DS_Store").write_bytes(b"Bud1")
    (tmp_path / "images" / "blue" / "Thumbs.db").write_bytes(b"\xd0\xcf")
    data = folder(tmp_path / "images", tmp_path / "cache")
    out = " ".join("".join(capsys.readouterr()).split())
    assert (data.size, data.n_classes, data.skipped) == (6, 2, [])
    assert out.count("3 hidden file(s) ignored") == 1


def test_a_stray_image_beside_the_class_folders_is_named_and_left_out(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    for i in range(3):
        solid(tmp_path / "images" / "red" / f"{i}.png", (255, 0, 0))
        solid(tmp_path / "images" / "blue" / f"{i}.png", (0, 0, 255))
    solid(tmp_path / "images" / "cover.png", (0, 255, 0))
    solid(tmp_path / "images" / "preview.jpg", (0, 255, 0))
    data = folder(tmp_path / "images", tmp_path / "cache")
    out = " ".join("".join(capsys.readouterr()).split())
    assert (data.size, data.n_classes) == (6, 2)  # labelled, not read as one flat unlabelled folder
    assert out.count("belong to no class") == 1 and "2 image(s) sit beside the 2 class folders" in out
    assert "cover.png, preview.jpg" in out and "left out of training" in out
    assert (rows(data)[:, 1] == 0).all()  # no green image was read


# ---- the cache --------------------------------------------------------------------------------------

class _Touch:
    """Pickled, it would create a file when unpickled: a cache must never run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _break(how: str, cache: Path, tmp_path: Path) -> None:
    images, labels, meta = cache / "images.npy", cache / "labels.npy", cache / "meta.json"
    if how == "truncated images.npy":
        images.write_bytes(images.read_bytes()[:-100])
    elif how == "corrupt meta.json":
        meta.write_text('{"images": 12, "skipp')
    elif how == "no meta.json":
        meta.unlink()
    elif how == "pickled labels.npy":
        np.save(labels, np.array([_Touch(tmp_path / "ran")] * 12, dtype=object), allow_pickle=True)
    elif how == "wrong shape":
        np.save(images, np.zeros((12, 3, 16, 16), np.uint8))
    elif how == "wrong dtype":
        np.save(labels, np.zeros(12, np.float32))
    elif how == "labels out of range":
        np.save(labels, np.full(12, 7, np.int64))
    elif how == "meta.json not an object":
        meta.write_text("[1, 2]")


BREAKS = ["truncated images.npy", "corrupt meta.json", "no meta.json", "pickled labels.npy", "wrong shape",
          "wrong dtype", "labels out of range", "meta.json not an object"]


@pytest.mark.parametrize("how", BREAKS)
@pytest.mark.parametrize("streamed", [False, True])
def test_a_cache_that_fails_its_check_is_rebuilt_with_one_line(how: str, streamed: bool, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    for i in range(6):
        solid(tmp_path / "images" / "red" / f"{i}.png", (255, 0, 0))
        solid(tmp_path / "images" / "blue" / f"{i}.png", (0, 0, 255))
    budget = {"memory_budget": 1e-9} if streamed else {}
    first = folder(tmp_path / "images", tmp_path / "cache", **budget)
    expected = rows(first).copy()
    _break(how, first.cache_folder, tmp_path)
    capsys.readouterr()
    again = folder(tmp_path / "images", tmp_path / "cache", **budget)
    out = " ".join("".join(capsys.readouterr()).split())
    assert out.count("failed its check") == 1 and "building it again" in out and "reading 12 images" in out
    assert again.cache_folder == first.cache_folder and np.array_equal(rows(again), expected)
    x, y = again.sample(32)
    assert torch.equal((x[:, 2].mean((1, 2)) > x[:, 0].mean((1, 2))).long(), 1 - y)
    assert not (tmp_path / "ran").exists()  # nothing in the cache was run
    folder(tmp_path / "images", tmp_path / "cache", **budget)  # the rebuilt cache passes: no line the next time
    assert "failed its check" not in "".join(capsys.readouterr())


# ---- a fresh look: a folder of transparent icons --------------------------------------------------

def icons(root: Path) -> list[np.ndarray]:
    """Six black-outlined shapes on a transparent background (stored as transparent black), and each as it
    looks over white: the 32x32 RGB pictures the cache should hold."""
    shapes = [lambda d: d.ellipse((6, 6, 25, 25), outline=(0, 0, 0, 255), width=2),
              lambda d: d.rectangle((6, 6, 25, 25), outline=(0, 0, 0, 255), width=2),
              lambda d: d.polygon([(16, 4), (28, 27), (4, 27)], outline=(0, 0, 0, 255), width=2),
              lambda d: (d.line((4, 16, 28, 16), fill=(0, 0, 0, 255), width=3),
                         d.line((16, 4, 16, 28), fill=(0, 0, 0, 255), width=3)),
              lambda d: d.ellipse((10, 4, 22, 28), outline=(0, 0, 0, 255), width=2),
              lambda d: d.rectangle((4, 10, 28, 22), outline=(0, 0, 0, 255), width=2)]
    looks = []
    root.mkdir(parents=True)
    for i, draw in enumerate(shapes):
        icon = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
        draw(ImageDraw.Draw(icon))
        icon.save(root / f"icon{i}.png")
        over_white = Image.alpha_composite(Image.new("RGBA", (32, 32), (255, 255, 255, 255)), icon)
        looks.append(np.asarray(over_white.convert("RGB")).transpose(2, 0, 1).astype(int))
    return looks


def test_a_folder_of_transparent_icons_trains_on_the_icons_as_they_look(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    looks = icons(tmp_path / "icons")
    run_cli("train", "data=folder", f"data.path={tmp_path / 'icons'}", "data.resolution=32",
            f"data.cache={tmp_path / 'cache'}", *TINY, "model=dcgan", *TINY_DCGAN, "train.steps=2",
            "train.batch_size=4", "threads=1", f"hydra.run.dir={tmp_path / 'run'}")
    out = " ".join("".join(capsys.readouterr()).split())
    [meta] = (tmp_path / "cache").glob("*/meta.json")
    cached = np.load(meta.parent / "images.npy", allow_pickle=False).astype(int)
    assert len(cached) == 6
    matched = sorted(min(range(6), key=lambda k: np.abs(row - looks[k]).max()) for row in cached)
    assert matched == list(range(6))  # each icon once
    for row in cached:
        assert min(np.abs(row - look).max() for look in looks) <= 2  # as the icon looks over white
        assert 0.5 < (row == 255).mean() < 0.95 and (row < 64).mean() > 0.04  # white ground, black outlines
    assert len({row.tobytes() for row in cached}) == 6  # no two different icons became one
    assert "transparent pixels over white" in out and json.loads(meta.read_text())["background"] == [255, 255, 255]
    assert os.path.isdir(tmp_path / "run" / "checkpoints")
