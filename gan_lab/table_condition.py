"""Training-by-sampling (CTGAN, Xu et al. 2019, sec. 4.3): the conditional vector and the real rows that match it.

Each step picks one conditional block (a discrete column, or a continuous column's missing
indicator) uniformly, one of its categories with probability proportional to the log of its
frequency (so rare categories are seen often enough to be learnt), and returns the conditional
vector (the one-hot of that category among all conditional blocks), the mask (which block was
picked) and, for the critic, real rows that have that category. Everything is tensors on one
device and the sampling is pure torch, so it can run inside the training loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gan_lab.table_transform import Span


class ConditionSampler:
    """Conditional vectors and matching real rows, drawn from the encoded training rows' categories."""

    def __init__(self, rows: Tensor, spans: list[Span], device: str | torch.device = "cpu"):
        blocks = [s for s in spans if s.conditional]
        self.blocks, self.device = blocks, torch.device(device)
        self.n_blocks = len(blocks)
        self.width = sum(s.width for s in blocks)  # the conditional vector's length
        self.n_rows = len(rows)
        widest = max((s.width for s in blocks), default=1)
        counts = torch.zeros(max(self.n_blocks, 1), widest)
        self.offsets = torch.tensor([0] + [s.width for s in blocks], device=self.device).cumsum(0)[:-1]
        by_category = []  # row indices grouped by (block, category), in the conditional vector's order
        for j, span in enumerate(blocks):
            codes = rows[:, span.start:span.start + span.width].argmax(dim=1)
            counts[j, :span.width] = torch.bincount(codes, minlength=span.width).float()
            by_category.append(torch.argsort(codes, stable=True))
        # log(1 + count): the paper's log-frequency; a category no row has keeps probability 0
        self.log_frequency = torch.log1p(counts).to(self.device)
        self.frequency = counts.to(self.device)
        flat_counts = torch.cat([counts[j, :s.width] for j, s in enumerate(blocks)]) if blocks else torch.zeros(0)
        self.count = flat_counts.long().to(self.device)
        # where (block, category)'s rows start in `rows_by_category`: each block lists all rows once
        starts = [j * self.n_rows + torch.cumsum(counts[j, :s.width], 0) - counts[j, :s.width]
                  for j, s in enumerate(blocks)]
        self.start = (torch.cat(starts) if blocks else torch.zeros(0)).long().to(self.device)
        self.rows_by_category = (torch.cat(by_category) if blocks else torch.zeros(0)).long().to(self.device)

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               log_frequency: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """(cond (B, width), mask (B, n_blocks), real row indices (B,)) for one training step.

        With log_frequency=False categories follow their plain frequency: the conditions to
        generate with when sampling, so the output keeps the table's proportions."""
        if self.n_blocks == 0:  # nothing discrete: no condition, rows uniformly
            rows = torch.randint(self.n_rows, (batch_size,), device=self.device, generator=generator)
            empty = torch.zeros(batch_size, 0, device=self.device)
            return empty, empty, rows
        block = torch.randint(self.n_blocks, (batch_size,), device=self.device, generator=generator)
        weights = (self.log_frequency if log_frequency else self.frequency)[block]
        category = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        flat = self.offsets[block] + category
        # scatter, not one_hot: one_hot reads the indices' range back to the host (a sync, gan_lab.capture)
        cond = torch.zeros(batch_size, self.width, device=self.device).scatter_(1, flat[:, None], 1.0)
        mask = torch.zeros(batch_size, self.n_blocks, device=self.device).scatter_(1, block[:, None], 1.0)
        # a uniform real row among those with that category: start + floor(u * count)
        u = torch.rand(batch_size, device=self.device, generator=generator)
        pick = self.start[flat] + (u * self.count[flat]).long().clamp(max=self.count[flat] - 1)
        return cond, mask, self.rows_by_category[pick]

    def condition(self, block: int, category: int, batch_size: int) -> tuple[Tensor, Tensor]:
        """(cond, mask) that ask every row for one category of one block (`gan-lab sample condition.col=value`)."""
        flat = torch.full((batch_size,), int(self.offsets[block]) + category, device=self.device)
        cond = torch.nn.functional.one_hot(flat, self.width).float()
        mask = torch.nn.functional.one_hot(torch.full_like(flat, block), self.n_blocks).float()
        return cond, mask


def condition_cross_entropy(logits: Tensor, blocks: list[Span], cond: Tensor, mask: Tensor) -> Tensor:
    """The generator's cross-entropy on its condition (CTGAN's L_cond): for the block each row was asked
    about, -log softmax(logits of that block)[asked category]; summed over a row's blocks under the
    mask (one), averaged over rows. `logits` are the generator's raw outputs before the heads."""
    if not blocks:
        return logits.new_zeros(())
    losses, offset = [], 0
    for span in blocks:
        target = cond[:, offset:offset + span.width].argmax(dim=1)
        losses.append(torch.nn.functional.cross_entropy(logits[:, span.start:span.start + span.width], target,
                                                        reduction="none"))
        offset += span.width
    return (torch.stack(losses, dim=1) * mask).sum() / len(logits)
