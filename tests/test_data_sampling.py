"""Device-resident sampling draws valid indices and the batch distribution covers the data set.

The CUDA section checks that a few training steps run with the data on the GPU and no
host round trip in the hot loop; it skips cleanly on machines without CUDA.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
from torch.testing import assert_close

from conftest import TINY, TINY_DCGAN, build_model, requires_cuda, run_cli
from gan_lab.data import ImageData, ToyMixture
from gan_lab.losses import Wasserstein
from gan_lab.runs.checkpoint import load_checkpoint
from gan_lab.runs.safety import NonFiniteGuard
from gan_lab.training.train import critic_step, generator_step


def source_indices(data: ImageData, x: torch.Tensor) -> torch.Tensor:
    """For each sampled image, the index of the one stored image it equals (exactly one must match)."""
    pixels = ((x + 1) * 127.5).round().to(torch.uint8).flatten(1)  # undo the [-1, 1] scaling exactly
    matches = (pixels[:, None, :] == data.images.flatten(1)[None]).all(dim=2)  # (batch, N)
    assert (matches.sum(dim=1) == 1).all(), "a sampled image matches no stored image, or several"
    return matches.float().argmax(dim=1)


def test_image_batches_are_stored_images_scaled_to_plus_minus_one(tiny_mnist_root: Path) -> None:
    data = ImageData("mnist", root=str(tiny_mnist_root), download=False)
    assert data.images.dtype == torch.uint8 and data.images.shape == (64, 1, 28, 28) and data.size == 64
    torch.manual_seed(0)
    x, y = data.sample(32)
    assert x.dtype == torch.float32 and x.shape == (32, 1, 28, 28) and y.shape == (32,)
    idx = source_indices(data, x)
    # the exact per-batch conversion, and the label that belongs to the drawn image
    assert_close(x, data.images[idx].float() / 127.5 - 1, rtol=0, atol=1e-6)
    assert torch.equal(y, data.labels[idx])
    assert x.min() >= -1 and x.max() <= 1


def test_image_sampling_covers_the_data_set_uniformly(tiny_mnist_root: Path) -> None:
    data = ImageData("mnist", root=str(tiny_mnist_root), download=False)
    torch.manual_seed(0)
    batches = 200
    counts = torch.zeros(data.size)
    for _ in range(batches):
        x, _ = data.sample(64)
        counts += torch.bincount(source_indices(data, x), minlength=data.size)
    expected = batches * 64 / data.size  # 200 draws of each image on average
    spread = math.sqrt(expected)  # binomial standard deviation, about 14
    assert counts.sum() == batches * 64
    assert counts.min() > expected - 5 * spread and counts.max() < expected + 5 * spread
    # and the whole histogram is as flat as uniform draws make it (chi-square, 63 degrees of freedom)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert 30 < chi2 < 110


def test_ring8_labels_cover_all_modes_and_samples_sit_at_their_centers() -> None:
    data = ToyMixture("ring8", sigma=0.01)
    angles = 2 * math.pi * torch.arange(8) / 8
    assert_close(data.centers, torch.stack([angles.cos(), angles.sin()], dim=1))
    torch.manual_seed(0)
    n = 8000
    x, y = data.sample(n)
    assert x.shape == (n, 2) and y.shape == (n,) and int(y.min()) == 0 and int(y.max()) == 7
    counts = torch.bincount(y, minlength=8).float()
    assert (counts - n / 8).abs().max() < 5 * math.sqrt(n / 8)  # 1000 +- 158 per mode
    # the offset from the label's center is N(0, sigma^2) in each coordinate
    offset = (x - data.centers[y]) / data.sigma
    assert offset.mean(dim=0).abs().max() < 0.05
    assert_close(offset.std(dim=0), torch.ones(2), rtol=0, atol=0.05)
    assert offset.norm(dim=1).max() < 6
    # and the nearest center is the label's (modes are 0.77 apart, 77 sigma)
    assert torch.equal(torch.cdist(x, data.centers).argmin(dim=1), y)


def hot_loop(device: torch.device) -> Callable[[int], dict[str, torch.Tensor]]:
    """WGAN-GP iterations of gan-lab's loop body on ring8 held on `device`; building happens here, not per step."""
    torch.manual_seed(0)
    data = ToyMixture("ring8", sigma=0.01, device=device)
    G, critic = (net.to(device) for net in build_model("mlp", (2,), z_dim=2, hidden=32, depth=2))
    loss, n_critic = Wasserstein(lambda_gp=0.1), 2
    opt_g, opt_d = (torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.0, 0.9)) for net in (G, critic))
    guard = NonFiniteGuard("stop", device)

    def run(steps: int) -> dict[str, torch.Tensor]:
        for step in range(1, steps + 1):
            for _ in range(n_critic):
                x, y = data.sample(16)
                assert x.device == device and y.device == device
                z = torch.randn(16, 2, device=device)
                stats = critic_step(G, critic, loss, opt_d, x, z, y, guard, step)
            stats.update(generator_step(G, critic, loss, opt_g, torch.randn(16, 2, device=device), None, guard, step))
        return stats
    return run


def test_hot_loop_scalars_stay_tensors_on_the_device() -> None:
    stats = hot_loop(torch.device("cpu"))(3)
    assert {"loss/critic", "loss/gradient_penalty", "loss/generator", "grad_norm/critic"} <= set(stats)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in stats.values())  # read only at log time
    assert all(torch.isfinite(v) for v in stats.values())


@requires_cuda
def test_cuda_hot_loop_has_no_host_round_trip() -> None:
    device = torch.device("cuda")
    run = hot_loop(device)  # the models and data move to the GPU here, before the checked steps
    run(1)  # warm-up: lazy CUDA initialisation (cuBLAS handles, optimizer state) may synchronise once
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call (.item(), a host copy) now raises
    try:
        stats = run(3)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(v.device.type == "cuda" for v in stats.values())
    assert all(torch.isfinite(v) for v in stats.values())


@requires_cuda
def test_cuda_training_run_keeps_images_on_the_gpu(tmp_path: Path, tiny_mnist_root: Path) -> None:
    data = ImageData("mnist", root=str(tiny_mnist_root), download=False, device="cuda")
    assert data.images.is_cuda and data.images.dtype == torch.uint8 and data.labels.is_cuda
    x, y = data.sample(8)
    assert x.is_cuda and y.is_cuda
    assert_close(x, data.images[source_indices(data, x)].float() / 127.5 - 1, rtol=0, atol=1e-6)
    overrides = [o for o in TINY if o != "device=cpu"]
    run_cli("train", "loss=wgan_gp", "data=mnist", f"data.root={tiny_mnist_root}", "data.download=false",
            "device=cuda", *overrides, *TINY_DCGAN, f"hydra.run.dir={tmp_path}")
    state = load_checkpoint(tmp_path)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())
