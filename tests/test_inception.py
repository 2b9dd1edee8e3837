"""FID / IS / KID / precision-recall through torch-fidelity's real Inception path, offline.

The tests build a random-initialised Inception weights file (torch-fidelity's
FeatureExtractorInceptionV3 state dict) and pass it as inception_weights, so nothing is
downloaded. Inception upsamples every image to 299 px, so the data set is 10 images: still
several seconds per pass on one CPU thread, hence `slow` for the end-to-end test.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from unittest import mock

import pytest
import torch

from conftest import TINY, TINY_DCGAN, run_cli, user_error
from gan_lab.evaluation.inception import InceptionMetrics, describe_protocol

N_IMAGES = 10  # real images, and generated ones by default (the whole data set when it is under 10,000)


class TinyCifar10:
    """torchvision.datasets.CIFAR10's interface over N_IMAGES random 32x32 RGB images: no files, no pickle."""

    def __init__(self, root: str, train: bool = True, download: bool = False, **kwargs) -> None:
        g = torch.Generator().manual_seed(0 if train else 1)
        self.data = torch.randint(0, 256, (N_IMAGES, 32, 32, 3), generator=g, dtype=torch.uint8).numpy()
        self.targets = [i % 10 for i in range(N_IMAGES)]


def random_inception_weights(path: Path) -> Path:
    """torch-fidelity's Inception with random weights, its state dict torch.save'd as the real file is."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    torch.manual_seed(0)
    # the constructor loads weights (a file or the download): skip that, the weights come from the init below
    with mock.patch.object(inception, "load_state_dict_from_url", lambda *args, **kwargs: None), \
            mock.patch.object(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None):
        net = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in net.modules():
        # PyTorch's default init shrinks activations layer by layer: 40 layers on, pool3 features are ~1e-8
        # and every FID is 0. He init keeps them at unit scale, so different images get different features.
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.nn.init.normal_(net.fc.weight, std=1e-3)  # small logits: a softmax that is not one-hot, IS above 1
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_inception_weights(tmp_path_factory.mktemp("inception") / "pt_inception-random.pth")


@pytest.fixture(autouse=True)
def tiny_cifar10(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", TinyCifar10)


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torchvision

    run = tmp_path_factory.mktemp("cifar")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torchvision.datasets, "CIFAR10", TinyCifar10)
        run_cli("train", "data=cifar10", f"data.root={run}", "data.download=false", *TINY, *TINY_DCGAN,
                "train.batch_size=8",
                "threads=1", f"hydra.run.dir={run}")
    return run


# Quick, barely: 4.4 s on one thread (2 shared cores at load 5; 10 s at load 7) plus 1.9 s for the weights
# fixture. Half is FID's 2048 x 2048 eigenvalues, once on each side; the rest building two Inceptions.
def test_fid_kid_and_is_equal_torch_fidelitys_own_on_a_few_images(weights: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # gan-lab's metrics are torch-fidelity's own, on 24 tiny images (the test below: through eval, at 299 px)
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from gan_lab.evaluation.inception import check_weights

    # Inception resizes every image to 299 px: ~0.4 s an image on a loaded CPU thread. At 75 px (the least its
    # layers take; the pool is adaptive) a pass costs 1/16 of that, in gan-lab's extractor and in
    # calculate_metrics' alike: what is compared is which features, splits and subsets each side uses.
    monkeypatch.setattr(FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)
    # random Inception's features barely differ between images: logits 3,000 x the shared file's make their
    # softmax differ, so IS sits well above 1 (at 1.0000, any IS would match)
    state = torch.load(weights, weights_only=True)
    state["fc.weight"] = state["fc.weight"] * 3000
    torch.save(state, peaked := tmp_path / "pt_inception-peaked.pth")
    # IS splits the fakes 10 ways: 20 make 2 per split (10 would give exactly 1 whatever the features);
    # 4 reals are the fewest precision/recall's k = 3 allows, and KID's subset
    g = torch.Generator().manual_seed(3)
    real = torch.randint(0, 256, (4, 3, 16, 16), generator=g, dtype=torch.uint8)
    fake = torch.randint(0, 256, (20, 3, 1, 1), generator=g, dtype=torch.uint8).expand(-1, -1, 16, 16)  # flat colours
    found = InceptionMetrics(check_weights(str(peaked)), real, "tiny", "train", len(fake), tmp_path, cuda=False)(fake)
    reference = torch_fidelity.calculate_metrics(
        input1=TensorImages(fake), input2=TensorImages(real), isc=True, fid=True, kid=True,
        kid_subset_size=len(real), feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(peaked), cuda=False, verbose=False, save_cpu_ram=True)
    assert found["metrics/fid"] == pytest.approx(reference["frechet_inception_distance"], rel=1e-6)
    assert found["metrics/inception_score"] == pytest.approx(reference["inception_score_mean"], rel=1e-6)
    assert found["metrics/kid"] == pytest.approx(reference["kernel_inception_distance_mean"], rel=1e-6)
    # not degenerate: numbers a wrong layer, split or subset would change
    assert found["metrics/fid"] > 1 and found["metrics/inception_score"] > 1.05 and found["metrics/kid"] > 1e-3, found


@pytest.mark.slow  # four Inception passes of 10-12 images at 299 px: ~30 s on one loaded CPU thread
def test_eval_measures_with_torch_fidelity_records_the_protocol_and_caches_the_reals(
        cifar_run: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch_fidelity

    from gan_lab.evaluation.evaluate import generate, load_generator

    monkeypatch.setenv("GAN_LAB_CACHE", str(tmp_path / "cache"))
    run_cli("eval", f"checkpoint={cifar_run}", f"inception_weights={weights}", "fid_samples=12")
    # another protocol than the plain one (12 images, not the reference weights): a record of its own
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    result = json.loads((cifar_run / f"eval_fid_samples12_weights{sha[:8]}.json").read_text())
    printed = " ".join(capsys.readouterr().err.split())

    protocol = result["protocol"]
    assert protocol["generated_images"] == 12 == result["samples"] and protocol["real_images"] == N_IMAGES
    assert protocol["real_split"] == "cifar10 train" and protocol["fid"] == "FID-12"
    assert protocol["feature_extractor"].startswith("inception-v3-compat")
    assert protocol["feature_layer"].startswith("2048")
    assert protocol["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert protocol["torch_fidelity"] == torch_fidelity.__version__ and protocol["reference_weights"] is False
    assert protocol["torch"] == torch.__version__ and "rank-deficient" in protocol["caveat"]
    assert "FID-12, not comparable with papers' FID-50k (gan-lab eval fid_samples=50000 gives that)" in printed
    assert "NOT torch-fidelity's reference weights" in printed
    assert "precision" in printed and "recall" in printed  # the table

    # the very numbers torch-fidelity's own calculate_metrics gives on the same images (no cache there)
    G, _, _ = load_generator(str(cifar_run))
    fake = generate(G, 12, seed=0).add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    real = torch.as_tensor(TinyCifar10("", train=True).data).permute(0, 3, 1, 2)
    reference = torch_fidelity.calculate_metrics(
        input1=TensorImages(fake), input2=TensorImages(real), isc=True, fid=True, kid=True, prc=True,
        kid_subset_size=N_IMAGES, feature_extractor="inception-v3-compat",  # prc alone would pick VGG16
        feature_extractor_weights_path=str(weights), cuda=False, verbose=False,
        save_cpu_ram=True)
    assert result["metrics/fid"] == pytest.approx(reference["frechet_inception_distance"], rel=1e-6)
    assert result["metrics/fid"] > 1  # random G against random images: far apart, not a degenerate 0
    assert result["metrics/inception_score"] == pytest.approx(reference["inception_score_mean"], rel=1e-6)
    assert result["metrics/kid"] == pytest.approx(reference["kernel_inception_distance_mean"], rel=1e-6)
    assert (result["metrics/precision"], result["metrics/recall"]) == (reference["precision"], reference["recall"])

    # the reals' features are cached per data set and protocol, as plain tensors
    # (and memorisation's held reals' mirror images, a file of their own)
    cached, mirrored = sorted((tmp_path / "cache" / "inception").iterdir(), key=lambda f: "mirrored" in f.name)
    assert cached.name.startswith(f"cifar10-train-{N_IMAGES}-")
    assert mirrored.name.startswith(f"cifar10-train-mirrored-held-{N_IMAGES}-")
    assert torch.load(cached, weights_only=True).shape == (N_IMAGES, 2048)
    # a second eval runs Inception on the generated images only, and gives the same numbers
    seen = []
    features = InceptionMetrics.features
    monkeypatch.setattr(InceptionMetrics, "features",
                        lambda self, images: seen.append(len(images)) or features(self, images))
    run_cli("eval", f"checkpoint={cifar_run}", f"inception_weights={weights}", "fid_samples=12",
            f"out={tmp_path / 'again.json'}")
    # FID's 12 generated images, then memorisation's 10 samples and their mirror images
    # (gan_lab.evaluation.memorisation): the reals, and the held reals' mirror images, come from the cache
    assert seen == [12, 10, 10]
    again = json.loads((tmp_path / "again.json").read_text())
    assert {k: v for k, v in again.items() if k.startswith("metrics/")} == \
           {k: v for k, v in result.items() if k.startswith("metrics/")}


class TensorImages(torch.utils.data.Dataset):
    """uint8 images as the Dataset torch-fidelity reads."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


class Payload:
    """Unpickled, it creates a marker file: what a crafted weights file could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_crafted_weights_file_is_refused_and_never_runs(cifar_run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "ran"
    crafted = tmp_path / "weights-inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "payload": Payload(marker)}, crafted)
    (cifar_run / "eval_before.json").write_text("kept")
    out = cifar_run / "eval_before.json"

    err = user_error(capsys, "eval", f"checkpoint={cifar_run}", f"inception_weights={crafted}", f"out={out}")
    assert f"Refused the Inception weights {crafted}" in err and "nothing from it was run" in err
    assert not marker.exists() and out.read_text() == "kept"  # not run, nothing overwritten
    # training refuses it too, before it trains
    err = user_error(capsys, "train", "data=cifar10", f"data.root={tmp_path}", "data.download=false", *TINY,
                     "train.batch_size=8",
                     "model.width=8", "model.z_dim=16", "threads=1", f"inception_weights={crafted}",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert "Refused the Inception weights" in err and not marker.exists()
    assert not (tmp_path / "run" / "checkpoints").exists()

    torch.load(crafted, weights_only=False)  # what torch-fidelity would have done: the payload runs
    assert marker.exists()


def test_plain_tensors_that_are_not_inception_are_refused_before_training(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, other)
    err = user_error(capsys, "train", "data=cifar10", f"data.root={tmp_path}", "data.download=false", *TINY,
                     "train.batch_size=8", "model.width=8", "model.z_dim=16", "threads=1",
                     f"inception_weights={other}", f"hydra.run.dir={tmp_path / 'run'}")
    assert f"The Inception weights {other} are plain tensors but not torch-fidelity's Inception" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_fid_samples_below_the_minimum_is_refused(cifar_run: Path, capsys: pytest.CaptureFixture) -> None:
    err = user_error(capsys, "eval", f"checkpoint={cifar_run}", "fid_samples=3")
    assert "fid_samples=3 is out of range" in err and "fid_samples=50000" in err


def test_the_protocol_line_says_which_fid_it_is() -> None:
    protocol = {"fid": "FID-50k", "generated_images": 50000, "real_images": 50000, "real_split": "cifar10 train",
                "feature_extractor": "inception-v3-compat (torch-fidelity)", "feature_layer": "2048",
                "weights_sha256": "6726825d" + "0" * 56, "weights_source": "torch-fidelity default",
                "reference_weights": True, "torch_fidelity": "0.4.0"}
    paper = describe_protocol(protocol)
    assert "FID-50k, the papers' protocol" in paper and "NOT" not in paper
    small = describe_protocol({**protocol, "fid": "FID-10k", "generated_images": 10000, "real_images": 10000})
    assert "FID-10k, not comparable with papers' FID-50k" in small


def test_the_bytes_checked_are_the_bytes_loaded(weights: Path, tmp_path: Path) -> None:
    from gan_lab.evaluation.inception import check_weights

    path = tmp_path / "weights.pth"
    path.write_bytes(weights.read_bytes())
    checked = check_weights(str(path))
    swapped = torch.load(weights, weights_only=True)
    swapped["fc.weight"] = swapped["fc.weight"] + 1  # the file changes after the check (still plain tensors)
    torch.save(swapped, path)
    extractor = InceptionMetrics(checked, torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "tiny", "train", 10, tmp_path,
                                 cuda=False).extractor()
    original = torch.load(weights, weights_only=True)["fc.weight"]
    assert torch.equal(extractor.fc.weight, original) and not torch.equal(extractor.fc.weight, swapped["fc.weight"])


def test_too_few_images_leave_the_inception_metrics_out_and_say_why(weights: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    from gan_lab.evaluation.evaluate import eval_context
    from gan_lab.measures import InceptionScores

    five = torch.randint(0, 256, (5, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    evaluate = InceptionScores("five", five).evaluator(eval_context(inception_weights=str(weights)))
    assert evaluate(None) == {}  # no FID-5, no NaN IS: nothing is computed, nor drawn
    said = " ".join(capsys.readouterr().err.split())
    assert "need at least 10 generated and 10 real images" in said and "has 5 generated and 5 real" in said


def test_another_protocol_gets_its_own_record() -> None:
    from gan_lab.evaluation.evaluate import eval_file, evaluation_label

    run = Path("run")
    reference = {"reference_weights": True, "weights_sha256": "6726825d" + "0" * 56}
    other = {"reference_weights": False, "weights_sha256": "abcdef12" + "0" * 56}
    names = [eval_file(run, evaluation_label("run/checkpoints/last.pt", 0, "none", *args)).name for args in
             [(None, "cpu", reference), (50000, "cpu", reference), (None, "cuda:0", reference), (None, "cpu", other)]]
    assert names == ["eval.json", "eval_fid_samples50000.json", "eval_devicecuda0.json", "eval_weightsabcdef12.json"]


@pytest.mark.slow  # a CIFAR run with Inception at every evaluation
def test_training_says_which_fid_metrics_fid_is(weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from gan_lab.runs.status import read_status
    from test_train import read_events

    monkeypatch.setattr(FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)  # 1/16 of the time at 299 px
    monkeypatch.setenv("GAN_LAB_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    run_cli("train", "data=cifar10", f"data.root={tmp_path}", "data.download=false", *TINY, "train.steps=2",
            "train.batch_size=8", "model.width=8", "model.z_dim=16", "threads=1", f"inception_weights={weights}",
            f"hydra.run.dir={run}")
    said = " ".join(capsys.readouterr().err.split())
    line = ("metrics/fid is FID-10 (train split, 10 generated vs 10 real, NOT the reference Inception weights; "
            "not comparable with papers' FID-50k); FID-10 on fewer images than Inception's 2048 feature dimensions")
    assert said.count(line) == 1, said
    status = read_status(run)
    protocol = status["metrics_protocol"]
    assert protocol["fid"] == "FID-10" and protocol["torch"] == torch.__version__ and "caveat" in protocol
    assert status["metrics"]["metrics/fid"] > 0
    (text,) = read_events(run).Tensors("metrics/protocol/text_summary")
    assert line in text.tensor_proto.string_val[0].decode()


def test_weights_that_cannot_be_downloaded_are_named_once_with_their_source_and_not_tried_again(
        cifar_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    # eval needs the weights twice (FID and memorisation's features): one download attempt, one message
    attempts = []

    def offline(url: str, *args, **kwargs) -> None:
        attempts.append(url)
        raise OSError("no network")

    monkeypatch.delenv("GAN_LAB_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    capsys.readouterr()
    run_cli("eval", f"checkpoint={cifar_run}", "fid_samples=10")
    out = " ".join("".join(capsys.readouterr()).split())
    url = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
    assert attempts == [url]
    assert out.count("Inception metrics (FID, IS, KID, precision/recall) are off") == 1
    assert url in out and "sha256 begins 6726825d" in out
