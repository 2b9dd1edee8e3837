"""Memorisation: how close a generator's samples sit to their nearest training images (`gan-lab eval`).

A generator that copies its training set scores well on FID and precision; this check looks for the
copies themselves. Each sample's nearest training image is found in two spaces: pixels (the
root-mean-square difference of two images, pixels in [0, 1]) and features (gan-lab's digit classifier
for MNIST-like data, Inception's 2048-d pool features, through torch-fidelity, for anything else).
Those distances are set against the training set's own: a held subset of training images, each to
its nearest *other* training image. A data set declares it with NearestTraining (gan_lab.data).

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

from gan_lab.data import NearestTraining
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


def find(data: Any) -> NearestTraining | None:
    """The NearestTraining a data set declares in its measures(), or None (2-D data has no training images)."""
    declare = getattr(data, "measures", None)
    return next((m for m in (declare() if declare else ()) if isinstance(m, NearestTraining)), None)


def not_applicable(data: Any) -> str:
    """Why `gan-lab eval` reports no memorisation for a data set."""
    return (f"memorisation: not applicable to data '{getattr(data, 'name', '?')}': its measures() declare no "
            f"NearestTraining (2-D data is drawn afresh every batch: there are no training images to copy).")


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


def digit_features(classifier: str, root: str, cache_dir: str | None, device: torch.device) -> Callable[[Tensor], Tensor]:
    """uint8 (N, 1, 28, 28) -> the digit classifier's 128-d penultimate features."""
    from gan_lab.evaluation.classifier import load_or_train_classifier

    model = load_or_train_classifier(classifier, root, cache_dir, device=device).eval()
    return lambda images: model.features(images.float().div(127.5).sub(1))


def inception_features(weights: str | None, device: torch.device) -> Callable[[Tensor], Tensor]:
    """uint8 (N, C, H, W) -> Inception's 2048-d pool features (torch-fidelity's InceptionV3; grey repeated to RGB).

    Raises OSError when the weights can be neither read from `weights` nor downloaded.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

    if weights is None:
        torch.hub.load_state_dict_from_url(URL_INCEPTION_V3, map_location="cpu", weights_only=True, progress=False)
        weights = str(Path(torch.hub.get_dir()) / "checkpoints" / Path(URL_INCEPTION_V3).name)
    try:
        # torch-fidelity reads the file with a full unpickler; a weights-only read first means it can
        # hold nothing but tensors and plain containers, so that read runs no code
        torch.load(weights, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 (whatever the weights-only unpickler refuses)
        raise GanLabError(f"inception_weights={weights} is not a file of Inception weights gan-lab can read safely "
                          f"({type(err).__name__}). Pass torch-fidelity's weights-inception-2015-12-05-6726825d.pth.") from None
    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights)
    model = model.to(device).eval()
    return lambda images: model(images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images)[0]


@torch.no_grad()
def embed(features: Callable[[Tensor], Tensor], images: Tensor, batch_size: int = 50) -> Tensor:
    """features() of uint8 images, in batches: Inception's first layers hold ~5 MB per image at 299 x 299."""
    return torch.cat([features(images[i:i + batch_size]).float() for i in range(0, len(images), batch_size)])


def picture(samples: Tensor, train: Tensor, distance: Tensor, by_pixels: Tensor, by_features: Tensor | None) -> Tensor:
    """uint8 (3, H, W): SHOWN rows of the samples nearest a training image, then SHOWN of the first samples;
    each row a sample, its nearest training image in pixels and (when measured) in features."""
    from gan_lab.data import import_torchvision

    rows = torch.cat([distance.argsort()[:SHOWN], torch.arange(min(SHOWN, len(samples)), device=distance.device)])
    columns = [samples[rows], train[by_pixels[rows]]]
    if by_features is not None:
        columns.append(train[by_features[rows]])
    grid = torch.stack(columns, dim=1).flatten(0, 1)  # row by row: sample, nearest, nearest
    grid = grid.expand(-1, 3, -1, -1) if grid.shape[1] == 1 else grid[:, :3]
    return import_torchvision().utils.make_grid(grid.cpu(), nrow=len(columns), padding=2, pad_value=255)


def memorisation_check(measure: NearestTraining, n: int, classifier_root: str | None = None,
                       cache_dir: str | None = None, inception_weights: str | None = None, seed: int = 0) -> Check:
    """A function G -> Memorisation for n samples from `seed` (the evaluation's z) against the training images."""
    from gan_lab.evaluation.evaluate import class_labels, generate

    train = measure.real
    if len(train) < 2:
        raise GanLabError(f"Memorisation needs at least 2 training images (one to compare with the other), and the "
                          f"data set holds {len(train)}. Add images to it.")
    device = train.device
    held = torch.randperm(len(train), generator=torch.Generator().manual_seed(HELD_SEED))[:HELD].to(device)
    if measure.classifier is not None:
        features, space = digit_features(measure.classifier, classifier_root or "data", cache_dir, device), \
            f"the {measure.classifier} classifier's features"
    else:
        try:
            features, space = inception_features(inception_weights, device), "Inception pool features (2048-d)"
        except OSError as err:
            features, space = None, f"none: the Inception weights could not be loaded ({err})"

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
                train_features.append(embed(features, train))
            metrics, _, by_features = compare(embed(features, samples), train_features[0], held)
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
