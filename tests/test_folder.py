"""data=folder: class-folder trees, flat folders and zips of images, read once into a resized uint8 cache."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, TINY_DCGAN, run_cli, user_error
from gan_lab import image_cache
from gan_lab.folder import FolderData
from gan_lab.image_cache import decode, load_or_build, open_source, read_labels

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 36), mode: str = "RGB") -> Path:
    """A one-colour image file (Pillow picks the format from the name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path)
    return path


def two_classes(root: Path, n: int = 6) -> Path:
    """An ImageFolder tree: red/ and blue/ (n images each, PNG and JPEG), and a non-image file."""
    for i in range(n):
        solid(root / "red" / f"{i}.png", RED)
        solid(root / "blue" / f"{i}.jpg", BLUE)
    (root / "README.txt").write_text("not an image")
    return root


def folder(path: Path, cache: Path, **kwargs) -> FolderData:
    return FolderData(str(path), **{"resolution": 32, "cache": str(cache), "workers": 0, **kwargs})


def colour_of(x: torch.Tensor) -> torch.Tensor:
    """0 for a red image, 1 for a blue one (x in [-1, 1], (N, 3, H, W))."""
    return (x[:, 2].mean((1, 2)) > x[:, 0].mean((1, 2))).long()


def test_a_class_folder_tree_gives_labels_and_ignores_other_files(tmp_path: Path) -> None:
    data = folder(two_classes(tmp_path / "images"), tmp_path / "cache")
    assert (data.size, data.n_classes, data.shape) == (12, 2, (3, 32, 32)) and not data.skipped
    x, y = data.sample(64)
    assert x.shape == (64, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(colour_of(x), 1 - y)  # sorted class folders: blue -> 0, red -> 1, as ImageFolder


def test_a_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    for i in range(3):
        solid(tmp_path / "flat" / f"{i}.png", RED)
        solid(tmp_path / "flat" / "deeper" / f"{i}.png", BLUE)  # read too: a flat folder is read to the bottom
    data = folder(tmp_path / "flat", tmp_path / "cache")
    x, y = data.sample(8)
    assert (data.size, data.n_classes, y) == (6, 0, None) and x.shape == (8, 3, 32, 32)


def test_a_zip_with_dataset_json_labels(tmp_path: Path) -> None:
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i, colour in enumerate([RED, BLUE, RED, BLUE]):
            solid(tmp_path / "src" / f"{i}.png", colour)
            z.write(tmp_path / "src" / f"{i}.png", f"00000/img{i:08d}.png")
        z.writestr("dataset.json", json.dumps({"labels": [[f"00000/img{i:08d}.png", i % 2] for i in range(4)]}))
    data = folder(archive, tmp_path / "cache")
    x, y = data.sample(32)
    assert (data.size, data.n_classes) == (4, 2) and torch.equal(colour_of(x), y)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I", "1"])
def test_every_mode_becomes_rgb_or_one_channel(mode: str, tmp_path: Path) -> None:
    suffix = {"CMYK": "jpg", "I": "tif"}.get(mode, "png")  # 32-bit I: TIFF (PNG keeps 16 bits only)
    file = solid(tmp_path / f"x.{suffix}", (200, 200, 200), mode=mode)
    assert decode(file.read_bytes(), 32, "crop", 3, WHITE).shape == (3, 32, 32)
    grey = decode(file.read_bytes(), 32, "crop", 1, WHITE)
    assert grey.shape == (1, 32, 32) and grey.dtype == np.uint8


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # a white 64x32 landscape whose EXIF says "rotate 90 degrees": it stands up as 32x64, so pad puts bars
    # left and right; without the tag the bars are at the top and bottom
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (64, 32), (255, 255, 255)).save(tmp_path / "turned.jpg", exif=exif)
    Image.new("RGB", (64, 32), (255, 255, 255)).save(tmp_path / "plain.jpg")
    turned = decode((tmp_path / "turned.jpg").read_bytes(), 32, "pad", 1, WHITE)[0]
    plain = decode((tmp_path / "plain.jpg").read_bytes(), 32, "pad", 1, WHITE)[0]
    assert turned[:, 0].max() < 20 and turned[16, 16] > 235 and turned[0, 16] > 235  # bars at the sides
    assert plain[0, :].max() < 20 and plain[16, 16] > 235 and plain[16, 0] > 235      # bars at top and bottom


def test_crop_keeps_the_centre_and_pad_keeps_everything(tmp_path: Path) -> None:
    image = Image.new("RGB", (64, 32), RED)
    image.paste((255, 255, 255), (16, 0, 48, 32))  # white centre square, red sides
    image.save(tmp_path / "wide.png")
    crop = decode((tmp_path / "wide.png").read_bytes(), 32, "crop", 3, WHITE)
    pad = decode((tmp_path / "wide.png").read_bytes(), 32, "pad", 3, WHITE)
    assert crop.min() > 240  # only the white centre
    assert pad[:, :7].max() == 0 and pad[:, 25:].max() == 0  # black bars above and below the 32x16 image
    assert tuple(pad[:, 16, 1]) == (255, 0, 0) and tuple(pad[:, 16, 16]) == (255, 255, 255)  # red side, white centre


def test_cli_trains_on_a_folder_and_counts_unreadable_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images = two_classes(tmp_path / "images")
    (images / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (images / "blue" / "empty.jpg").write_bytes(b"")
    run = tmp_path / "run"
    run_cli("train", "data=folder", f"data.path={images}", "data.resolution=32", f"data.cache={tmp_path / 'cache'}",
            "model.conditional=true", *TINY, "model.g_channels=8", "model.d_channels=8", "model.z_dim=16",
            "metrics=false", "train.steps=2", "train.batch_size=8", "threads=1", f"hydra.run.dir={run}")
    out = " ".join("".join(capsys.readouterr()).split())
    assert out.count("could not be read") == 1  # one warning naming both
    assert "2 of 14 image files" in out and "blue/empty.jpg, red/broken.png" in out
    log = " ".join((run / "train.log").read_text().split())
    assert "2 of 14 image files" in log  # counted in the run folder
    assert (run / "checkpoints").is_dir()
    assert "gan_lab.resnets.resnet" in (run / ".hydra" / "config.yaml").read_text()  # a folder brings model=resnet


def test_eval_of_a_folder_of_two_distinct_images_says_what_it_cannot_compute(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # greyscale: no Inception metrics; memorisation in pixels needs three distinct images
    images = two_classes(tmp_path / "images")
    run = tmp_path / "run"
    run_cli("train", "data=folder", f"data.path={images}", "data.resolution=32", "data.channels=1",
            f"data.cache={tmp_path / 'cache'}", *TINY, "model=dcgan", *TINY_DCGAN, "train.steps=2",
            "train.batch_size=8", "threads=1", f"hydra.run.dir={run}")
    run_cli("eval", f"checkpoint={run}")
    found = json.loads((run / "eval.json").read_text())
    # six identical images per class: two distinct images, too few to show how near a new image sits.
    # eval says what it cannot compute and writes the rest (here: the record, with no metric to hold)
    assert not any(k.startswith(("metrics/", "memorisation/")) for k in found) and found["samples"] > 0
    assert "memorisation: not computed: the training set holds 2 distinct image(s) (12 in all)" in " ".join(
        capsys.readouterr().err.split())
    assert not (run / "nearest_neighbours.png").exists()


@pytest.mark.parametrize("case, fragment", [
    ("missing", "does not exist"),
    ("empty", "holds no image files"),
    ("text only", "holds no image files"),
    ("labels mismatch", "does not match the images beside it: 1 image(s) have no label"),
    ("resolution", "data.resolution=16 is out of range"),
    ("no path", "data=folder needs data.path"),
])
def test_user_errors_exit_2_and_write_nothing(case: str, fragment: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    where = tmp_path / "images"
    where.mkdir()
    extra = []
    if case == "missing":
        where = tmp_path / "nowhere"
    elif case == "text only":
        (where / "notes.txt").write_text("hello")
    elif case == "labels mismatch":
        solid(where / "a.png", RED), solid(where / "b.png", BLUE)
        (where / "dataset.json").write_text(json.dumps({"labels": [["a.png", 0]]}))
    elif case == "resolution":
        solid(where / "a.png", RED)
        extra = ["data.resolution=16"]
    path = [] if case == "no path" else [f"data.path={where}"]
    message = user_error(capsys, "train", "data=folder", *path, "data.resolution=32", *extra,
                         f"data.cache={tmp_path / 'cache'}", *TINY, "model=dcgan", *TINY_DCGAN, "threads=1",
                         f"hydra.run.dir={tmp_path / 'run'}")
    assert fragment in message
    assert not (tmp_path / "run" / "checkpoints").exists() and not list((tmp_path / "cache").glob("*/meta.json"))


def test_a_resolution_the_model_cannot_take_is_refused_before_any_image_is_read(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # the model's size rule is checked from the data's declared shape: no cache is built only to be refused
    two_classes(tmp_path / "images")
    message = user_error(capsys, "train", "data=folder", f"data.path={tmp_path / 'images'}", "data.resolution=100",
                         f"data.cache={tmp_path / 'cache'}", *TINY, "model.g_channels=8", "model.d_channels=8",
                         "threads=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert "model=resnet" in message and "100x100" in message
    assert not (tmp_path / "cache").exists()


def test_the_second_start_reads_the_cache_and_a_change_is_read_again(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    images = two_classes(tmp_path / "images", n=3)
    first = folder(images, tmp_path / "cache")
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    monkeypatch.setattr(image_cache, "build", lambda *a, **k: pytest.fail("the cache was built again"))
    second = folder(images, tmp_path / "cache")
    assert not opened and second.cache_folder == first.cache_folder
    assert torch.equal(second.images, first.images) and torch.equal(second.labels, first.labels)
    monkeypatch.undo()
    (images / "notes.txt").write_text("a file that is not an image changes nothing")
    assert folder(images, tmp_path / "cache").cache_folder == first.cache_folder
    solid(images / "red" / "new.png", RED)  # a changed folder: a new key, read again
    third = folder(images, tmp_path / "cache")
    assert third.cache_folder != first.cache_folder and third.size == first.size + 1


def _build_in_a_process(images: str, cache: str) -> tuple[bool, int]:
    built = []
    source = open_source(images)
    labels, classes = read_labels(source)
    final, meta = load_or_build(source, labels, classes, 32, "crop", 3, cache, background=WHITE,
                                on_build=built.append)
    return bool(built), int(np.load(final / "images.npy", allow_pickle=False).shape[0])


def test_two_processes_starting_at_once_build_one_cache(tmp_path: Path) -> None:
    images = two_classes(tmp_path / "images", n=20)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.starmap(_build_in_a_process, [(str(images), str(tmp_path / "cache"))] * 2)
    assert sorted(built for built, _ in results) == [False, True]  # one built, the other waited and read
    assert [n for _, n in results] == [40, 40]
    left = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert len(left) == 1 and not left[0].startswith(".")  # no half-built folder left behind


@pytest.mark.parametrize("workers", [0, 1])
def test_the_streamed_path_draws_like_the_held_one(workers: int, tmp_path: Path) -> None:
    images = two_classes(tmp_path / "images", n=8)
    held = folder(images, tmp_path / "cache")
    streamed = folder(images, tmp_path / "cache", memory_budget=1e-9, workers=workers)  # a budget nothing fits
    assert not held.streamed and streamed.streamed and isinstance(streamed.images, np.memmap)
    torch.manual_seed(0)
    draws = [streamed.sample(50) for _ in range(8)]
    x, y = torch.cat([d[0] for d in draws]), torch.cat([d[1] for d in draws])
    assert x.shape == (400, 3, 32, 32) and x.dtype == held.sample(4)[0].dtype and y.dtype == torch.long
    assert torch.equal(colour_of(x), 1 - y)  # each image with its own label
    assert 0.4 < y.float().mean() < 0.6  # uniform over the two classes, as the held path draws
    assert held.measures()[0].real.shape == streamed.measures()[0].real.shape == (16, 3, 32, 32)


def test_every_folder_declares_its_images_for_memorisation(tmp_path: Path) -> None:
    from gan_lab.data import NearestTraining

    images = two_classes(tmp_path / "images", n=8)
    for channels in (3, 1):  # greyscale has no Inception metrics, but its samples can still copy training images
        nearest = [m for m in folder(images, tmp_path / "cache", channels=channels).measures()
                   if isinstance(m, NearestTraining)]
        assert len(nearest) == 1 and nearest[0].real.shape == (16, channels, 32, 32)
    one_image = 3 * 32 * 32 / 2**30  # a budget of 3.5 images: the streamed set compares with the first 3 rows
    streamed = folder(images, tmp_path / "cache", memory_budget=3.5 * one_image)
    [nearest] = [m for m in streamed.measures() if isinstance(m, NearestTraining)]
    assert streamed.streamed and len(nearest.real) == 3


def test_xflip_mirrors_about_half_the_images(tmp_path: Path) -> None:
    image = Image.new("L", (32, 32), 0)
    image.paste(255, (16, 0, 32, 32))  # black left half, white right half
    image.save((tmp_path / "images").mkdir() or tmp_path / "images" / "half.png")
    flipped = lambda data: (data.sample(400)[0][:, 0, :, 0] > 0).all(1).float().mean()  # noqa: E731
    assert flipped(folder(tmp_path / "images", tmp_path / "cache", channels=1)) == 0
    assert 0.4 < flipped(folder(tmp_path / "images", tmp_path / "cache", channels=1, xflip=True)) < 0.6


def test_each_rank_draws_from_its_own_share(tmp_path: Path) -> None:
    # rank and world size are passed in at build time (build_data, as the composition root calls it)
    from gan_lab.data import build_data

    images = tmp_path / "images"
    for i in range(8):
        solid(images / f"{i}.png", (30 * i, 0, 0))  # eight different images
    node = {"_target_": "gan_lab.folder.FolderData", "path": str(images), "resolution": 32,
            "cache": str(tmp_path / "cache"), "workers": 0}
    said: list[str] = []
    shares = []
    for rank in (0, 1):
        data = build_data(node, rank=rank, world_size=2, say=said.append)
        shares.append(set(data.share.tolist()))
        x, _ = data.sample(16)
        rows = {i for i in range(data.size) for row in x if torch.equal(row, data.images[i].float() / 127.5 - 1)}
        assert rows <= shares[-1]
    assert shares[0].isdisjoint(shares[1]) and shares[0] | shares[1] == set(range(8))
    assert "reading 8 images" in said[0] and sum("held on cpu" in line for line in said) == 2  # where told
    toy = build_data({"_target_": "gan_lab.data.ToyMixture", "name": "ring8", "sigma": 0.02}, rank=1, world_size=2,
                     say=said.append)  # a data set that declares none of them is built without them
    assert toy.shape == (2,)


def test_celeba_is_read_from_local_files_at_64_px_centre_crop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    from gan_lab.data import ImageData

    base = tmp_path / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    for i in range(4):  # 178x218 aligned faces: a white centre square between red bands
        image = Image.new("RGB", (178, 218), RED)
        image.paste((255, 255, 255), (0, 20, 178, 198))
        image.save(base / "img_align_celeba" / f"{i:06d}.jpg", quality=95)
    names = [f"{i:06d}.jpg" for i in range(4)]
    (base / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in zip(names, [0, 0, 0, 2])))
    (base / "identity_CelebA.txt").write_text("".join(f"{n} 1\n" for n in names))
    for file, header in [("list_bbox_celeba.txt", "x_1 y_1"), ("list_landmarks_align_celeba.txt", "a b"),
                         ("list_attr_celeba.txt", "Smiling Young")]:
        (base / file).write_text(f"4\nimage_id {header}\n" + "".join(f"{n} 1 -1\n" for n in names))
    monkeypatch.setattr(torchvision.datasets.CelebA, "_check_integrity", lambda self: True)  # md5s of the real files
    data = ImageData("celeba", root=str(tmp_path), download=False)
    x, y = data.sample(8)
    assert (data.size, data.n_classes, data.shape, y) == (3, 0, (3, 64, 64), None)  # the training split, unlabelled
    assert x.min() > 0.8  # only the white centre square


def test_cifar100_missing_names_its_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    message = user_error(capsys, "train", "data=cifar100", f"data.root={tmp_path / 'empty'}", "data.download=false",
                         *TINY, "threads=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert f"Could not load cifar100 from {tmp_path / 'empty'}" in message and "cifar-100-python" in message


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.slow  # starts scripts/write_image_folder.py as a subprocess
def test_write_image_folder_writes_class_folders_that_data_folder_reads(tmp_path: Path, tiny_mnist_root: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(SCRIPTS / "write_image_folder.py"), "--root", str(tiny_mnist_root),
                          "--out", str(tmp_path / "fashion"), "--limit", "20"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    folders = sorted(p.name for p in (tmp_path / "fashion").iterdir())
    assert "T-shirt-top" in folders and len(folders) == 10 and len(list((tmp_path / "fashion").glob("*/*.png"))) == 20
    data = folder(tmp_path / "fashion", tmp_path / "cache")
    assert (data.size, data.n_classes) == (20, 10)


@pytest.mark.slow
def test_folder_bench_prints_the_ratios_side_by_side(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(SCRIPTS / "folder_bench.py"), "--images", "40", "--rounds", "2",
                          "--steps", "1"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "GAN_LAB_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {" ".join(line.split()[:2]): line for line in out.stdout.splitlines() if "x " in line}
    assert rows["in memory"].split()[3:6] == ["1.000x", "1.000-1.000x", "1.000x"]
    assert "folder (held)" in rows and "folder (streamed)" in rows
    assert "first (reads and resizes every file)" in out.stdout and "ratio" in out.stdout


def test_a_resume_may_move_the_cache_and_change_the_budget(tmp_path: Path) -> None:
    from gan_lab.runs.checkpoint import load_checkpoint

    images = two_classes(tmp_path / "images", n=4)
    common = ["data=folder", f"data.path={images}", "data.resolution=32", *TINY, "model=dcgan", *TINY_DCGAN, "train.batch_size=8",
              "threads=1", f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli("train", *common, "train.steps=2", f"data.cache={tmp_path / 'cache'}")
    run_cli("train", *common, "train.steps=4", f"data.cache={tmp_path / 'elsewhere'}", "data.memory_budget=1e-9",
            "data.workers=0", "resume=auto")  # where the cache lives and how it is read do not change the math
    assert load_checkpoint(tmp_path / "run")["step"] == 4 and (tmp_path / "elsewhere").is_dir()


@pytest.mark.slow
def test_folder_run_writes_the_doc_from_a_real_run(tmp_path: Path, tiny_mnist_root: Path) -> None:
    # scripts/folder_run.py (which writes docs/folder.md), tiny: write the folder, train, eval, sample
    import subprocess
    import sys

    doc, img = tmp_path / "folder.md", tmp_path / "img"
    doc.write_text("an older run\n\n## Notes\n\nkept by hand\n")
    out = subprocess.run([sys.executable, str(SCRIPTS / "folder_run.py"), "--data-root", str(tiny_mnist_root),
                          "--images", "30", "--steps", "2", "--extra", "model.width=8", "model.z_dim=16",
                          "train.batch_size=8", "--allow-dirty", "--out", str(doc), "--img-dir", str(img)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = " ".join(doc.read_text().split())
    assert "gan-lab train data=folder data.path=$WORK/fashion data.resolution=32" in text
    assert "wrote 30 images of fashion_mnist into $WORK/fashion" in text and "gan-lab eval checkpoint=$WORK/run" in text
    assert re.search(r"first start read and resized every file into the cache in \*\*[\d.]+ s\*\*", text)
    assert "2 generator steps at batch 8" in text and "`loss/critic`" in text and "`loss/generator`" in text
    assert re.search(r"\*\*\d+\.\d%\*\* of samples are copies \(their nearest training image is nearer than 0\.5 x",
                     text)  # memorisation in pixels, from eval.json (the copy check of #32)
    assert "30 samples against every training image" in text and "Inception metrics are off" in text
    assert doc.read_text().startswith("# A run on your own images") and text.endswith("## Notes kept by hand")
    assert re.search(r"at commit [0-9a-f]{7}", text)  # the commit that made it
    for name in ("folder_samples.png", "folder_nearest.png"):
        assert Image.open(img / name).size[0] > 32  # a grid, linked from the doc
        assert f"(img/{name})" in text
