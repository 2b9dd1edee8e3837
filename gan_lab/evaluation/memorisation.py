"""Memorisation: how close a generator's samples sit to their nearest training images (`gan-lab eval`).

A generator that copies its training set scores well on FID and precision; this check looks for the
copies themselves. Each sample's nearest training image is found in two spaces: pixels (the
root-mean-square difference of two images, pixels in [0, 1]) and features (gan-lab's digit classifier
for MNIST-like data, Inception's 2048-d pool features, through torch-fidelity, for anything else).
Those distances are set against the training set's own: a held subset of training images, each to
its nearest *other* training image. A data set declares it with gan_lab.measures.NearestTraining,
whose evaluator runs this check.

Distances are taken with torch.cdist in chunks of rows, so 10,000 samples against 60,000 training
images hold CHUNK x 60,000 distances at a time, never 10,000 x 60,000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from gan_lab.errors import GanLabError

HELD = 2000  # training images whose nearest other training image sets the reference distances
# A sample is "closer than the training images sit to each other" when its nearest-neighbour distance
# is below the 1st percentile of the held training images' own: a generator that draws new images
# from the data distribution puts about 1% of its samples there, one that copies puts nearly all.
# The median would not do: smooth, averaged samples (a blurry generator) sit nearer the training
# images than a typical training image does to its neighbour, in pixels, without copying any.
QUANTILE = 0.01
CHUNK = 256  # sample rows of distances at a time: 256 x 60,000 float32 = 61 MB
SHOWN = 8  # rows of nearest_neighbours.png in each half: the nearest samples, then the first ones
HELD_SEED = 0  # which training images are held: the same ones in every evaluation


@dataclass
class Memorisation:
    """What a memorisation check found: its numbers (memorisation/*) and the uint8 picture of the pairs."""

    metrics: dict[str, float]
    picture: Tensor  # uint8 (3, H, W): rows of sample | nearest in pixels | nearest in features
    feature_space: str  # what the feature distances are in, for the console


Check = Callable[[nn.Module], Memorisation]


def not_applicable(data: Any) -> str:
    """Why `gan-lab eval` reports no memorisation for a data set."""
    why = ("2-D data is drawn afresh every batch: there are no training images to copy" if len(data.shape) == 1
           else "it does not declare its training images")
    return (f"memorisation: not applicable to data '{getattr(data, 'name', '?')}': its measures() declare no "
            f"NearestTraining ({why}).")


@torch.no_grad()
def nearest(queries: Tensor, keys: Tensor, self_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Each query's Euclidean distance to its nearest key and that key's index, CHUNK queries at a time.

    self_index[i]: the key that is query i itself, left out (a training image is not its own neighbour).
    """
    distances, indices = [], []
    for start in range(0, len(queries), CHUNK):
        # float32 matrix-product distances: an exact copy comes out within ~1e-3 of 0 (cancellation
        # in |a|^2 + |b|^2 - 2ab), far below any distance between two different images
        block = torch.cdist(queries[start:start + CHUNK], keys)
        if self_index is not None:
            rows = torch.arange(len(block), device=block.device)
            block[rows, self_index[start:start + CHUNK]] = math.inf
        distance, index = block.min(dim=1)
        distances.append(distance)
        indices.append(index)
    return torch.cat(distances), torch.cat(indices)


def compare(samples: Tensor, train: Tensor, held: Tensor) -> tuple[dict[str, float], Tensor, Tensor]:
    """Samples' nearest-training distances against the held training images' own; each sample's distance and nearest.

    samples (M, D), train (N, D) and the indices `held` of the training rows that set the reference.
    """
    sample_distance, sample_nearest = nearest(samples, train)
    train_distance, _ = nearest(train[held], train, self_index=held)
    threshold = torch.quantile(train_distance.double(), QUANTILE).item()
    return {
        "sample_nn_median": sample_distance.median().item(),
        "train_nn_median": train_distance.median().item(),
        "threshold": threshold,  # the train-train distances' QUANTILE
        "fraction_closer": (sample_distance < threshold).double().mean().item(),
    }, sample_distance, sample_nearest


def pixels(images: Tensor) -> Tensor:
    """uint8 images as flat float rows scaled so that distances are RMS pixel differences (pixels in [0, 1])."""
    flat = images.flatten(1).float()
    return flat / (255 * math.sqrt(flat.shape[1]))


def to_uint8(x: Tensor) -> Tensor:
    """Generator output in [-1, 1] as uint8, quantised as the training images are (a copy is then exact)."""
    return x.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def digit_features(classifier: str, root: str, cache_dir: str | None,
                   device: torch.device) -> Callable[[Tensor], Tensor]:
    """uint8 (N, 1, 28, 28) -> the digit classifier's 128-d penultimate features."""
    from gan_lab.evaluation.classifier import load_or_train_classifier

    model = load_or_train_classifier(classifier, root, cache_dir, device=device).eval()
    return lambda images: model.features(images.float().div(127.5).sub(1))


def inception_features(measure: Any, weights: str | None, cache_dir: str | None,
                       device: torch.device) -> tuple[Callable[[Tensor], Tensor], Callable[[], Tensor]]:
    """Inception's 2048-d pool features of uint8 images (grey repeated to RGB), and those of the training images.

    gan_lab.evaluation.inception's path: the weights checked before torch-fidelity loads them, the
    training images' features cached as plain tensors (a second eval runs Inception on the samples
    only). Raises OSError when the weights can be neither read nor downloaded.
    """
    from gan_lab.evaluation.classifier import default_cache_dir
    from gan_lab.evaluation.inception import FEATURES, InceptionMetrics, check_weights

    def rgb(images: Tensor) -> Tensor:
        return (images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images).cpu()

    inception = InceptionMetrics(check_weights(weights), rgb(measure.real), measure.name, "train", len(measure.real),
                                 Path(cache_dir) if cache_dir else default_cache_dir())
    inception.extractor()  # weights that are plain tensors but not Inception's: refused now, in a paragraph
    return (lambda images: inception.features(rgb(images))[FEATURES].to(device),
            lambda: inception.real_features().to(device))


@torch.no_grad()
def embed(features: Callable[[Tensor], Tensor], images: Tensor, batch_size: int = 500) -> Tensor:
    """features() of uint8 images, in batches (a whole data set at once would hold GBs of activations)."""
    return torch.cat([features(images[i:i + batch_size]).float() for i in range(0, len(images), batch_size)])


def picture(samples: Tensor, train: Tensor, distance: Tensor, by_pixels: Tensor, by_features: Tensor | None) -> Tensor:
    """uint8 (3, H, W): SHOWN rows of the samples nearest a training image, then SHOWN of the first samples;
    each row a sample, its nearest training image in pixels and (when measured) in features."""
    from gan_lab.torchvision_sets import import_torchvision

    rows = torch.cat([distance.argsort()[:SHOWN], torch.arange(min(SHOWN, len(samples)), device=distance.device)])
    columns = [samples[rows], train[by_pixels[rows]]]
    if by_features is not None:
        columns.append(train[by_features[rows]])
    grid = torch.stack(columns, dim=1).flatten(0, 1)  # row by row: sample, nearest, nearest
    grid = grid.expand(-1, 3, -1, -1) if grid.shape[1] == 1 else grid[:, :3]
    return import_torchvision().utils.make_grid(grid.cpu(), nrow=len(columns), padding=2, pad_value=255)


def memorisation_check(measure: Any, n: int, classifier_root: str | None = None,
                       cache_dir: str | None = None, inception_weights: str | None = None, seed: int = 0) -> Check:
    """A function G -> Memorisation for n samples from `seed` (the evaluation's z) against the training images."""
    from gan_lab.evaluation.sampling import class_labels, generate

    train = measure.real
    if len(train) < 2:
        raise GanLabError(f"Memorisation needs at least 2 training images (one to compare with the other), and the "
                          f"data set holds {len(train)}. Add images to it.")
    device = train.device
    held = torch.randperm(len(train), generator=torch.Generator().manual_seed(HELD_SEED))[:HELD].to(device)
    features: Callable[[Tensor], Tensor] | None = None
    if measure.classifier is not None:
        digits = digit_features(measure.classifier, classifier_root or "data", cache_dir, device)
        features, space = (lambda images: embed(digits, images)), f"the {measure.classifier} classifier's features"
        of_training = lambda: features(train)  # noqa: E731
    else:
        try:
            features, of_training = inception_features(measure, inception_weights, cache_dir, device)
            space = "Inception pool features (2048-d)"
        except OSError as err:
            space = f"none: the Inception weights could not be loaded ({err})"
    train_features: list[Tensor] = []  # computed on the first call, kept for the next

    def check(G: nn.Module) -> Memorisation:
        samples = to_uint8(generate(G, n, class_labels(G, n), seed=seed)).to(device)
        if samples.shape[1] != train.shape[1]:  # k images per sample, one per group of channels (Stacked MNIST)
            samples = samples.reshape(-1, *train.shape[1:])[:n]
        metrics, distance, by_pixels = compare(pixels(samples), pixels(train), held)
        found = {f"memorisation/pixels/{k}": v for k, v in metrics.items()}
        by_features = None
        if features is not None:
            if not train_features:
                train_features.append(of_training())
            metrics, _, by_features = compare(features(samples), train_features[0], held)
            found.update({f"memorisation/features/{k}": v for k, v in metrics.items()})
        found["memorisation/quantile"] = QUANTILE
        return Memorisation(found, picture(samples, train, distance, by_pixels, by_features), space)
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

    figure = picture_file(record)
    with atomic_writer(figure) as tmp:  # beside its record, named as it is: later evaluations keep earlier pictures
        import_torchvision().utils.save_image(found.picture.float().div(255), tmp, format="png")
    return describe(found, figure)


def describe(found: Memorisation, figure: Path) -> str:
    """The console's paragraph: how many samples sit closer to a training image than training images do."""
    m = found.metrics
    text = (f"memorisation: {m['memorisation/pixels/fraction_closer']:.1%} of samples sit closer (in pixels) to a "
            f"training image than {1 - QUANTILE:.0%} of training images sit to their nearest other one "
            f"(a generator of new images: about {QUANTILE:.0%})")
    if "memorisation/features/fraction_closer" in m:
        text += f"; in {found.feature_space}: {m['memorisation/features/fraction_closer']:.1%}"
    else:
        text += f"; feature space: {found.feature_space}"
    return text + f". Samples beside their nearest training images: {figure}"
