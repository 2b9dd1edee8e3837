"""Unrolled GAN (Metz et al. 2017): the generator's update against a critic k steps ahead.

The generator minimises f(theta_G, theta_D^k), where theta_D^0 is the critic's weights
and theta_D^{i+1} = theta_D^i - update(grad f_D(theta_G, theta_D^i)) is one look-ahead
critic update, taken by the critic's own optimizer (its kind, settings and current
moments). The look-ahead is differentiable: its fakes carry G's graph and every update is
built with create_graph=True, so G's gradient has the paper's second term, how the
critic's response to G moves with G. It runs on a functional copy of the critic
(torch.func.functional_call on its weights, buffers and optimizer moments as new
tensors): the real critic, its batch-norm / spectral-norm buffers and its optimizer's
state are never changed by the look-ahead.

Each look-ahead update sees the critic's full loss (the adversarial term, the penalties
on every look-ahead step, weight clipping), on a fresh real batch and fresh z.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from gan_lab.errors import GanLabError

State = dict[str, Tensor]


class LookaheadCritic:
    """The critic with weights and buffers taken from `state`: callable as critic(x, y)."""

    def __init__(self, critic: nn.Module, state: State):
        self.critic, self.state = critic, state
        self.norm = getattr(critic, "norm", None)  # the loop scores batch-norm critics' batches apart

    def __call__(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return functional_call(self.critic, self.state, (x, y))

    def requires_grad_(self, requires_grad: bool = True) -> LookaheadCritic:
        """As a module's: the real critic's weights need no gradient from G's step either way."""
        self.critic.requires_grad_(requires_grad)
        return self


def check(opt: torch.optim.Optimizer, ranks: int, compiled: bool = False) -> None:
    """Refuse (GanLabError) what the look-ahead cannot do: a critic optimizer it cannot differentiate, DDP, compile."""
    if compiled:
        raise GanLabError("loss.unroll with train.compile is not supported: the look-ahead calls the critic "
                          "through torch.func.functional_call and differentiates its updates, which a compiled "
                          "critic does not allow. Drop train.compile (the unrolled GAN trains eagerly).")
    if ranks > 1:
        raise GanLabError("loss.unroll is not supported under torchrun: the look-ahead runs the generator "
                          "several times per backward, which DDP's gradient reducer does not allow. Train "
                          "the unrolled GAN on one device.")
    name = type(opt).__name__
    if type(opt) not in UPDATES:
        raise GanLabError(f"loss.unroll needs the critic's optimizer to be Adam, AdamW, RMSprop or SGD, whose "
                          f"update gan-lab can take differentiably; it is {name}. Pick one of those optimizers, "
                          f"or drop loss.unroll.")
    for group in opt.param_groups:
        for key in ("amsgrad", "maximize", "nesterov"):
            if group.get(key):
                raise GanLabError(f"loss.unroll does not support the critic optimizer's {key}=true ({name}): "
                                  f"its look-ahead update is not implemented. Drop {key}, or drop loss.unroll.")


def _sqrt(v: Tensor) -> Tensor:
    """sqrt(v) with a zero (not NaN) gradient where v == 0: a weight that never had a gradient."""
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))


def _adam(p: Tensor, g: Tensor, moments: dict[str, Any], group: dict[str, Any], decoupled: bool) -> Tensor:
    # Adam (Kingma & Ba 2015) as torch takes it: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
    # p -= lr * m_hat / (sqrt(v_hat) + eps); AdamW decays p itself, Adam adds wd * p to g.
    (b1, b2), lr, eps, wd = group["betas"], group["lr"], group["eps"], group["weight_decay"]
    if wd and decoupled:
        p = p * (1 - lr * wd)
    elif wd:
        g = g + wd * p
    moments["step"] = t = moments.get("step", 0) + 1
    moments["exp_avg"] = m = b1 * moments.get("exp_avg", torch.zeros_like(p)) + (1 - b1) * g
    moments["exp_avg_sq"] = v = b2 * moments.get("exp_avg_sq", torch.zeros_like(p)) + (1 - b2) * g * g
    return p - lr * (m / (1 - b1 ** t)) / (_sqrt(v / (1 - b2 ** t)) + eps)


def _rmsprop(p: Tensor, g: Tensor, moments: dict[str, Any], group: dict[str, Any], decoupled: bool) -> Tensor:
    # RMSprop (Hinton) as torch takes it: s = alpha s + (1 - alpha) g^2, p -= lr * g / (sqrt(s) + eps);
    # centered subtracts the squared running mean of g, momentum averages g / (sqrt(s) + eps).
    alpha, lr, eps, wd = group["alpha"], group["lr"], group["eps"], group["weight_decay"]
    if wd:
        g = g + wd * p
    moments["square_avg"] = s = alpha * moments.get("square_avg", torch.zeros_like(p)) + (1 - alpha) * g * g
    if group["centered"]:
        moments["grad_avg"] = mean = alpha * moments.get("grad_avg", torch.zeros_like(p)) + (1 - alpha) * g
        s = s - mean * mean
    step = g / (_sqrt(s) + eps)
    if group["momentum"]:
        moments["momentum_buffer"] = step = group["momentum"] * moments.get("momentum_buffer", torch.zeros_like(p)) + step
    return p - lr * step


def _sgd(p: Tensor, g: Tensor, moments: dict[str, Any], group: dict[str, Any], decoupled: bool) -> Tensor:
    # SGD as torch takes it: g += wd * p; with momentum b = mu b + (1 - dampening) g (b = g at first)
    lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
    if wd:
        g = g + wd * p
    if mu:
        buffer = moments.get("momentum_buffer")
        g = g if buffer is None else mu * buffer + (1 - group["dampening"]) * g
        moments["momentum_buffer"] = g
    return p - lr * g


UPDATES: dict[type, tuple[Callable[..., Tensor], bool]] = {  # optimizer -> (its differentiable update, decoupled wd)
    torch.optim.Adam: (_adam, False), torch.optim.AdamW: (_adam, True),
    torch.optim.RMSprop: (_rmsprop, False), torch.optim.SGD: (_sgd, False),
}


def lookahead(critic: nn.Module, opt: torch.optim.Optimizer, steps: int,
              objective: Callable[[LookaheadCritic], Tensor], clip: float = 0.0) -> LookaheadCritic:
    """The critic after `steps` differentiable updates of its optimizer on objective(critic_i), each a fresh batch.

    objective(c) returns the critic's loss with c scoring (fakes with G's graph); the real critic and
    the optimizer's state are only read.
    """
    named = dict(critic.named_parameters())
    groups = {id(p): group for group in opt.param_groups for p in group["params"]}
    update, decoupled = UPDATES[type(opt)]
    # the look-ahead's own copies: leaves that start at the critic's weights, moments as the optimizer has them
    params = {name: p.detach().requires_grad_(True) for name, p in named.items()}
    buffers = {name: b.clone() for name, b in critic.named_buffers()}  # batch / spectral norm move them in training
    moments = {name: {k: v.detach() if isinstance(v, Tensor) else v for k, v in opt.state.get(p, {}).items()}
               for name, p in named.items()}
    for _ in range(steps):
        loss = objective(LookaheadCritic(critic, {**params, **buffers}))
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True, allow_unused=True)
        params = {name: p if g is None else update(p, g, moments[name], groups[id(named[name])], decoupled)
                  for (name, p), g in zip(params.items(), grads)}
        if clip > 0:
            params = {name: p.clamp(-clip, clip) for name, p in params.items()}  # as the critic step clips
    return LookaheadCritic(critic, {**params, **buffers})
