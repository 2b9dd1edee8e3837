"""GAN losses: each is a small object with the math beside the code.

A loss maps critic outputs (raw logits or scores, never probabilities: the
sigmoid is folded into softplus for numerical stability) to the critic's and the
generator's loss. Both methods receive the real and the fake scores; the generator
step scores a fresh real batch only for a loss with `needs_real_in_g` (the
relativistic ones), and passes None otherwise. Penalties are pure functions of the
critic's scores at some points and those points; the loop scores the points and calls
them. Losses return tensors; the training loop owns backward() and step().

Adding a loss: its class here (with its declarations, below), its YAML in conf/loss/, its
closed-form test. Tests and scripts read the list of losses from conf/loss/.

A loss declares what the rest of the lab needs to know about it, as class-level constants the
base class documents (`wasserstein_critic`, `log_ratio`, `separated_below`, `undecided_at`); the diagnosis,
rejection sampling and the logged scalars read those, never a loss's name or class path, and
tests/test_losses.py checks each declaration of every conf/loss/*.yaml against the loss's math.

Identities used below, with l a logit and sigmoid(l) = D's probability:
    -log(sigmoid(l))     = softplus(-l)
    -log(1 - sigmoid(l)) = softplus(l)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_lab.errors import GanLabError


@dataclass
class Loss:
    """Base class: the penalties every loss may turn on (weights from conf/_loss_knobs.yaml; 0: off).

    The loss node's other knobs (n_critic, reg_every, clip, unroll) say how the loop trains the
    critic, not what the loss is: gan_lab.training.settings.CriticSchedule holds them.
    """

    lambda_gp: float = 0.0  # weight of the two-sided gradient penalty at interpolates (WGAN-GP)
    lambda_r1: float = 0.0  # weight gamma of the R1 penalty gamma/2 * E||grad C(x)||^2 on real data
    lambda_r2: float = 0.0  # weight gamma of the R2 penalty gamma/2 * E||grad C(G(z))||^2 on fakes
    lambda_dragan: float = 0.0  # weight of DRAGAN's E[(||grad C(x_hat)||_2 - 1)^2] around perturbed real points

    name = "loss"
    # whether g_loss needs the critic's scores for real data: the generator step then scores a fresh real batch
    needs_real_in_g: ClassVar[bool] = False

    # ---- what the rest of the lab reads about a loss (a test checks each against d_loss) ----------
    # Whether the critic is Wasserstein-like: unbounded scores whose mean difference E C(x) - E C(G(z))
    # estimates the earth mover's distance (d_loss is that difference: shift-invariant, scaling with
    # the scores). Such a critic must stay near 1-Lipschitz (the diagnosis's Lipschitz rule), and
    # only its runs log critic/wasserstein_estimate (and the diagnosis's runaway rule watches it).
    wasserstein_critic: ClassVar[bool] = False
    # Whether the critic's score estimates log p_data(x) / p_G(x), which rejection sampling (DRS)
    # assumes: "exact" at the critic's optimum, "approximate" (relativistic: score differences
    # estimate log-ratio differences), or "no" (DRS is then a heuristic filter, with a warning).
    log_ratio: ClassVar[Literal["exact", "approximate", "no"]] = "no"
    # The critic loss below which the critic separates real from fake almost perfectly, on the loss's
    # own scale (the diagnosis's vanishing-gradient rule). None where the loss cannot say: a
    # Wasserstein-like critic's loss, or an f-divergence's, has no floor. The existing values keep
    # docs/diagnosis.md's measured 0.05 of the BCE losses as the same fraction of the loss at chance
    # (the critic's best when real and fake look alike): 0.05 / log 4 = 3.6% of it.
    separated_below: ClassVar[float | None] = None
    # The score at which a pointwise critic is undecided: its best score where real and fake are equally
    # likely, so a score above it calls a sample real. Then r_t = E[sign(D(x) - undecided_at)] over real
    # samples (StyleGAN2-ADA's overfitting signal, in [-1, 1]) is logged as critic/r_t, and the diagnosis
    # names a critic that wins outright. None where one score alone says nothing (Wasserstein-like and
    # relativistic critics: only differences of scores mean something).
    undecided_at: ClassVar[float | None] = None

    def __post_init__(self) -> None:
        for key in ("lambda_gp", "lambda_r1", "lambda_r2", "lambda_dragan"):
            if not getattr(self, key) >= 0:
                raise GanLabError(f"loss.{key}={getattr(self, key)} is out of range: it must be a weight >= 0 "
                                  f"(0 turns the penalty off). Fix the override, e.g. loss.{key}=0.")

    def penalties(self) -> list[Penalty]:
        """The gradient penalties this loss turns on (weight > 0), in the order the loop draws their points."""
        every = [
            # lambda * E[(||grad C(x_hat)||_2 - 1)^2], x_hat between x and G(z) (WGAN-GP)
            Penalty("gradient_penalty", self.lambda_gp, interpolates, gradient_penalty),
            # gamma/2 * E||grad C(x)||^2 on real data (R1, Mescheder et al. 2018)
            Penalty("r1_penalty", 0.5 * self.lambda_r1, lambda x, fake: x, squared_gradient),
            # gamma/2 * E||grad C(G(z))||^2 on fakes (R2; R3GAN pairs it with R1)
            Penalty("r2_penalty", 0.5 * self.lambda_r2, lambda x, fake: fake, squared_gradient),
            # lambda * E[(||grad C(x_hat)||_2 - 1)^2], x_hat around the real data (DRAGAN, Kodali et al. 2017)
            Penalty("dragan_penalty", self.lambda_dragan, lambda x, fake: perturbed(x), gradient_penalty),
        ]
        return [penalty for penalty in every if penalty.weight > 0]

    @property
    def penalised(self) -> bool:
        """Whether the critic step takes a double backward (any gradient penalty on)."""
        return bool(self.penalties())

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """The critic's loss on a batch of real and fake outputs."""
        raise NotImplementedError

    def g_loss(self, real_out: Tensor | None, fake_out: Tensor) -> Tensor:
        """The generator's loss; real_out are scores of a fresh real batch, None unless needs_real_in_g."""
        raise NotImplementedError


class Minimax(Loss):
    """MM-GAN (Goodfellow et al. 2014) with the saturating generator loss."""

    name = "minimax"
    log_ratio = "exact"  # the optimal logit is log p_data / p_G (Goodfellow et al. 2014, Prop. 1)
    # docs/diagnosis.md's measured threshold: D gives real samples about 0.975 and fakes 0.025 (chance: log 4)
    separated_below = 0.05
    undecided_at = 0.0  # the logit of D = 1/2

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        # BCE, label 1 for real and 0 for fake: -E[log D(x)] - E[log(1 - D(G(z)))]
        return F.softplus(-real_out).mean() + F.softplus(fake_out).mean()

    def g_loss(self, real_out: Tensor | None, fake_out: Tensor) -> Tensor:
        # Minimise E[log(1 - D(G(z)))] = -E[softplus(l)]. It saturates: when D rejects
        # fakes confidently (l << 0) its gradient sigmoid(l) vanishes. That is the point.
        return -F.softplus(fake_out).mean()


class NonSaturating(Minimax):
    """NS-GAN: the same critic loss; the generator maximises log D(G(z))."""

    name = "nonsaturating"

    def g_loss(self, real_out: Tensor | None, fake_out: Tensor) -> Tensor:
        # -E[log D(G(z))] = E[softplus(-l)]: gradient 1 - sigmoid(l) is large when D rejects fakes.
        return F.softplus(-fake_out).mean()


class Wasserstein(Loss):
    """W-loss (Arjovsky et al. 2017): the critic's outputs are unbounded scores."""

    name = "wasserstein"
    wasserstein_critic = True  # d_loss is E C(G(z)) - E C(x): no floor, no log ratio

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        # -(E[C(x)] - E[C(G(z))]): the critic maximises the Wasserstein estimate.
        return fake_out.mean() - real_out.mean()

    def g_loss(self, real_out: Tensor | None, fake_out: Tensor) -> Tensor:
        # -E[C(G(z))]
        return -fake_out.mean()


class LeastSquares(Loss):
    """LSGAN (Mao et al. 2017) with targets a=0 (fake), b=1 (real), c=1 (generator)."""

    name = "lsgan"
    # 0 at perfect separation (scores on the targets 1 and 0), 0.25 at chance (every score 1/2): 3.6% of it
    separated_below = 0.009
    undecided_at = 0.5  # halfway between the targets 0 (fake) and 1 (real): the optimum p / (p + q) at p = q

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        # 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]
        return 0.5 * (real_out - 1).pow(2).mean() + 0.5 * fake_out.pow(2).mean()

    def g_loss(self, real_out: Tensor | None, fake_out: Tensor) -> Tensor:
        # 1/2 E[(D(G(z)) - 1)^2]
        return 0.5 * (fake_out - 1).pow(2).mean()


class Hinge(Loss):
    """Hinge loss (Lim & Ye 2017; SAGAN, BigGAN)."""

    name = "hinge"
    # 0 at perfect separation (real scores >= 1, fakes <= -1), 2 at chance (any shared score in [-1, 1]): 3.6% of it
    separated_below = 0.072
    undecided_at = 0.0  # between the margins -1 (fake) and +1 (real)

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        # E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]
        return F.relu(1 - real_out).mean() + F.relu(1 + fake_out).mean()

    def g_loss(self, real_out: Tensor | None, fake_out: Tensor) -> Tensor:
        # -E[D(G(z))]
        return -fake_out.mean()


# Relativistic losses (Jolicoeur-Martineau 2018) judge real data relative to fakes, so the
# generator's loss needs real scores too. With d = C(x) - C(G(z)):
#     -log(sigmoid(d)) = softplus(-d)        -log(1 - sigmoid(d)) = softplus(d)

class RSGAN(Loss):
    """Relativistic standard GAN (Jolicoeur-Martineau 2018): is x more real than its paired G(z)?"""

    name = "rsgan"
    needs_real_in_g = True
    log_ratio = "approximate"  # C(x) - C(G(z)) estimates the difference of log ratios at x and G(z)
    # 0 at perfect separation (C(x) - C(G(z)) -> +inf), log 2 at chance (equal scores): 3.6% of it
    separated_below = 0.025

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        # -E log sigmoid(C(x_i) - C(G(z_i))) = E softplus(-(C(x_i) - C(G(z_i)))), x_i paired with G(z_i)
        return F.softplus(-(real_out - fake_out)).mean()

    def g_loss(self, real_out: Tensor | None, fake_out: Tensor) -> Tensor:
        # real and fake swapped: -E log sigmoid(C(G(z_i)) - C(x_i)) = E softplus(-(C(G(z_i)) - C(x_i)))
        return F.softplus(-(fake_out - real_out)).mean()


class RpGAN(RSGAN):
    """RpGAN (Huang et al. 2024, R3GAN): relativistic pairing, x_i and G(z_i) paired one-to-one.

    The same math as RSGAN: R3GAN's critic loss E softplus(-(C(x) - C(G(z)))) and generator
    loss E softplus(-(C(G(z)) - C(x))) over pairs are RSGAN's, named for the pairing.
    """

    name = "rpgan"


class RaGAN(Loss):
    """Relativistic average standard GAN (RaSGAN, Jolicoeur-Martineau 2018): x against the average fake."""

    name = "ragan"
    needs_real_in_g = True
    log_ratio = "approximate"  # scores relative to the other side's mean: log ratios up to a shift, approximately
    # 0 at perfect separation, log 4 at chance (equal scores), as BCE: the same 0.05
    separated_below = 0.05

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        # -E log sigmoid(C(x) - E C(G(z))) - E log(1 - sigmoid(C(G(z)) - E C(x)))
        return relative_average(real_out, fake_out)

    def g_loss(self, real_out: Tensor | None, fake_out: Tensor) -> Tensor:
        # real and fake swapped: -E log sigmoid(C(G(z)) - E C(x)) - E log(1 - sigmoid(C(x) - E C(G(z))))
        return relative_average(fake_out, real_out)


def relative_average(a: Tensor, b: Tensor) -> Tensor:
    """-E log sigmoid(a - E b) - E log(1 - sigmoid(b - E a)) = E softplus(-(a - E b)) + E softplus(b - E a)."""
    # The batch means are part of the loss (gradients flow through them), as in the paper's code;
    # under DDP they are each rank's means.
    return F.softplus(-(a - b.mean())).mean() + F.softplus(b - a.mean()).mean()


class RaLSGAN(Loss):
    """Relativistic average LSGAN (RaLSGAN, Jolicoeur-Martineau 2018): LSGAN's squares, relative to the average."""

    name = "ralsgan"
    needs_real_in_g = True
    # least squares on score differences: no log ratio. 0 at perfect separation (C(x) - E C(G(z)) = 1),
    # 2 at chance (equal scores): 3.6% of it
    separated_below = 0.072

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        # E[(C(x) - E C(G(z)) - 1)^2] + E[(C(G(z)) - E C(x) + 1)^2]
        return (real_out - fake_out.mean() - 1).pow(2).mean() + (fake_out - real_out.mean() + 1).pow(2).mean()

    def g_loss(self, real_out: Tensor | None, fake_out: Tensor) -> Tensor:
        # real and fake swapped: E[(C(G(z)) - E C(x) - 1)^2] + E[(C(x) - E C(G(z)) + 1)^2]
        return (fake_out - real_out.mean() - 1).pow(2).mean() + (real_out - fake_out.mean() + 1).pow(2).mean()


@dataclass(frozen=True)
class Penalty:
    """One gradient penalty: its tag (logged as loss/<tag>), weight, where it is taken, and its formula."""

    tag: str
    weight: float  # multiplies value(...): lambda, or gamma/2 for R1 and R2
    points: Callable[[Tensor, Tensor], Tensor]  # (x, G(z)) -> the points whose input gradient is penalised
    value: Callable[[Tensor, Tensor], Tensor]  # (the critic's scores at the points, the points) -> the penalty


def interpolates(real: Tensor, fake: Tensor) -> Tensor:
    """x_hat = eps * x + (1 - eps) * G(z), one eps ~ U[0, 1] per sample."""
    # eps has shape (B, 1, 1, ...) so each sample gets its own mixing weight,
    # broadcast over its features; one scalar eps for the batch would sample a line.
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    return eps * real + (1 - eps) * fake


def perturbed(real: Tensor) -> Tensor:
    """DRAGAN's points: x_hat between x and x + 0.5 * std(x) * u, u ~ U[0, 1] per feature, one eps per sample."""
    # As the DRAGAN authors' code: the noise is scaled by the batch's standard deviation over
    # all features, and the penalty is taken at a random point on the segment to it.
    noisy = real + 0.5 * real.std() * torch.rand_like(real)
    return interpolates(real, noisy)


def grad_norms(outputs: Tensor, inputs: Tensor, create_graph: bool = False) -> Tensor:
    """Per-score ||d outputs_i / d (the inputs it scored)||_2: per sample, or per pack of a packed critic."""
    # grad of the sum = per-score grads, since scores do not interact (no batch norm). A packed critic
    # (PacGAN) scores each run of m = len(inputs) / len(outputs) consecutive rows as one input, so the
    # norm is taken over all of a pack's rows together, the gradient of the function the critic is.
    (grad,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=create_graph)
    return grad.reshape(outputs.numel(), -1).norm(2, dim=1)


def input_grad_norms(critic: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool = False) -> Tensor:
    """Per-score ||grad_x C(x)||_2 at the points x (per sample; per pack for a packed critic)."""
    x = x.detach().requires_grad_(True)
    return grad_norms(critic(x), x, create_graph)


# The penalties take the critic's scores at the points and the points (leaves that require
# grad), so the loop scores R1's x and R2's G(z) once, for the loss and the penalty alike.
# create_graph=True: a penalty is a function of the critic's input gradient, so its own
# gradient w.r.t. the critic's parameters needs a double backward.

def gradient_penalty(scores: Tensor, points: Tensor) -> Tensor:
    """The two-sided E[(||grad C(p)||_2 - 1)^2] at the points p (WGAN-GP at interpolates, DRAGAN near x)."""
    return (grad_norms(scores, points, create_graph=True) - 1).pow(2).mean()


def squared_gradient(scores: Tensor, points: Tensor) -> Tensor:
    """E[||grad C(p)||_2^2] at the points p: R1 at real data, R2 at fakes (the caller scales by gamma/2)."""
    return grad_norms(scores, points, create_graph=True).pow(2).mean()


@torch.no_grad()
def clip_weights(critic: nn.Module, clip: float) -> None:
    """Clamp every critic parameter to [-clip, clip] in place (the original WGAN)."""
    for p in critic.parameters():
        p.clamp_(-clip, clip)
