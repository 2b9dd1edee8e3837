"""What a data set measures: each measure is one class that carries its own computation.

A data set declares its measures (`measures()` in gan_lab.data and gan_lab.folder); the evaluator
(gan_lab.evaluation.evaluate) builds each one's evaluator from an EvalContext and iterates over what
the data declares: there is no list of measure types anywhere. A measure says
  - `samples()`: how many samples its protocol draws,
  - `during_training`: whether it runs while training (metrics/*) or only in `gan-lab eval`,
  - `evaluator(context)`: a function G -> {"<prefix>/...": value}, built once (classifier, Inception
    weights, the reals' features), called at every evaluation. An evaluator may carry `protocol` (what
    eval.json records about how it measured) and `reports` (functions of the eval.json path that write a
    figure beside it and return the console's paragraph).
This module is in the bottom layer, beside the data sets that declare from it; the functions a
computation needs (sampling, the digit classifier, torch-fidelity, the memorisation check) come down
from the evaluation layer in `context.tools` (gan_lab.evaluation.tools), never by an import, and the
expensive ones run inside evaluator() only, so declaring a measure costs a data set nothing.

A new measure is its class (here), its declaration by the data sets that have it, and its test
(tests/test_measures.py walks conf/data/ and checks every declared measure against what it computes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

Evaluator = Callable[[nn.Module], dict[str, float]]  # G -> {"metrics/...": value}

MIXTURE_SAMPLES = 2500  # the VEEGAN / PacGAN protocol
IMAGE_SAMPLES = 10000
# precision / recall / density / coverage on the first 5,000 of them: their four k-NN distance
# passes grow as N^2 (one thread of a loaded 2-core Xeon: 10 s at 5,000, 45 s at 10,000, beside
# ~64 s for the classifier features of 2 x 10,000 images). k-NN balls widen as N falls, so
# compare these numbers only at the same count.
KNN_SAMPLES = 5000
STACKED_SAMPLES = 26000  # the VEEGAN / PacGAN protocol for stacked MNIST


@dataclass(frozen=True)
class EvalContext:
    """What building an evaluator may need beyond the data: where things are, which z, how many fakes for FID."""

    classifier_root: str | None = None  # where the digit classifier's data (MNIST, Fashion-MNIST) lives
    cache_dir: str | None = None  # the classifier's and the reals' Inception features' cache
    inception_weights: str | None = None  # torch-fidelity's Inception .pth; None: its download
    seed: int = 0  # the seed of every evaluation's z (gan_lab.evaluation.sampling.EVAL_SEED)
    fid_samples: int | None = None  # generated images for the Inception metrics; None: the protocol's
    # the evaluation layer's functions (gan_lab.evaluation.tools), handed down by evaluate.eval_context:
    # a measure carries its computation without importing the layer above it
    tools: Any = None


class Measure:
    """Base class of every measure: its sample count, when it runs, and its evaluator."""

    during_training: ClassVar[bool] = True  # False: only `gan-lab eval` computes it

    def samples(self) -> int:
        """How many samples this measure's protocol draws."""
        raise NotImplementedError

    def evaluator(self, context: EvalContext) -> Evaluator:
        """The function G -> {"metrics/...": value} this measure computes (built once, called per evaluation)."""
        raise NotImplementedError


def once(compute: Callable[[], dict[str, float]]) -> Callable[[], dict[str, float]]:
    """compute(), run on the first call only and kept: a reference is the same at every evaluation."""
    kept: list[dict[str, float]] = []

    def cached() -> dict[str, float]:
        if not kept:
            kept.append(compute())
        return kept[0]
    return cached


def image_samples(size: int | None) -> int:
    """How many samples image metrics draw: IMAGE_SAMPLES, or the whole data set when it is smaller."""
    return min(IMAGE_SAMPLES, size or IMAGE_SAMPLES)


@dataclass(frozen=True)
class ModeCoverage(Measure):
    """A Gaussian mixture's mode coverage (VEEGAN / PacGAN): a sample within 3 sigma of a centre covers its mode."""

    centers: Tensor  # (K, D) mode centres
    sigma: float     # the modes' standard deviation

    def samples(self) -> int:
        """MIXTURE_SAMPLES, the VEEGAN / PacGAN protocol."""
        return MIXTURE_SAMPLES

    def evaluator(self, context: EvalContext) -> Evaluator:
        """Mode coverage of MIXTURE_SAMPLES samples; conditional: how often the nearest mode is the requested one."""

        tools, centers, n = context.tools, self.centers, self.samples()

        def mixture(G: nn.Module) -> dict[str, float]:
            y = tools.class_labels(G, n)
            fake = tools.generate(G, n, y, seed=context.seed)
            found = tools.mixture_metrics(fake, centers, self.sigma)
            metrics = {f"metrics/{k}": float(v) for k, v in found.items()}
            if y is not None:
                nearest = torch.cdist(fake.double(), centers.double()).argmin(1)
                metrics.update(tools.label_accuracy(nearest, y, G.n_classes))
            return metrics

        def reference() -> dict[str, float]:  # n draws of the mixture itself, seeded apart from the evaluation's
            g = torch.Generator().manual_seed(context.seed + 1)
            draws = centers.double()[torch.randint(len(centers), (n,), generator=g)]
            draws = draws + self.sigma * torch.randn(draws.shape, generator=g, dtype=torch.float64)
            return {f"metrics/{k}": float(v) for k, v in tools.mixture_metrics(draws, centers, self.sigma).items()}
        mixture.reference = once(reference)  # type: ignore[attr-defined]
        return mixture


@dataclass(frozen=True)
class DigitClasses(Measure):
    """Class coverage, Fréchet distance and precision / recall in the features of gan-lab's digit classifier."""

    classifier: str  # the data set the classifier is trained on: mnist or fashion_mnist
    real: Tensor     # uint8 (N, 1, H, W): the real images the samples are compared with

    def samples(self) -> int:
        """IMAGE_SAMPLES, or the whole data set when it is smaller."""
        return image_samples(len(self.real))

    def evaluator(self, context: EvalContext) -> Evaluator:
        """The digit classifier's metrics of samples() samples; conditional: how often it reads the requested label."""
        tools = context.tools
        classifier = tools.classifier_when_needed(self.classifier, context.classifier_root or "data",
                                                  context.cache_dir, device=self.real.device)  # trained on first use
        n = self.samples()
        real = self.real[:n].float().div(127.5).sub(1)

        def classes(G: nn.Module) -> dict[str, float]:
            model = classifier()
            y = tools.class_labels(G, n)
            fake = tools.generate(G, n, y, seed=context.seed)
            metrics = {f"metrics/{k}": float(v)
                       for k, v in tools.class_metrics(model, fake, real, knn_samples=KNN_SAMPLES).items()}
            if y is not None:  # conditional: how often the classifier recognises the requested label
                with torch.no_grad():
                    model.eval()
                    predicted = torch.cat([model(fake[i:i + 1000]).argmax(1) for i in range(0, n, 1000)])
                metrics.update(tools.label_accuracy(predicted, y, G.n_classes))
            return metrics

        def reference() -> dict[str, float]:  # the test split's first n images in place of the samples
            held_out = tools.held_out_images(self.classifier, context.classifier_root or "data")[:n]
            return {f"metrics/{k}": float(v) for k, v in tools.class_metrics(
                classifier(), held_out.to(self.real.device).float().div(127.5).sub(1), real,
                knn_samples=KNN_SAMPLES).items()}
        classes.reference = once(reference)  # type: ignore[attr-defined]
        return classes


@dataclass(frozen=True)
class StackedDigits(Measure):
    """The histogram over 10^digits modes: the classifier's digit on each channel (VEEGAN / PacGAN's Stacked MNIST)."""

    classifier: str              # the data set the per-channel classifier is trained on
    digits: int                  # channels, each one digit: 10^digits modes
    device: torch.device | str   # where the classifier runs: the data's device

    def samples(self) -> int:
        """STACKED_SAMPLES, the VEEGAN / PacGAN protocol."""
        return STACKED_SAMPLES

    def evaluator(self, context: EvalContext) -> Evaluator:
        """Modes covered and reverse KL of STACKED_SAMPLES samples over the 10^digits modes the classifier reads."""

        tools = context.tools
        classifier = tools.classifier_when_needed(self.classifier, context.classifier_root or "data",
                                                  context.cache_dir, device=self.device)  # trained on first use
        n, n_modes = self.samples(), 10 ** self.digits

        def stacked(G: nn.Module) -> dict[str, float]:
            model = classifier()
            fake = tools.generate(G, n, tools.class_labels(G, n), seed=context.seed)
            counts = torch.bincount(tools.stacked_modes(model, fake), minlength=n_modes)
            uniform = torch.full((n_modes,), 1 / n_modes, dtype=torch.float64)
            return {"metrics/modes_covered": float((counts > 0).sum()), "metrics/n_modes": float(n_modes),
                    "metrics/reverse_kl": tools.histogram_kl(counts, uniform)}
        return stacked


@dataclass(frozen=True)
class InceptionScores(Measure):
    """FID, Inception Score and KID through torch-fidelity's Inception network."""

    name: str     # names the cache of the real images' Inception features
    real: Tensor  # uint8 (N, 3, H, W): the real images
    split: str = "train"  # which split `real` is, recorded with the metrics

    def samples(self) -> int:
        """IMAGE_SAMPLES (FID-10k), or the whole data set when it is smaller; fid_samples= overrides it."""
        return image_samples(len(self.real))

    def evaluator(self, context: EvalContext) -> Evaluator:
        """FID, Inception Score, KID and precision/recall through torch-fidelity (gan_lab.evaluation.inception).

        The Inception weights come from the context (a local .pth, torch-fidelity's
        weights-inception-2015-12-05-6726825d.pth) or torch-fidelity's own download, checked before
        use. Without them the run says so once and goes on with the metrics it has. fid_samples:
        generated images (default: samples(), FID-10k), against as many real ones as the data has up
        to that. The evaluator's `protocol` says what eval.json records.
        """
        tools, n, weights = context.tools, context.fid_samples or self.samples(), context.inception_weights
        too_few = tools.too_few_images(n, min(n, len(self.real)))
        if too_few:  # a tiny folder: said once, and the other metrics go on
            tools.console.print(f"[yellow]gan-lab: {too_few}.[/]", soft_wrap=True, highlight=False)
            return lambda G: {}
        try:
            checked = tools.check_weights(weights)  # a crafted file: GanLabError here, before anything is generated
        except OSError as err:
            where = f"from {weights}" if weights else "by download"
            tools.console.print(f"[yellow]gan-lab: Inception metrics (FID, IS, KID, precision/recall) are off for "
                                f"this run: the Inception weights could not be loaded {where} ({err}). Put "
                                f"{tools.where_to_get_weights()} on this machine and pass "
                                f"inception_weights=/path/to/it (or set GAN_LAB_INCEPTION_WEIGHTS); the other "
                                f"metrics go on, and no download is tried again in this run.[/]", soft_wrap=True,
                                highlight=False)
            return lambda G: {}
        metrics = tools.InceptionMetrics(checked, self.real[:n].cpu(), self.name, self.split, n,
                                         Path(context.cache_dir) if context.cache_dir else tools.default_cache_dir())
        metrics.extractor()  # built now: weights that are not Inception's are refused before a run trains

        def inception(G: nn.Module) -> dict[str, float]:
            fake = tools.generate(G, n, tools.class_labels(G, n), seed=context.seed)
            return metrics(fake.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu())
        inception.protocol = metrics.protocol()  # type: ignore[attr-defined]
        return inception


@dataclass(frozen=True)
class NearestTraining(Measure):
    """Memorisation (`gan-lab eval`): the samples that copy a training image, beside real images' count, in pixels
    and features (gan_lab.evaluation.memorisation)."""

    name: str  # the data set: names the cache of its training images' Inception features
    # uint8 (N, C, H, W): the training images a generator could copy. Samples with k times as many
    # channels are k images each, one per group of C channels (Stacked MNIST: three digits).
    real: Tensor
    classifier: str | None = None  # the digit classifier whose features are the feature space; None: Inception's

    during_training: ClassVar[bool] = False  # a nearest-neighbour search over the training set: eval only

    def samples(self) -> int:
        """IMAGE_SAMPLES, or the whole data set when it is smaller: the first of the evaluation's samples."""
        return image_samples(len(self.real))

    def evaluator(self, context: EvalContext) -> Evaluator:
        """memorisation/* of samples() samples; its report writes nearest_neighbours.png beside eval.json."""

        memorisation = context.tools.memorisation
        check = memorisation.memorisation_check(self, self.samples(), context.classifier_root, context.cache_dir,
                                                context.inception_weights, context.seed)
        found: list[Any] = []  # the last check's result, for its report

        def nearest(G: nn.Module) -> dict[str, float]:
            found[:] = [check(G)]
            return found[0].metrics

        def report(record: Path) -> str:
            return memorisation.report(found[0], record)
        nearest.reports = [report]  # type: ignore[attr-defined]
        return nearest


TABLE_SAMPLES = 5000  # generated rows per table evaluation: SDMetrics' scores settle well within 0.01 by then


def _table_frames(data: Any) -> tuple[Any, Any, dict[str, str]]:
    """(the real rows scored against: held out, else the training rows; the training rows; each column's kind)."""
    real = data.held_out_frame if len(data.held_out_frame) else data.train_frame
    return data.comparable(real), data.comparable(data.train_frame), {c.name: c.kind for c in data.table.columns}


@dataclass(frozen=True)
class TableScores(Measure):
    """A table's quality (SDMetrics' QualityReport against the held-out rows) and category coverage (its modes).

    Category coverage is the table's mode count: metrics/modes_covered of metrics/n_modes are the training
    rows' categories (every discrete column's, pooled) that the generated rows produce, which the diagnosis
    reads to name a category collapse while it happens.
    """

    data: Any  # gan_lab.table_data.TableData: its transform, held-out and training rows

    def samples(self) -> int:
        """TABLE_SAMPLES."""
        return TABLE_SAMPLES

    def evaluator(self, context: EvalContext) -> Evaluator:
        """Quality (column shapes, pair trends, their mean) and category (pair) coverage of samples() rows."""
        tools, n = context.tools, self.samples()
        real, train, kinds = _table_frames(self.data)

        def scores(G: nn.Module) -> dict[str, float]:
            table = tools.table_metrics()
            synthetic = self.data.comparable(self.data.transform.inverse(
                tools.generate(G, n, self.data.conditions(n, context.seed), seed=context.seed)))
            quality = table.quality(real, synthetic, kinds)
            covered = table.coverage(train, synthetic, kinds)
            metrics = {f"metrics/{k}": float(quality[k]) for k in ("quality", "column_shapes", "column_pair_trends")}
            metrics.update({f"metrics/{k}": float(covered[k]) for k in ("category_coverage", "category_pair_coverage")})
            if covered["categories_total"]:  # the diagnosis's mode count: categories are the table's modes
                metrics["metrics/modes_covered"] = float(covered["categories_covered"])
                metrics["metrics/n_modes"] = float(covered["categories_total"])
            return {k: v for k, v in metrics.items() if math.isfinite(v)}  # NaN: nothing to score (no pair)
        return scores


@dataclass(frozen=True)
class TableUtility(Measure):
    """`gan-lab eval` of a table: train on synthetic, test on the held-out rows (with data.target), privacy, figures."""

    during_training: ClassVar[bool] = False  # a model fitted twice and a nearest-row search: eval only
    data: Any  # gan_lab.table_data.TableData

    def samples(self) -> int:
        """TABLE_SAMPLES."""
        return TABLE_SAMPLES

    def evaluator(self, context: EvalContext) -> Evaluator:
        """TSTR beside train-on-real (with a target and held-out rows), DCR and exact copies; figures as reports."""
        tools, n, data = context.tools, self.samples(), self.data
        real, train, kinds = _table_frames(data)
        made: list[Any] = []  # the last evaluation's synthetic rows, which the figures show

        def utility(G: nn.Module) -> dict[str, float]:
            table = tools.table_metrics()
            synthetic = data.comparable(data.transform.inverse(
                tools.generate(G, n, data.conditions(n, context.seed), seed=context.seed)))
            made[:] = [synthetic]
            # eval-only tags, never metrics/* (what training logs): privacy is the table's memorisation check
            metrics = {f"memorisation/{k}": float(v) for k, v in table.privacy(train, synthetic, real, kinds).items()}
            if data.target is not None and len(data.held_out_frame):
                found = table.tstr(train, synthetic, real, data.target, kinds)
                metrics[f"utility/tstr_{found['metric']}"] = float(found["train_synthetic"])
                metrics[f"utility/trtr_{found['metric']}"] = float(found["train_real"])
            return metrics

        def figures(record: Path) -> str:
            table = tools.table_metrics()
            paths = [record.with_name("table_columns.png"), record.with_name("table_pair_trends.png")]
            for path, draw in zip(paths, (table.columns_figure, table.pair_trends_figure)):
                draw(real, made[0], kinds).savefig(path, dpi=100)
            return f"real against synthetic, per column and the pair trends: {paths[0]}, {paths[1]}"
        utility.reports = [figures]  # type: ignore[attr-defined]
        return utility
