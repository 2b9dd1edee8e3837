"""FID, Inception Score, KID and precision/recall through torch-fidelity's Inception, with a protocol one can trust.

torch-fidelity (the field's reference implementation) supplies the network and every formula;
gan-lab adds what makes the numbers trustworthy and repeatable:
- the weights file is read once, checked with torch.load(weights_only=True) and its sha256 taken from
  those same bytes; torch-fidelity gets the checked state dict, never the path (it would load a path
  with weights_only=False, and the file could change between the check and the load);
- the real images' features are cached per data set, split, count, content and weights, as plain
  tensors read back with weights_only=True (torch-fidelity's own cache unpickles its files);
- the protocol (counts, split, extractor, layer, weights, torch's and torch-fidelity's versions) is
  recorded, with a caveat below FEATURE_DIMS generated images; below MIN_FID_SAMPLES there are none.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gan_lab.errors import GanLabError
from gan_lab.runs.files import atomic_writer

EXTRACTOR = "inception-v3-compat"  # torch-fidelity's port of the TF Inception that FID was defined with
FEATURES = "2048"                  # pool3: FID, KID and precision/recall
LOGITS = "logits_unbiased"         # the 1008 logits: Inception Score
PAPER_SAMPLES = 50000              # FID-50k: the papers' protocol (50,000 generated vs the training split)
REFERENCE_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file; its sha256 starts 6726825d
# where torch-fidelity publishes it (its feature_extractor_inceptionv3.py's URL); torch-fidelity records no full hash
REFERENCE_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{REFERENCE_FILE}"
# torch.hub's naming: the hex after a file name's last '-' is the start of its sha256, checked on download
REFERENCE_SHA256_PREFIX = REFERENCE_FILE.split("-")[-1].removesuffix(".pth")
_UNREACHABLE: dict[str, OSError] = {}  # a download that failed in this process: said once, never tried again
MIN_FID_SAMPLES = 10  # fewest images (generated and real) measured: IS's 10 splits, k-NN precision/recall's k + 1 = 4
# pool3's dimensions: with fewer images than this the covariance FID takes is rank-deficient, so FID is
# biased upward (and the more so the fewer the images); it still orders models measured at one count
FEATURE_DIMS = 2048
BATCH = 64  # images through Inception at a time (299 x 299 each)


@dataclass(frozen=True)
class Weights:
    """An Inception weights file that torch.load(weights_only=True) read as a state dict of tensors."""

    path: str
    sha256: str
    source: str  # "inception_weights" (given) or "torch-fidelity default" (downloaded to torch's hub cache)
    # the state dict read from the very bytes whose sha256 this is: what the extractor loads
    state: dict[str, Tensor] = field(default_factory=dict, compare=False, repr=False, hash=False)

    @property
    def reference(self) -> bool:
        """Whether these are torch-fidelity's reference weights (the ones published FIDs use)."""
        return self.sha256.startswith(REFERENCE_SHA256_PREFIX)


@lru_cache(maxsize=4)
def _checked(path: str, size: int, mtime_ns: int, source: str) -> Weights:
    with open(path, "rb") as f:  # OSError: missing or unreadable, the caller's "Inception metrics are off" path
        data = f.read()  # once: the bytes checked, hashed and loaded are the same
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever the unpickler says, the file is refused
        why = " ".join(str(err).split())[:300]
        raise GanLabError(
            f"Refused the Inception weights {path}: torch.load(weights_only=True) cannot read it as plain tensors "
            f"({type(err).__name__}: {why}). torch-fidelity would load it with weights_only=False, which runs any "
            f"code a crafted file holds, so gan-lab checks it first and nothing from it was run. Use torch-fidelity's "
            f"{REFERENCE_FILE} (sha256 6726825d...), or leave inception_weights unset to download it.") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise GanLabError(f"Refused the Inception weights {path}: it holds {type(state).__name__}, not a state dict "
                          f"of tensors. Use torch-fidelity's {REFERENCE_FILE}, or leave inception_weights unset to "
                          f"download it.")
    return Weights(path, hashlib.sha256(data).hexdigest(), source, state)


def check_weights(path: str | None) -> Weights:
    """The weights to use, checked: the given file, else torch-fidelity's, downloaded once into torch's hub cache.

    Raises OSError when the file is missing or cannot be downloaded (a failed download is tried once per
    process: later calls raise its error again), GanLabError when it is not plain tensors.
    """
    source = "inception_weights"
    if path is None:  # torch-fidelity's default, fetched here so that it is checked like any other file
        source = "torch-fidelity default"
        path = os.path.join(torch.hub.get_dir(), "checkpoints", REFERENCE_FILE)
        if path in _UNREACHABLE:  # the run was told once: no second attempt (nor a second wait on the network)
            raise _UNREACHABLE[path]
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                torch.hub.download_url_to_file(REFERENCE_URL, path, hash_prefix=REFERENCE_SHA256_PREFIX,
                                               progress=False)
            except OSError as err:
                _UNREACHABLE[path] = err
                raise
    path = os.path.abspath(os.path.expanduser(path))
    stat = os.stat(path)  # OSError when it is not there
    return _checked(path, stat.st_size, stat.st_mtime_ns, source)


def where_to_get_weights() -> str:
    """Where torch-fidelity's reference weights come from and how to check them: for a message."""
    return (f"torch-fidelity's {REFERENCE_FILE} (published at {REFERENCE_URL}; its sha256 begins "
            f"{REFERENCE_SHA256_PREFIX}, as torch.hub names a file by the start of its sha256 and checks it on "
            f"download: `sha256sum` the copy you bring)")


class _Images(torch.utils.data.Dataset):
    """uint8 (N, 3, H, W) images as the Dataset torch-fidelity reads."""

    def __init__(self, images: Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


@dataclass
class InceptionMetrics:
    """FID, IS, KID and precision/recall of generated images against a data set's real ones."""

    weights: Weights
    real: Tensor              # uint8 (N_real, 3, H, W)
    name: str                 # the data set
    split: str                # which real split: train or test
    n_fake: int               # generated images per evaluation
    cache_dir: Path           # <cache>/inception holds the reals' features
    cuda: bool = field(default_factory=torch.cuda.is_available)
    _extractor: Any = None

    def protocol(self) -> dict[str, Any]:
        """What eval.json records: the counts, the real split, the extractor and its weights, the library."""
        import torch_fidelity

        return {"fid": fid_name(self.n_fake), "generated_images": self.n_fake, "real_images": len(self.real),
                "real_split": f"{self.name} {self.split}", "feature_extractor": f"{EXTRACTOR} (torch-fidelity)",
                "feature_layer": f"{FEATURES} (pool3: FID, KID, precision/recall); {LOGITS} (IS)",
                # Kynkäänniemi et al. (and torch-fidelity's prc default) use VGG16 features: the same method on
                # Inception's here, so these precision/recall compare with each other, not with the paper's
                "kid_subset_size": self.kid_subset_size(),
                "precision_recall": "Kynkäänniemi et al. 2019, k=3, on Inception pool3 features (the paper: VGG16)",
                "weights": self.weights.path, "weights_sha256": self.weights.sha256,
                "weights_source": self.weights.source, "reference_weights": self.weights.reference,
                "torch": torch.__version__, "torch_fidelity": torch_fidelity.__version__,
                **({"caveat": few_images_caveat(self.n_fake)} if self.n_fake < FEATURE_DIMS else {})}

    def kid_subset_size(self) -> int:
        """KID's subset size: torch-fidelity's 1,000, or fewer when a set is smaller."""
        return min(1000, self.n_fake, len(self.real))

    def extractor(self) -> Any:
        """torch-fidelity's Inception, built once from the checked file."""
        if self._extractor is None:
            from torch_fidelity.utils import create_feature_extractor

            # torch-fidelity reads "a path" with torch.load: it gets the checked state dict, serialised
            # here, so it never opens the file again (which may have changed since the check)
            checked = io.BytesIO()
            torch.save(self.weights.state, checked)
            checked.seek(0)
            try:
                self._extractor = create_feature_extractor(EXTRACTOR, [FEATURES, LOGITS], cuda=self.cuda,
                                                           feature_extractor_weights_path=checked,
                                                           verbose=False)
            except RuntimeError as err:  # load_state_dict: other keys or shapes than Inception's
                raise GanLabError(f"The Inception weights {self.weights.path} are plain tensors but not "
                                  f"torch-fidelity's Inception ({' '.join(str(err).split())[:300]}). Use "
                                  f"{REFERENCE_FILE}, or leave inception_weights unset to download it.") from None
        return self._extractor

    def features(self, images: Tensor) -> dict[str, Tensor]:
        """Inception's pool3 features and logits of uint8 images."""
        from torch_fidelity.utils import get_featuresdict_from_dataset

        # save_cpu_ram: no DataLoader workers (the images are already in memory)
        return get_featuresdict_from_dataset(_Images(images), self.extractor(), min(BATCH, len(images)), self.cuda,
                                             True, False)

    def cache_file(self, images: Tensor | None = None, what: str = "") -> Path:
        """<cache>/inception/<data>-<split><what>-<n>-<content>-<weights>.pt: one file per image set and protocol.

        images: real images whose features are cached (default: the real set); what: what they are
        ("-mirrored-held": memorisation's held images flipped), the content hash telling sets apart.
        """
        images = self.real if images is None else images
        content = hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:12]
        return self.cache_dir / "inception" / (f"{self.name}-{self.split}{what}-{len(images)}-{content}-"
                                               f"{self.weights.sha256[:12]}.pt")

    def real_features(self, images: Tensor | None = None, what: str = "") -> Tensor:
        """Real images' pool3 features (default: the real set's): from the cache when it holds them, else
        computed and cached."""
        images = self.real if images is None else images
        file = self.cache_file(images, what)
        if file.exists():
            try:  # plain tensors only: a cache file can never run code
                cached = torch.load(file, map_location="cpu", weights_only=True)
                if isinstance(cached, Tensor) and cached.shape == (len(images), 2048):
                    return cached
            except Exception:  # noqa: BLE001 - a torn or foreign cache file is recomputed, not trusted
                pass
        features = self.features(images)[FEATURES]
        file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(file) as tmp:  # whole or absent: parallel evaluations never read half a file
            torch.save(features.contiguous(), tmp)
        return features

    def __call__(self, fake: Tensor) -> dict[str, float]:
        """The metrics of uint8 generated images: torch-fidelity's formulas on torch-fidelity's features."""
        from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
        from torch_fidelity.metric_isc import isc_features_to_metric
        from torch_fidelity.metric_kid import kid_features_to_metric
        from torch_fidelity.metric_prc import prc_features_to_metric

        real = self.real_features()
        fake_features = self.features(fake)
        pool = fake_features[FEATURES]
        fid = fid_statistics_to_metric(fid_features_to_statistics(pool), fid_features_to_statistics(real), False)
        isc = isc_features_to_metric(fake_features[LOGITS])
        kid = kid_features_to_metric(pool, real, kid_subset_size=self.kid_subset_size(), verbose=False)
        # Kynkäänniemi et al. 2019, k = 3; save_cpu_ram: distances a block at a time
        prc = prc_features_to_metric(pool, real, save_cpu_ram=True, verbose=False)
        return {"metrics/fid": float(fid["frechet_inception_distance"]),
                "metrics/inception_score": float(isc["inception_score_mean"]),
                "metrics/kid": float(kid["kernel_inception_distance_mean"]),
                "metrics/precision": float(prc["precision"]), "metrics/recall": float(prc["recall"])}


def fid_name(n: int) -> str:
    """FID-10k, FID-50k, FID-40: the name of the protocol by its number of generated images."""
    return f"FID-{n // 1000}k" if n % 1000 == 0 else f"FID-{n}"


def few_images_caveat(n: int) -> str:
    """Why an FID of n < FEATURE_DIMS images reads high, and what it may be compared with."""
    return (f"{fid_name(n)} on fewer images than Inception's {FEATURE_DIMS} feature dimensions: the covariance is "
            f"rank-deficient, so FID reads high (the more so the fewer the images); compare it only with FIDs of "
            f"{n} images")


def too_few_images(n_fake: int, n_real: int) -> str | None:
    """Why the Inception metrics cannot be computed on these counts, or None when they can."""
    if min(n_fake, n_real) >= MIN_FID_SAMPLES:
        return None
    return (f"the Inception metrics (FID, IS, KID, precision/recall) need at least {MIN_FID_SAMPLES} generated and "
            f"{MIN_FID_SAMPLES} real images (IS averages 10 splits; precision/recall's k = 3 neighbours need 4), "
            f"and this evaluation has {n_fake} generated and {n_real} real: they are left out (a data set of at "
            f"least {FEATURE_DIMS} images gives an FID whose covariance is full-rank)")


def short_protocol(protocol: dict[str, Any]) -> str:
    """One line for training's console and TensorBoard: which FID metrics/fid is, and what it compares with."""
    n = protocol["generated_images"]
    comparable = ("the papers' protocol" if n == PAPER_SAMPLES else
                  f"not comparable with papers' {fid_name(PAPER_SAMPLES)}")
    weights = "reference weights" if protocol["reference_weights"] else "NOT the reference Inception weights"
    return (f"metrics/fid is {protocol['fid']} ({protocol['real_split'].split()[-1]} split, {n} generated vs "
            f"{protocol['real_images']} real, {weights}; {comparable})"
            + (f"; {protocol['caveat']}" if "caveat" in protocol else ""))


def describe_protocol(protocol: dict[str, Any]) -> str:
    """One paragraph for eval's output: which FID this is, against what, with which weights."""
    n = protocol["generated_images"]
    comparable = ("the papers' protocol" if n == PAPER_SAMPLES else
                  f"not comparable with papers' FID-50k (gan-lab eval fid_samples={PAPER_SAMPLES} gives that)")
    weights = (f"weights sha256 {protocol['weights_sha256'][:16]}... ({protocol['weights_source']}"
               + ("" if protocol["reference_weights"] else
                  "; NOT torch-fidelity's reference weights, so no FID here compares with published ones") + ")")
    return (f"Inception metrics: {protocol['fid']}, {comparable}: {n} generated vs {protocol['real_images']} real "
            f"images ({protocol['real_split']} split); {protocol['feature_extractor']} features "
            f"{protocol['feature_layer']}; {weights}; torch {protocol.get('torch', '?')}, torch-fidelity "
            f"{protocol['torch_fidelity']}." + (f" Caveat: {protocol['caveat']}." if "caveat" in protocol else ""))
