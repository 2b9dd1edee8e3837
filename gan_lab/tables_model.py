"""conf/model/table.yaml -> CTGAN's generator and packed critic (Xu et al., NeurIPS 2019, sec. 4.4), for data=table.

G: z ++ cond -> residual blocks (Linear, batch norm, ReLU, the block's input concatenated to its output,
as the paper's h_i = h_{i-1} ++ ReLU(BN(FC(h_{i-1})))) -> one Linear to the encoded row, then a head per
span of the layout: tanh for a mode's scalar, Gumbel-softmax (tau 0.2) for each softmax block.
The critic: x ++ cond, packed (PacGAN: `pack` rows side by side), Linear-LeakyReLU(0.2)-Dropout(`dropout`; CTGAN: 0.5)
blocks and a linear score. Packing, minibatch std and DiffAugment's refusal come from models.plan_model.

The layout (gan_lab.table_data.TableData.layout, build-time like the shape) is plain values: each span
as [kind, width, conditional] and the conditional categories' counts. G declares two things the loop
reads: `cond_width` (the float conditional vector it takes as y) and `auxiliary_loss(y)`, CTGAN's
cross-entropy of its conditioned block against the condition, which the generator step adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gan_lab.errors import GanLabError
from gan_lab.models import Critic, Generator, SequentialBody, plan_model

GUMBEL_TAU = 0.2  # the paper's temperature: near one-hot samples with a usable gradient


class Residual(nn.Module):
    """h -> h ++ ReLU(BN(FC(h))): CTGAN's generator block (its output is wider than its input by `width`)."""

    def __init__(self, width_in: int, width: int):
        super().__init__()
        self.fc, self.bn = nn.Linear(width_in, width), nn.BatchNorm1d(width)

    def forward(self, h: Tensor) -> Tensor:
        return torch.cat([torch.relu(self.bn(self.fc(h))), h], dim=1)


class TableGenerator(Generator):
    """CTGAN's generator: z ++ cond through residual blocks to the encoded row, a head per span.

    With y None (sampling, the observers) it draws its own condition as the table has them: a
    conditional block uniformly, then a category by its plain frequency in the training rows.
    """

    def __init__(self, net: nn.Module, z_dim: int, shape: tuple[int, ...], spans: list[list[Any]],
                 frequency: list[int]):
        super().__init__(net, z_dim, shape, 0)
        self.spans = [(kind, int(width)) for kind, width, _ in spans]
        blocks = [(start, width) for (kind, width, cond), start in zip(spans, _starts(spans)) if cond]
        self.blocks = blocks  # (start in the row, width) of each conditional block, in the condition's order
        self.cond_width = sum(width for _, width in blocks)
        widest = max((width for _, width in blocks), default=1)
        counts = torch.zeros(max(len(blocks), 1), widest)
        offset = 0
        for j, (_, width) in enumerate(blocks):
            counts[j, :width] = torch.tensor(frequency[offset:offset + width], dtype=torch.float32)
            offset += width
        self.register_buffer("frequency", counts)
        offsets = torch.tensor([0] + [w for _, w in blocks], dtype=torch.long).cumsum(0)[:-1]
        self.register_buffer("offsets", offsets)
        self.logits: Tensor | None = None  # the last forward's raw outputs, which auxiliary_loss reads

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.cond_width:
            y = self.draw_condition(len(z)) if y is None else y
            z = torch.cat([z, y.to(z.dtype)], dim=1)
        # kept for the condition loss: CTGAN's cross-entropy is on the logits before Gumbel noise, of the
        # very fakes the critic scored (a second forward would move batch norm's statistics again)
        self.logits = logits = self.net(z)
        parts, start = [], 0
        for kind, width in self.spans:
            block = logits[:, start:start + width]
            parts.append(torch.tanh(block) if kind == "tanh"
                         else nn.functional.gumbel_softmax(block, tau=GUMBEL_TAU, hard=False))
            start += width
        return torch.cat(parts, dim=1)

    def auxiliary_loss(self, y: Tensor | None) -> Tensor:
        """CTGAN's L_cond: cross-entropy of the last forward's conditioned blocks against y, averaged over rows."""
        if y is None or not self.cond_width or self.logits is None:
            return torch.zeros((), device=self.frequency.device)
        losses, offset = [], 0
        for start, width in self.blocks:
            asked = y[:, offset:offset + width]
            # zero outside the block each row was asked about (its one-hot is there, else all zeros)
            log_p = torch.log_softmax(self.logits[:, start:start + width].float(), dim=1)
            losses.append(-(asked * log_p).sum(dim=1))
            offset += width
        return torch.stack(losses, dim=1).sum(dim=1).mean()

    def draw_condition(self, n: int) -> Tensor:
        """n conditional vectors as the training rows have them: a block uniformly, a category by its frequency."""
        block = torch.randint(len(self.blocks), (n,), device=self.frequency.device)
        category = torch.multinomial(self.frequency[block], 1).squeeze(1)
        return nn.functional.one_hot(self.offsets[block] + category, self.cond_width).float()

    def condition(self, block: int, category: int, n: int) -> Tensor:
        """n conditional vectors that all ask for one category of one block (`gan-lab sample condition.col=v`)."""
        flat = torch.full((n,), int(self.offsets[block]) + category, device=self.frequency.device)
        return nn.functional.one_hot(flat, self.cond_width).float()


class TableCritic(Critic):
    """The critic of x ++ cond: the condition joins each row before packing (as CTGAN's discriminator)."""

    def __init__(self, *args: Any, cond_width: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.cond_width = cond_width

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if self.cond_width and y is not None:
            x = torch.cat([x, y.to(x.dtype)], dim=1)
        return super().forward(x, None)

    def pointwise(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """One score per sample (B,), as Critic.pointwise, the condition joined first."""
        if self.cond_width and y is not None:
            x = torch.cat([x, y.to(x.dtype)], dim=1)
        return super().pointwise(x, None)


def _spectral(layer: nn.Linear, norm: str) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if norm == "spectral" else layer


def _starts(spans: Sequence[Sequence[Any]]) -> list[int]:
    starts, start = [], 0
    for _, width, _ in spans:
        starts.append(start)
        start += int(width)
    return starts


def _plain(value: Any) -> Any:
    # Hydra hands build-time values over as its own containers (DictConfig, ListConfig): plain ones here
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def _check_layout(layout: Any, shape: tuple[int, ...]) -> None:
    ok = (isinstance(layout, dict) and isinstance(layout.get("spans"), list)
          and all(isinstance(s, list) and len(s) == 3 and s[0] in ("tanh", "softmax") and type(s[1]) is int
                  and s[1] >= 1 and isinstance(s[2], bool) for s in layout["spans"])
          and isinstance(layout.get("frequency"), list) and all(type(f) is int and f >= 0 for f in layout["frequency"]))
    if not ok or sum(s[1] for s in layout["spans"]) != shape[0] or len(layout["frequency"]) != sum(
            s[1] for s in layout["spans"] if s[2]):
        raise GanLabError("model=table needs a table's layout (its encoded columns), which only data=table gives "
                          "(or a table checkpoint, whose layout fits its data shape). Use data=table "
                          "data.path=<file.csv>, or another model for this data.")


def table(shape: tuple[int, ...], z_dim: int, hidden: int, depth: int, dropout: float, critic_norm: str,
          pack: int, minibatch_std: int, n_classes: int = 0, augment: Sequence[str] = (),
          layout: dict[str, Any] | None = None) -> tuple[TableGenerator, TableCritic]:
    """CTGAN's residual G (`depth` blocks of `hidden`) and packed MLP critic for a table's layout (conf/model/table.yaml)."""
    plan = plan_model(shape, z_dim=z_dim, conditional=False, n_classes=n_classes, pack=pack,
                      minibatch_std=minibatch_std, augment=augment, critic_norm=critic_norm,
                      critic_norms=("none", "layer", "spectral"), hidden=hidden, depth=depth)
    layout = _plain(layout)
    _check_layout(layout, tuple(shape))
    if not (isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout < 1):
        raise GanLabError(f"model.dropout={dropout} is out of range: the critic's dropout rate, in [0, 1) "
                          f"(CTGAN: 0.5).")
    spans, width = layout["spans"], shape[0]
    cond_width = sum(s[1] for s in spans if s[2])

    g_layers: list[nn.Module] = []
    width_in = z_dim + cond_width
    for _ in range(depth):
        g_layers.append(Residual(width_in, hidden))
        width_in += hidden
    g_layers.append(nn.Linear(width_in, width))

    # x ++ cond per row, `pack` rows side by side
    d_layers: list[nn.Module] = []
    width_in = plan.pack * (width + cond_width)
    for i in range(depth):
        if i == depth - 1:  # the last block: Critic's minibatch std adds one feature here
            split = len(d_layers)
            width_in += plan.std_extra
        d_layers += [_spectral(nn.Linear(width_in, hidden), critic_norm),
                     *([nn.LayerNorm(hidden)] if critic_norm == "layer" else []),
                     nn.LeakyReLU(0.2), nn.Dropout(dropout)]
        width_in = hidden
    d_layers.append(_spectral(nn.Linear(hidden, 1), critic_norm))
    body = SequentialBody(*d_layers, split=split)
    G = TableGenerator(nn.Sequential(*g_layers), z_dim, tuple(shape), spans, layout["frequency"])
    critic = TableCritic(body, plan.critic_norm, 0, plan.pack, plan.minibatch_std, plan.augment,
                         cond_width=cond_width)
    return G, critic
