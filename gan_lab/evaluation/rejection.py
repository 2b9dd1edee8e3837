"""Discriminator Rejection Sampling (Azadi et al. 2019): the critic corrects G's samples at sampling time.

A critic trained with the binary cross-entropy loss has, at its optimum, the logit
D(x) = log p_data(x) / p_G(x). Rejection sampling from p_G with acceptance probability
p_data / (M p_G) = exp(D(x) - D*_max) would then give p_data exactly. DRS makes that practical:

    D*_max  the largest logit over a burn-in set of BURN_IN samples, raised whenever a larger one appears
    F(x)    = D(x) - D*_max - log(1 - exp(D(x) - D*_max - eps))      (eps: F stays finite at the max)
    accept x with probability sigmoid(F(x) - gamma)

sigmoid(F) is about exp(D - D*_max), so gamma = 0 is plain rejection sampling; a larger gamma
accepts less and keeps only the samples the critic likes best, a smaller one accepts more. The
paper picks gamma as a percentile of F per batch; gan-lab fixes it once, as the GAMMA_QUANTILE
quantile of F over the burn-in set, so the acceptance of a sample does not depend on the others
drawn with it. F is mostly far below 0, so this gamma is usually negative: DRS accepts more than
exact rejection sampling would (which accepts 1 in exp(D*_max)) and corrects G part of the way.

Whether the logit is a log-density ratio is the loss's own declaration (gan_lab.losses.Loss.log_ratio):
exact for the BCE-family losses (minimax, nonsaturating), approximate for a relativistic critic (its
loss compares real with fake scores), and no for a Wasserstein, hinge or least-squares critic, for
which DRS is only a heuristic filter (allowed, with a warning: `loss_caveat`). The stored config's
`loss._target_` is resolved only among the classes conf/loss/*.yaml name, never imported as written.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gan_lab.errors import GanLabError

BURN_IN = 10_000  # samples that estimate D*_max and gamma before any is accepted
GAMMA_QUANTILE = 0.95  # gamma: this quantile of F over the burn-in set
EPS = 1e-6  # keeps log(1 - exp(D - D*_max - eps)) finite at D = D*_max
MAX_DRAWS = 1000  # give up after this many candidates per requested sample



def drs_shifted_logit(logits: Tensor, d_max: Tensor | float, gamma: Tensor | float = 0.0,
                      eps: float = EPS) -> Tensor:
    """F(x) - gamma, in float64: its sigmoid is DRS's acceptance probability."""
    d = logits.double() - d_max
    return d - torch.log1p(-torch.exp(d - eps)) - gamma  # log(1 - exp(.)) as log1p: exact near the max


def loss_caveat(loss_target: str | None, copies: int = 1) -> str | None:
    """Why DRS is only approximate or heuristic for this critic (None: it is exact at the optimum).

    `loss_target` is the stored config's loss._target_; `copies`: how many samples the critic scores
    jointly (model.pack times the minibatch-std group).
    """
    from gan_lab.runs.rebuild import builders

    name = (loss_target or "?").rsplit(".", 1)[-1]
    if copies > 1:
        return (f"the critic scores {copies} samples jointly (model.pack / model.minibatch_std), so DRS uses its "
                f"score of {copies} copies of each sample, which is no log-density ratio of one sample: it only "
                f"keeps the samples the critic scores best")
    # only a class conf/loss/ names: a stored string is looked up, never imported
    loss = builders("loss").get(loss_target) if isinstance(loss_target, str) else None
    log_ratio = getattr(loss, "log_ratio", None)
    if log_ratio == "exact":
        return None
    if log_ratio == "approximate":
        return (f"the critic was trained with the relativistic loss {name}, whose score is a log-density ratio "
                f"only approximately, so DRS corrects G's samples approximately")
    known = "," if loss is not None else ", a loss gan-lab's conf/loss/ does not name,"
    return (f"the critic was trained with {name}{known} whose score is not a log-density ratio (DRS assumes the "
            f"BCE critic of loss=minimax or nonsaturating), so DRS here only keeps the samples the critic scores "
            f"best")


class RejectionSampler(nn.Module):
    """G with DRS: called as G(z, y), it returns one accepted sample per row (label y[i] kept), drawing more as needed.

    `gamma` fixes the shift (default: the GAMMA_QUANTILE quantile of F over the burn-in set).
    The given z are each row's first candidate; the replacements for rejected rows come from
    its own generator seeded by `seed`, so the output is a function of the weights, z and seed.
    Counts `drawn` and `accepted` give the acceptance rate.
    """

    def __init__(self, G: nn.Module, critic: nn.Module, seed: int = 0, burn_in: int = BURN_IN,
                 quantile: float = GAMMA_QUANTILE, batch_size: int = 2500, gamma: float | None = None):
        super().__init__()
        self.G, self.critic = G, critic
        self.z_dim, self.n_classes = G.z_dim, G.n_classes
        self.rng = torch.Generator().manual_seed(seed)
        self.drawn = self.accepted = 0
        device = next(G.parameters()).device
        logits = []
        for i in range(0, burn_in, batch_size):
            rows = min(batch_size, burn_in - i)
            y = (torch.arange(i, i + rows, device=device) % self.n_classes) if self.n_classes else None
            logits.append(self._logits(torch.randn(rows, self.z_dim, generator=self.rng).to(device), y)[1])
        logits = torch.cat(logits)
        self.d_max = logits.max()
        # gamma given: fixed (0: plain rejection sampling with the bound D*_max); else the burn-in's quantile of F
        self.gamma = (torch.tensor(float(gamma), dtype=torch.float64, device=logits.device) if gamma is not None
                      else torch.quantile(drs_shifted_logit(logits, self.d_max), quantile))

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drawn candidates since the burn-in."""
        return self.accepted / self.drawn if self.drawn else float("nan")

    @torch.no_grad()
    def _logits(self, z: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        self.G.eval()  # batch norm on its running statistics
        self.critic.eval()  # and spectral norm on its stored u, v: a sample's score does not depend on its batch
        x = self.G(z, y)
        # one score per sample, also from a packed (PacGAN) or minibatch-std critic: see loss_caveat
        return x, self.critic.pointwise(x, y).double()

    @torch.no_grad()
    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """One accepted sample per row of z (for label y[i] when conditional)."""
        out: Tensor | None = None
        todo = torch.arange(len(z), device=z.device)  # rows still without an accepted sample
        draws = 0
        while len(todo):
            if draws > MAX_DRAWS * len(z):
                raise GanLabError(f"rejection=drs accepted {len(z) - len(todo)} of {draws} candidates: too few to "
                                  f"finish. The critic rejects almost every sample of this G; sample without "
                                  f"rejection=drs.")
            labels = None if y is None else y[todo]
            x, logits = self._logits(z[todo], labels)
            self.d_max = torch.maximum(self.d_max, logits.max())  # a larger logit raises the bound at once
            p = torch.sigmoid(drs_shifted_logit(logits, self.d_max, self.gamma))
            keep = (torch.rand(len(todo), generator=self.rng, dtype=torch.float64).to(p.device) < p)
            if out is None:
                out = torch.empty(len(z), *x.shape[1:], dtype=x.dtype, device=x.device)
            out[todo[keep]] = x[keep]
            self.drawn += len(todo)
            draws += len(todo)
            self.accepted += int(keep.sum())
            todo = todo[~keep]
            z = z.clone()
            z[todo] = torch.randn(len(todo), self.z_dim, generator=self.rng).to(z.device)  # fresh candidates
        assert out is not None
        return out
