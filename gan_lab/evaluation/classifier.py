"""A small digit classifier that gan-lab trains itself, caches, and uses to score generated images.

Mode collapse on MNIST shows as missing classes: from the classifier's predictions on generated
images come the classes covered, the KL between the generated and the real class histograms and
the mean confidence; from its penultimate layer, a Fréchet distance (an MNIST-sized FID); in pixels,
precision, recall, density and coverage (in the classifier's features they cannot tell blobs from digits).
Fashion-MNIST gets its own classifier the same way. Images are uint8 (N, C, H, W) tensors held in
memory, as in gan_lab.data; batches are drawn by index, no DataLoader.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_lab.torchvision_sets import load_arrays as _load_torchvision
from gan_lab.errors import GanLabError
from gan_lab.evaluation.metrics import frechet_distance, histogram_kl, knn_metrics
from gan_lab.evaluation.sampling import inference_batch

__all__ = ["Classifier", "train_classifier", "evaluate_accuracy", "default_cache_dir", "classifier_path",
           "load_or_train_classifier", "classifier_when_needed", "load_classifier", "class_metrics", "DEFAULT_EPOCHS", "DEFAULT_BATCH_SIZE"]

FORMAT, VERSION = "gan-lab-classifier", 1
DATA_SETS = ("mnist", "fashion_mnist")  # 1 x 28 x 28, 10 classes: what the architecture expects
# 5 epochs of Adam at 3e-3 with cosine decay: 99.3% MNIST test accuracy in ~2 min on one CPU core
# (3 epochs at 1e-3 stopped at 98.7-98.9%)
DEFAULT_EPOCHS = 5
CPU_MINUTES = 2  # what those epochs take on one idle CPU core, said before they start
DEFAULT_BATCH_SIZE = 128
LEARNING_RATE = 3e-3


class Classifier(nn.Module):
    """Two 3x3 conv blocks and a 128-unit hidden layer for 1x28x28 images in [-1, 1]."""

    def __init__(self, n_classes: int = 10, width: int = 32, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),              # 28 -> 14
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),      # 14 -> 7
            nn.Flatten(), nn.Dropout(0.25),
            nn.Linear(2 * width * 7 * 7, feature_dim), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(feature_dim, n_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features (N, feature_dim), the space the Fréchet distance is taken in."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, n_classes)."""
        return self.head(self.body(x))


def _to_unit_range(images: Tensor) -> Tensor:
    # uint8 [0, 255] -> float [-1, 1], the range generators produce (same map as ImageData.sample)
    return images.to(torch.float32) / 127.5 - 1.0


def train_classifier(images: Tensor, labels: Tensor, *, epochs: int = DEFAULT_EPOCHS,
                     batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0, progress: bool = True,
                     device: str | torch.device = "cpu", n_classes: int = 10) -> Classifier:
    """Train a Classifier with Adam on uint8 (N, 1, 28, 28) images; the same seed gives the same weights."""
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many labels as images (at least one), got {len(images)} and {len(labels)}")
    device = torch.device(device)
    images, labels = images.to(device), labels.to(device=device, dtype=torch.long)
    steps_per_epoch = -(-len(images) // batch_size)
    total_steps = epochs * steps_per_epoch

    # fork_rng: seed init and dropout without moving the caller's global RNG state
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = Classifier(n_classes).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        # cosine decay to 0 over the whole run: a high rate early for speed, a low one at the end
        # to settle (the last epoch still gains ~0.1% test accuracy)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
        order = torch.Generator().manual_seed(seed)  # shuffling on the CPU: same order on any device
        model.train()
        with _progress_bar(progress, total_steps) as advance:
            for _ in range(epochs):
                permutation = torch.randperm(len(images), generator=order).to(device)
                for start in range(0, len(images), batch_size):
                    idx = permutation[start:start + batch_size]
                    x, y = _to_unit_range(images.index_select(0, idx)), labels.index_select(0, idx)
                    loss = F.cross_entropy(model(x), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    advance(loss.item())
    return model.eval()


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[float], None]]:
    """Yield advance(loss): a rich bar on a terminal, a plain line every 5% in logs and pipes, or nothing.

    Under a live bar the run's log file (gan_lab.runs.runlog) still gets the plain lines.
    """
    if not enabled:
        yield lambda loss: None
        return
    from gan_lab.runs import runlog
    from gan_lab.runs.tracker import Pace, console

    pace, every, done = Pace(total), max(1, total // 20), 0
    live = console.is_terminal  # piped: no live bar, but never minutes of silence
    say = partial(runlog.line, console) if live else lambda text: console.print(text, highlight=False)
    say(f"training the classifier: {total} steps")

    def line(loss: float) -> None:
        nonlocal done
        done += 1
        if done % every == 0 or done == total:
            say(f"classifier step {done}/{total}  {pace(done)}  loss {loss:.4f}")
    if not live:
        yield line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # inside a run's own live bar (its first evaluation) this bar nests below it (rich >= 14)
    with Progress(TextColumn("training classifier"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), transient=True,
                  console=console) as bar:
        task = bar.add_task("train", total=total, loss=float("nan"))

        def advance(loss: float) -> None:
            bar.update(task, advance=1, loss=loss)
            line(loss)
        yield advance


@torch.no_grad()
def _batched(fn: Callable[[Tensor], Tensor], images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    # forward passes in batches: 10k images at once would hold a few hundred MB of activations
    return torch.cat([fn(images[i:i + batch_size].to(device)) for i in range(0, len(images), batch_size)])


def evaluate_accuracy(model: Classifier, images: Tensor, labels: Tensor, batch_size: int | None = None) -> float:
    """Fraction of uint8 (N, 1, 28, 28) images whose predicted class equals the label."""
    model.eval()
    device = next(model.parameters()).device
    batch_size = batch_size or inference_batch(device)
    predictions = _batched(lambda x: model(_to_unit_range(x)).argmax(dim=1), images, batch_size, device)
    return (predictions == labels.to(device)).float().mean().item()


def default_cache_dir() -> Path:
    """Where classifiers are cached: $GAN_LAB_CACHE, else ~/.cache/gan-lab."""
    return Path(os.path.expanduser(os.environ.get("GAN_LAB_CACHE", "~/.cache/gan-lab")))


def classifier_path(cache_dir: Path, data_name: str) -> Path:
    """The cache file of one data set's classifier: <cache_dir>/<data_name>_classifier.pt."""
    return Path(os.path.expanduser(cache_dir)) / f"{data_name}_classifier.pt"


def load_or_train_classifier(data_name: str, root: str, cache_dir: str | Path | None = None, *,
                             download: bool = False, device: str | torch.device = "cpu",
                             epochs: int = DEFAULT_EPOCHS, seed: int = 0, progress: bool = True,
                             retrain: bool = False) -> Classifier:
    """The cached classifier for mnist or fashion_mnist, trained on its train split (and cached) on first use.

    A cached file is reused whatever epochs and seed are asked for, unless retrain=True: then a
    new one is trained and replaces the file only once it is complete.
    """
    if data_name not in DATA_SETS:
        raise GanLabError(f"There is no built-in classifier for data set {data_name!r}: class metrics "
                          f"are available for {' and '.join(DATA_SETS)} only.")
    path = classifier_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), data_name)
    if path.exists() and not retrain:
        return load_classifier(path, data_name)[0].to(device)

    images, labels = _load_torchvision(data_name, root, download, train=True)
    steps = epochs * -(-len(images) // DEFAULT_BATCH_SIZE)
    # said before it starts: minutes that a run's first evaluation (or `gan-lab classifier`) spends once
    print(f"Training the {data_name} classifier the metrics read ({steps:,} steps, {epochs} epochs of "
          f"{len(images):,} images): about {CPU_MINUTES} minutes on an idle CPU core, several times that on a busy "
          f"one, once; it is cached at {path} for every later run.", flush=True)
    started = time.perf_counter()
    model = train_classifier(images, labels, epochs=epochs, batch_size=DEFAULT_BATCH_SIZE, seed=seed,
                             progress=progress, device=device)
    seconds = time.perf_counter() - started
    test_images, test_labels = _load_torchvision(data_name, root, download, train=False)
    accuracy = evaluate_accuracy(model, test_images, test_labels)
    _save(path, {"format": FORMAT, "version": VERSION, "data": data_name,
                 "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                 "test_accuracy": accuracy, "seed": seed, "epochs": epochs})
    print(f"Trained the {data_name} classifier in {seconds:.0f} s ({epochs} epochs, seed {seed}): "
          f"test accuracy {accuracy:.2%}; cached at {path}")
    return model


def held_out_images(data_name: str, root: str) -> Tensor:
    """The test split's images, uint8 (N, 1, 28, 28): real images no generator trained on (gan-lab trains on train)."""
    return _load_torchvision(data_name, root, False, train=False)[0]


def _save(path: Path, payload: dict) -> None:
    # temp file in the same folder + os.replace: a crash mid-write never leaves a half file at path,
    # and two processes training at once each replace it with a whole one
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def classifier_when_needed(data_name: str, root: str, cache_dir: str | Path | None = None, *,
                           device: str | torch.device = "cpu") -> Callable[[], Classifier]:
    """The classifier as a call: a cached one is loaded (and checked) now, an uncached one trained on the first call.

    A run evaluates only after its first steps (at train.eval_every, or at the end): its minutes of
    training are spent when a metric first needs it, not before the run's first step.
    """
    if data_name not in DATA_SETS:
        raise GanLabError(f"There is no built-in classifier for data set {data_name!r}: class metrics "
                          f"are available for {' and '.join(DATA_SETS)} only.")
    path = classifier_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), data_name)
    made: list[Classifier] = [load_classifier(path, data_name)[0].to(device)] if path.exists() else []

    def classifier() -> Classifier:
        if not made:
            made.append(load_or_train_classifier(data_name, root, cache_dir, device=device))
        return made[0]
    return classifier


def load_classifier(path: Path, data_name: str) -> tuple[Classifier, dict]:
    """The cached classifier at path, in eval mode, and the file's payload (test accuracy, seed, epochs, ...)."""
    def unusable(why: str) -> GanLabError:
        return GanLabError(f"The cached classifier {path} is unusable ({why}). Delete the file and run "
                           f"again: gan-lab will retrain the {data_name} classifier and cache it afresh.")

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        # any exception here means the bytes are not a readable checkpoint: a truncated or foreign
        # file makes the weights-only unpickler raise IndexError, KeyError, EOFError, BadZipFile, ...
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise unusable(f"it cannot be read as a checkpoint: {detail}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise unusable(f"it is not a gan-lab classifier file (no format={FORMAT!r})")
    if payload.get("version") != VERSION:
        raise unusable(f"it has version {payload.get('version')!r}, this gan-lab reads version {VERSION}")
    if payload.get("data") != data_name:
        raise unusable(f"it holds a classifier for {payload.get('data')!r}, not {data_name!r}")
    model = Classifier()
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError, AttributeError) as err:
        raise unusable(f"its weights do not fit the classifier: {type(err).__name__}") from None
    return model.eval(), payload


@torch.no_grad()
def class_metrics(model: Classifier, fake_images: Tensor, real_images: Tensor, n_classes: int = 10,
                  batch_size: int | None = None, knn_samples: int | None = None) -> dict[str, float]:
    """Classes covered, class-histogram KL, mean confidence, feature Fréchet distance, precision, recall,
    density and coverage of fake vs real.

    Images are float (N, 1, 28, 28) in [-1, 1]. class_kl is KL(p_fake || p_real) between the
    histograms of predicted classes; it is +inf when the fakes hit a class no real image is
    predicted as (which never happens with a real test set of a few hundred images or more).
    The k-NN metrics (gan_lab.evaluation.metrics.knn_metrics: precision, recall, density, coverage) are
    taken in pixels on the first knn_samples of each set (None: all).
    """
    model.eval()
    device = next(model.parameters()).device
    batch_size = batch_size or inference_batch(device)  # None: what the device runs fastest
    fake_features = _batched(lambda x: model.features(x.float()), fake_images, batch_size, device)
    real_features = _batched(lambda x: model.features(x.float()), real_images, batch_size, device)
    # the head on stored features equals forward() in eval mode (dropout is off): one pass gives both
    fake_logits, real_logits = model.head(fake_features), model.head(real_features)

    fake_counts = torch.bincount(fake_logits.argmax(dim=1), minlength=n_classes)
    real_counts = torch.bincount(real_logits.argmax(dim=1), minlength=n_classes)
    return {
        "classes_covered": int((fake_counts > 0).sum().item()),
        "class_kl": histogram_kl(fake_counts, real_counts.double() / real_counts.sum()),
        "confidence": fake_logits.softmax(dim=1).max(dim=1).values.mean().item(),
        "frechet_distance": frechet_distance(real_features, fake_features),
        # in pixels, not in the classifier's features: there, grey blobs after one DCGAN step sit inside the
        # real digits' k-NN balls (precision 0.87, real test digits 0.87; a constant image 1.00, density 1.2),
        # in pixels they score 0 beside real digits' 0.85 (docs/metric_sanity.md)
        **knn_metrics(real_images[:knn_samples].flatten(1), fake_images[:knn_samples].flatten(1)),
    }
