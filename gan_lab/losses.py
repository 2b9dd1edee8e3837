"""GAN losses: each is a small object with the math beside the code.

A loss maps critic outputs (raw logits or scores, never probabilities: the
sigmoid is folded into softplus for numerical stability) to the critic's and the
generator's loss. Penalties are pure functions. Losses return tensors; the training
loop owns backward() and step().

Identities used below, with l a logit and sigmoid(l) = D's probability:
    -log(sigmoid(l))     = softplus(-l)
    -log(1 - sigmoid(l)) = softplus(l)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_lab.errors import GanLabError


@dataclass
class Loss:
    """Base class: the penalties every loss may turn on, and n_critic."""

    n_critic: int = 1  # critic steps per generator step
    lambda_gp: float = 0.0  # weight of the two-sided gradient penalty at interpolates (WGAN-GP)
    lambda_r1: float = 0.0  # weight gamma of the R1 penalty gamma/2 * E||grad C(x)||^2 on real data
    clip: float = 0.0  # clamp every critic weight to [-clip, clip] after each critic step (WGAN)

    name = "loss"

    def __post_init__(self) -> None:
        checks = {
            "loss.n_critic": (self.n_critic, self.n_critic >= 1 and float(self.n_critic).is_integer(),
                              "a whole number of critic steps per generator step, at least 1"),
            "loss.lambda_gp": (self.lambda_gp, self.lambda_gp >= 0, "a weight >= 0 (0 turns the penalty off)"),
            "loss.lambda_r1": (self.lambda_r1, self.lambda_r1 >= 0, "a weight >= 0 (0 turns the penalty off)"),
            "loss.clip": (self.clip, self.clip >= 0, "a bound >= 0 (0 turns clipping off)"),
        }
        for key, (value, ok, expected) in checks.items():
            if not ok:
                raise GanLabError(f"{key}={value} is out of range: it must be {expected}. "
                                  f"Fix the override, e.g. {key}={'5' if key.endswith('n_critic') else '0'}.")
        self.n_critic = int(self.n_critic)

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """The critic's loss on a batch of real and fake outputs."""
        raise NotImplementedError

    def g_loss(self, fake_out: Tensor) -> Tensor:
        """The generator's loss on the critic's outputs for fakes."""
        raise NotImplementedError


class Minimax(Loss):
    """MM-GAN (Goodfellow et al. 2014) with the saturating generator loss."""

    name = "minimax"

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        # BCE, label 1 for real and 0 for fake: -E[log D(x)] - E[log(1 - D(G(z)))]
        return F.softplus(-real_out).mean() + F.softplus(fake_out).mean()

    def g_loss(self, fake_out: Tensor) -> Tensor:
        # Minimise E[log(1 - D(G(z)))] = -E[softplus(l)]. It saturates: when D rejects
        # fakes confidently (l << 0) its gradient sigmoid(l) vanishes. That is the point.
        return -F.softplus(fake_out).mean()


class NonSaturating(Minimax):
    """NS-GAN: the same critic loss; the generator maximises log D(G(z))."""

    name = "nonsaturating"

    def g_loss(self, fake_out: Tensor) -> Tensor:
        # -E[log D(G(z))] = E[softplus(-l)]: gradient 1 - sigmoid(l) is large when D rejects fakes.
        return F.softplus(-fake_out).mean()


class Wasserstein(Loss):
    """W-loss (Arjovsky et al. 2017): the critic's outputs are unbounded scores."""

    name = "wasserstein"

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        # -(E[C(x)] - E[C(G(z))]): the critic maximises the Wasserstein estimate.
        return fake_out.mean() - real_out.mean()

    def g_loss(self, fake_out: Tensor) -> Tensor:
        # -E[C(G(z))]
        return -fake_out.mean()


class LeastSquares(Loss):
    """LSGAN (Mao et al. 2017) with targets a=0 (fake), b=1 (real), c=1 (generator)."""

    name = "lsgan"

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        # 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]
        return 0.5 * (real_out - 1).pow(2).mean() + 0.5 * fake_out.pow(2).mean()

    def g_loss(self, fake_out: Tensor) -> Tensor:
        # 1/2 E[(D(G(z)) - 1)^2]
        return 0.5 * (fake_out - 1).pow(2).mean()


class Hinge(Loss):
    """Hinge loss (Lim & Ye 2017; SAGAN, BigGAN)."""

    name = "hinge"

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        # E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]
        return F.relu(1 - real_out).mean() + F.relu(1 + fake_out).mean()

    def g_loss(self, fake_out: Tensor) -> Tensor:
        # -E[D(G(z))]
        return -fake_out.mean()


def interpolates(real: Tensor, fake: Tensor) -> Tensor:
    """x_hat = eps * x + (1 - eps) * G(z), one eps ~ U[0, 1] per sample."""
    # eps has shape (B, 1, 1, ...) so each sample gets its own mixing weight,
    # broadcast over its features; one scalar eps for the batch would sample a line.
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    return eps * real + (1 - eps) * fake


def grad_norms(outputs: Tensor, inputs: Tensor, create_graph: bool = False) -> Tensor:
    """Per-sample ||d outputs_i / d inputs_i||_2, the norm taken over all non-batch dimensions."""
    # grad of the sum = per-sample grads, since samples do not interact (no batch norm).
    (grad,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=create_graph)
    return grad.flatten(1).norm(2, dim=1)


def input_grad_norms(critic: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool = False) -> Tensor:
    """Per-sample ||grad_x C(x)||_2 at the points x."""
    x = x.detach().requires_grad_(True)
    return grad_norms(critic(x), x, create_graph)


def gp_from_norms(norms: Tensor) -> Tensor:
    """WGAN-GP's two-sided penalty E[(||grad C(x_hat)||_2 - 1)^2] from the per-sample norms."""
    return (norms - 1).pow(2).mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """WGAN-GP's E[(||grad C(x_hat)||_2 - 1)^2] and the per-sample norms it used."""
    # create_graph=True: the penalty is a function of the critic's gradient, so its own
    # gradient w.r.t. the critic's parameters needs a double backward.
    norms = input_grad_norms(critic, interpolates(real, fake.detach()), create_graph=True)
    return gp_from_norms(norms), norms.detach()


def r1_penalty(critic: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): E[||grad C(x)||^2] on real data; the caller scales by gamma/2."""
    return input_grad_norms(critic, real, create_graph=True).pow(2).mean()


@torch.no_grad()
def clip_weights(critic: nn.Module, clip: float) -> None:
    """Clamp every critic parameter to [-clip, clip] in place (the original WGAN)."""
    for p in critic.parameters():
        p.clamp_(-clip, clip)
