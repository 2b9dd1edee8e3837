"""Memorisation: does a generator copy its training images? (`gan-lab eval`; method and measured table: docs/memorisation.md)

A copy sits much nearer one training image than any other: the ratio of a sample's distance to its
nearest training image to its distance to the second-nearest (the nearest / second-nearest ratio of
Lowe's matching, used for data copying by Alaa et al. 2022's authenticity in spirit) is near 0 for an
exact or lightly noised copy, and near 1 for a new image, a blurred one or the mean image, which sit
among many training images at once. A sample is counted a copy when that ratio is below COPY_RATIO,
and the count is printed beside the same count for real images that no generator made: each of HELD
training images against the other training images (leave-one-out: a training image against the rest
is a held-out draw against a training set one smaller). When those real images pass as copies too
(near-duplicates in the data) the check cannot set a threshold, and says so instead of a verdict.

Beside it, Meehan, Chaudhuri & Dasgupta (2020)'s data-copying statistic C_T: per cell of a k-means
partition, the Mann-Whitney z-score of the samples' nearest-training distances against the real
images' (negative: samples sit nearer the training set than new real images do), averaged over the
cells by the real images' share. A flipped copy is a copy: every distance is the smaller of a sample's
and its mirror image's. Exact duplicates in the training set are counted and searched once.

Both are taken in pixels (root-mean-square difference, pixels in [0, 1]) and in features (gan-lab's
digit classifier for MNIST-like data, Inception's 2048-d pool features, through torch-fidelity, for
anything else). A data set declares the check with gan_lab.measures.NearestTraining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from gan_lab.evaluation.nearest import distinct, either_orientation, kmeans_cells, mann_whitney_z, two_nearest
from gan_lab.evaluation.sampling import inference_batch

HELD = 2000  # training images that stand in for held-out real images (each against the others)
# A copy: nearer its nearest training image than COPY_RATIO x its second-nearest. An image with small
# noise (sigma 0.05 in [0, 1] pixels on MNIST) scores ~0.3; new digits ~0.9 (docs/memorisation.md).
COPY_RATIO = 0.5
# Above this share of the real images passing as copies, the data holds near-duplicates and a copy
# cannot be told from a real image: no verdict is printed.
TRUSTED_BASE = 0.05
CELLS = 10  # k-means cells of C_T (Meehan et al. use 5-50 by data set)
MIN_IN_CELL = 5  # samples and real images a cell needs to enter C_T (their tau)
SHOWN = 8  # rows of nearest_neighbours.png in each half: the samples likeliest copies, then the first ones
TILE = 84  # pixels of each image in the picture at least: a 28-pixel digit is shown 3x
HELD_SEED = 0  # which training images are held: the same ones in every evaluation


@dataclass
class Memorisation:
    """What a memorisation check found: its numbers (memorisation/*), the picture of the pairs, what it could not do."""

    metrics: dict[str, float]
    picture: Tensor | None  # uint8 (3, H, W): rows of sample | nearest | ratio, in pixels then features
    feature_space: str  # what the feature distances are in, for the console
    missing: str = ""  # what could not be computed and why ("" when everything was)


Check = Callable[[nn.Module], Memorisation]


def not_applicable(data: Any) -> str:
    """Why `gan-lab eval` reports no memorisation for a data set."""
    why = ("2-D data is drawn afresh every batch: there are no training images to copy" if len(data.shape) == 1
           else "it does not declare its training images")
    return (f"memorisation: not applicable to data '{getattr(data, 'name', '?')}': its measures() declare no "
            f"NearestTraining ({why}).")


def pixels(images: Tensor) -> Tensor:
    """uint8 images as flat float rows scaled so that distances are RMS pixel differences (pixels in [0, 1])."""
    flat = images.flatten(1).float()
    return flat / (255 * math.sqrt(flat.shape[1]))


def mirror(images: Tensor) -> Tensor:
    """Images flipped left to right."""
    return images.flip(-1)


def to_uint8(x: Tensor) -> Tensor:
    """Generator output in [-1, 1] as uint8, quantised as the training images are (a copy is then exact)."""
    return x.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def data_copying(sample_distance: Tensor, real_distance: Tensor, sample_cell: Tensor, real_cell: Tensor) -> float:
    """Meehan et al.'s C_T: per cell, the Mann-Whitney z of samples' vs real images' distances, by real share; NaN
    when no cell holds MIN_IN_CELL of each."""
    total, weight = 0.0, 0.0
    for cell in range(int(max(sample_cell.max(), real_cell.max())) + 1):
        samples, reals = sample_distance[sample_cell == cell], real_distance[real_cell == cell]
        if len(samples) >= MIN_IN_CELL and len(reals) >= MIN_IN_CELL:
            share = len(reals) / len(real_distance)
            total, weight = total + share * mann_whitney_z(samples, reals), weight + share
    return total / weight if weight else math.nan


@dataclass
class Space:
    """One space the check searches: how its rows are made from uint8 images, and the training set's rows."""

    embed: Callable[[Tensor], Tensor]  # uint8 images -> float rows
    train: Tensor  # the training set as stored (uint8 images for pixels, float features)
    rows: Callable[[Tensor], Tensor]  # a chunk of `train` -> float rows
    embed_real: Callable[[Tensor], Tensor] | None = None  # embed() of real images, cached (Inception's): else embed


@dataclass
class Reference:
    """The real images' side of one space, found once per check: their nearest distances, ratios and C_T's cells."""

    distance: Tensor  # each held real image's distance to its nearest other training image
    ratio: Tensor  # nearest / second-nearest
    centres: Tensor  # C_T's k-means centres (float64)
    cell: Tensor  # each held real image's cell


def search(space: Space, rows: Tensor, mirrored: Tensor, keep: Tensor,
           self_index: Tensor | None = None) -> tuple[Tensor, ...]:
    """Nearest distance, nearest training image (index into the data) and second-nearest distance, flips included.

    rows, mirrored: the images' rows in this space, and their mirror images' (each image embedded once).
    """
    found = two_nearest(rows, space.train, space.rows, keep, self_index)
    flipped = two_nearest(mirrored, space.train, space.rows, keep, self_index)
    d1, nearest, d2 = either_orientation(found, flipped)
    return d1, keep[nearest], d2


def reference(space: Space, keep: Tensor, held: Tensor, held_images: Tensor) -> Reference:
    """The held real images, each against the other training images, and C_T's partition of them.

    The held images' rows are the training set's own (never embedded again); their mirror images' are
    embedded once, through the space's cache where it has one.
    """
    points = space.rows(space.train[keep[held]]).float()
    mirrored = (space.embed_real or space.embed)(mirror(held_images))
    d1, _, d2 = search(space, points, mirrored, keep, self_index=held)
    centres = kmeans_cells(points.double(), min(CELLS, max(1, len(held) // (2 * MIN_IN_CELL))))
    return Reference(d1, d1 / d2, centres, torch.cdist(points.double(), centres).argmin(1))


def measure_space(space: Space, samples: Tensor, keep: Tensor, real: Reference) -> tuple[dict[str, float], Tensor,
                                                                                         Tensor]:
    """The numbers of one space; each sample's nearest / second-nearest ratio and its nearest training image."""
    rows = space.embed(samples)
    d1, nearest, d2 = search(space, rows, space.embed(mirror(samples)), keep)
    ratio = d1 / d2
    cell = torch.cdist(rows.double(), real.centres).argmin(1)
    return {
        "copies": (ratio < COPY_RATIO).double().mean().item(),
        "copies_of_real": (real.ratio < COPY_RATIO).double().mean().item(),
        "nn_ratio_median": ratio.median().item(),
        "real_nn_ratio_median": real.ratio.median().item(),
        "sample_nn_median": d1.median().item(),
        "real_nn_median": real.distance.median().item(),
        "data_copying_z": data_copying(d1, real.distance, cell, real.cell),
    }, ratio, nearest


def digit_features(classifier: str, root: str, cache_dir: str | None,
                   device: torch.device) -> Callable[[Tensor], Tensor]:
    """uint8 (N, 1, 28, 28) -> the digit classifier's 128-d penultimate features."""
    from gan_lab.evaluation.classifier import load_or_train_classifier

    model = load_or_train_classifier(classifier, root, cache_dir, device=device).eval()
    return lambda images: model.features(images.float().div(127.5).sub(1))


def inception_features(measure: Any, weights: str | None, cache_dir: str | None,
                       device: torch.device) -> tuple[Callable[[Tensor], Tensor], Callable[[], Tensor],
                                                      Callable[[Tensor], Tensor]]:
    """Inception's 2048-d pool features of uint8 images (grey repeated to RGB), those of the training images,
    and those of other real images (the held images' mirror images), cached.

    gan_lab.evaluation.inception's path: the weights checked before torch-fidelity loads them, real
    images' features cached as plain tensors (a second eval runs Inception on the samples only).
    Raises OSError when the weights can be neither read nor downloaded.
    """
    from gan_lab.evaluation.classifier import default_cache_dir
    from gan_lab.evaluation.inception import FEATURES, InceptionMetrics, check_weights

    def rgb(images: Tensor) -> Tensor:
        return (images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images).cpu()

    inception = InceptionMetrics(check_weights(weights), rgb(measure.real), measure.name, "train", len(measure.real),
                                 Path(cache_dir) if cache_dir else default_cache_dir())
    inception.extractor()  # weights that are plain tensors but not Inception's: refused now, in a paragraph
    return (lambda images: inception.features(rgb(images))[FEATURES].to(device),
            lambda: inception.real_features().to(device),
            lambda images: inception.real_features(rgb(images), "-mirrored-held").to(device))


@torch.no_grad()
def embed(features: Callable[[Tensor], Tensor], images: Tensor, batch_size: int | None = None) -> Tensor:
    """features() of uint8 images, in batches (a whole data set at once would hold GBs of activations; default:
    gan_lab.evaluation.sampling.inference_batch, the digit classifier's fastest)."""
    batch_size = batch_size or inference_batch(images.device)
    return torch.cat([features(images[i:i + batch_size]).float() for i in range(0, len(images), batch_size)])


def picture(samples: Tensor, train: Tensor, found: list[tuple[str, Tensor, Tensor]]) -> Tensor:
    """uint8 (3, H, W): a header, then SHOWN rows of the samples likeliest copies and SHOWN of the first samples;
    each row a sample and, per space, its nearest training image and the nearest / second-nearest ratio."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    scale = max(1, math.ceil(TILE / samples.shape[-1]))
    tile, text_width, header = samples.shape[-1] * scale, 110, 24
    ratio = found[0][1]
    order = torch.cat([ratio.argsort()[:SHOWN], torch.arange(min(SHOWN, len(samples)), device=ratio.device)])
    width = tile + len(found) * (tile + text_width)
    canvas = Image.new("RGB", (width + 4, header + len(order) * (tile + 4)), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()

    def paste(image: Tensor, x: int, y: int) -> None:
        rgb = (image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]).cpu()
        big = rgb.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        canvas.paste(Image.fromarray(big.permute(1, 2, 0).numpy()), (x, y))

    draw.text((2, 4), "sample", fill="black", font=font)
    for column, (space, _, _) in enumerate(found):
        draw.text((tile + 4 + column * (tile + text_width), 4), f"nearest ({space})  d1/d2", fill="black", font=font)
    for row, i in enumerate(order.tolist()):
        y = header + row * (tile + 4)
        paste(samples[i], 0, y)
        for column, (_, space_ratio, nearest) in enumerate(found):
            x = tile + 4 + column * (tile + text_width)
            paste(train[nearest[i]], x, y)
            verdict = "copy" if space_ratio[i] < COPY_RATIO else ""
            draw.text((x + tile + 6, y + tile // 2 - 6), f"{space_ratio[i]:.2f} {verdict}", fill="black", font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)


def memorisation_check(measure: Any, n: int, classifier_root: str | None = None,
                       cache_dir: str | None = None, inception_weights: str | None = None, seed: int = 0) -> Check:
    """A function G -> Memorisation for n samples from `seed` (the evaluation's z) against the training images."""
    from gan_lab.evaluation.sampling import class_labels, generate

    train = measure.real
    device = train.device
    keep = distinct(train)  # each distinct training image once: a duplicate is not a second neighbour
    duplicates = 1 - len(keep) / max(len(train), 1)
    if len(keep) < 3:  # a held image needs two others to be compared with
        missing = (f"memorisation: not computed: the training set holds {len(keep)} distinct image(s) "
                   f"({len(train)} in all), and a real image needs two others beside it to show how near new "
                   f"images sit; add images to the data set. The other metrics are written.")
        return lambda G: Memorisation({}, None, "none", missing)
    held = torch.randperm(len(keep), generator=torch.Generator().manual_seed(HELD_SEED))[:HELD].to(device)
    spaces: dict[str, Space] = {"pixels": Space(pixels, train, pixels)}
    references: dict[str, Reference] = {}
    features: Callable[[Tensor], Tensor] | None = None
    of_real: Callable[[Tensor], Tensor] | None = None
    if measure.classifier is not None:
        digits = digit_features(measure.classifier, classifier_root or "data", cache_dir, device)
        features, space = (lambda images: embed(digits, images)), f"the {measure.classifier} classifier's features"
        of_training = lambda: features(train)  # noqa: E731
    else:
        try:
            features, of_training, of_real = inception_features(measure, inception_weights, cache_dir, device)
            space = "Inception pool features (2048-d)"
        except OSError as err:
            space = f"none: the Inception weights could not be loaded ({err})"

    def check(G: nn.Module) -> Memorisation:
        samples = to_uint8(generate(G, n, class_labels(G, n), seed=seed)).to(device)
        if samples.shape[1] != train.shape[1]:  # k images per sample, one per group of channels (Stacked MNIST)
            samples = samples.reshape(-1, *train.shape[1:])[:n]
        if features is not None and "features" not in spaces:  # the training set's features: once, kept
            spaces["features"] = Space(features, of_training(), lambda rows: rows, of_real)
        found = {"memorisation/duplicates": duplicates, "memorisation/copy_ratio": COPY_RATIO}
        pairs = []
        for name, searched in spaces.items():
            if name not in references:  # the real images' side does not change between checks: once
                references[name] = reference(searched, keep, held, train[keep[held]])
            metrics, ratio, nearest = measure_space(searched, samples, keep, references[name])
            found.update({f"memorisation/{name}/{k}": v for k, v in metrics.items()})
            pairs.append((name, ratio, nearest))
        return Memorisation(found, picture(samples, train, pairs), space)
    return check


def picture_file(record: Path) -> Path:
    """nearest_neighbours.png beside eval.json; nearest_neighbours_seed1.png beside eval_seed1.json, ..."""
    stem = record.stem
    if stem == "eval" or stem.startswith("eval_"):
        return record.with_name("nearest_neighbours" + stem.removeprefix("eval") + ".png")
    return record.with_name(f"{stem}_nearest_neighbours.png")


def report(found: Memorisation, record: Path) -> str:
    """Write the pairs' picture beside the evaluation's record (picture_file); describe()'s paragraph."""
    from gan_lab.runs.files import atomic_writer
    from gan_lab.torchvision_sets import import_torchvision

    if found.picture is None:
        return found.missing
    figure = picture_file(record)
    with atomic_writer(figure) as tmp:  # beside its record, named as it is: later evaluations keep earlier pictures
        import_torchvision().utils.save_image(found.picture.float().div(255), tmp, format="png")
    return describe(found, figure)


def verdict(metrics: dict[str, float], space: str) -> str:
    """One space's sentence: the copies beside the real images' count, or why no threshold can be set."""
    copies, real = metrics[f"memorisation/{space}/copies"], metrics[f"memorisation/{space}/copies_of_real"]
    z = metrics[f"memorisation/{space}/data_copying_z"]
    if real > TRUSTED_BASE:
        return (f"in {space}: no verdict: {real:.1%} of real training images already sit nearer one other training "
                f"image than {COPY_RATIO} x the next (near-duplicates), so copies cannot be told apart here "
                f"(samples: {copies:.1%}; C_T {z:+.1f})")
    return (f"in {space}: {copies:.1%} of samples are copies (nearest / second-nearest training image < {COPY_RATIO}; "
            f"real images not trained on: {real:.1%}); C_T {z:+.1f} (below -3: samples sit nearer the training "
            f"images than new real images do)")


def describe(found: Memorisation, figure: Path) -> str:
    """The console's paragraph: each space's verdict, the duplicates found, the picture."""
    m = found.metrics
    spaces = [space for space in ("pixels", "features") if f"memorisation/{space}/copies" in m]
    text = "memorisation: " + "; ".join(verdict(m, space) for space in spaces)
    if "features" not in spaces:
        text += f"; feature space: {found.feature_space}"
    if m["memorisation/duplicates"] > 0:
        text += f". The training set repeats {m['memorisation/duplicates']:.1%} of its images (searched once)"
    return text + f". Samples beside their nearest training images: {figure}"
