"""Watching never changes training: logging, samples, metrics and checkpoints leave the run as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY_DCGAN, TINY_MLP, run_cli
from gan_lab.runs.checkpoint import load_checkpoint
from gan_lab.training.observers import observing

# Every model option that holds state a forward pass can move: spectral norm's power-iteration
# vectors, batch norm's running statistics (the DCGAN generator always has batch norm).
MODELS = {
    "mlp-none": [*TINY_MLP],
    "mlp-layer": [*TINY_MLP, "model.critic_norm=layer"],
    "mlp-spectral": [*TINY_MLP, "model.critic_norm=spectral"],
    "mlp-batch-critic": [*TINY_MLP, "model.critic_norm=batch", "loss=nonsaturating"],
    "mlp-batch-generator": [*TINY_MLP, "model.generator_norm=batch", "loss=nonsaturating"],
    "mlp-conditional": [*TINY_MLP, "model.conditional=true", "model.generator_norm=batch",
                        "model.critic_norm=spectral", "loss=hinge"],
    "dcgan-layer": ["data=mnist", *TINY_DCGAN],
    "dcgan-spectral": ["data=mnist", *TINY_DCGAN, "model.critic_norm=spectral", "loss=hinge"],
    "dcgan-batch": ["data=mnist", *TINY_DCGAN, "model.critic_norm=batch", "loss=nonsaturating"],
    "dcgan-conditional": ["data=mnist", *TINY_DCGAN, "model.conditional=true", "model.critic_norm=none"],
}
EVERY_STEP = ["train.log_every=1", "train.sample_every=1", "train.eval_every=1", "train.checkpoint_every=1"]
AT_THE_END = ["train.log_every=100", "train.sample_every=100", "train.eval_every=0", "train.checkpoint_every=100"]


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_intervals_never_change_weights_or_buffers(model: str, tmp_path: Path, tiny_mnist_root: Path) -> None:
    common = ["train.steps=2", "train.batch_size=8", "device=cpu", *MODELS[model]]
    if "data=mnist" in common:
        common += [f"data.root={tiny_mnist_root}", "data.download=false"]
    run_cli("train", *common, *EVERY_STEP, f"hydra.run.dir={tmp_path / 'watched'}")
    run_cli("train", *common, *AT_THE_END, f"hydra.run.dir={tmp_path / 'quiet'}")
    watched, quiet = load_checkpoint(tmp_path / "watched"), load_checkpoint(tmp_path / "quiet")
    for net in ("G", "critic"):  # state dicts: the weights and every buffer (u, v, running stats)
        assert watched[net].keys() == quiet[net].keys()
        differ = [key for key in quiet[net] if not torch.equal(watched[net][key], quiet[net][key])]
        assert not differ, f"{net}: watching every step changed {differ}"
    assert all(torch.equal(a, b) for a, b in zip(watched["opt_d"]["state"][0].values(),
                                                 quiet["opt_d"]["state"][0].values()))


def test_observing_restores_each_modules_mode() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2), torch.nn.Dropout())
    net[2].eval()  # a mixed state must come back as it was, not as net.train()
    with observing(torch.device("cpu"), net):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == [True, True, True, False]
    with pytest.raises(RuntimeError), observing(torch.device("cpu"), net):
        raise RuntimeError("an observer failed")
    assert [m.training for m in net.modules()] == [True, True, True, False]
