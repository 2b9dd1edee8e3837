"""conf/data/table.yaml -> TableData: a user's table (CSV, TSV, Parquet), encoded once and held on the device.

The table is read and checked (gan_lab.table), split into training rows and a held-out part kept for
evaluation (its row indices are recorded in the checkpoint), and the training rows are encoded by
CTGAN's reversible transform (gan_lab.table_transform) into one float tensor on the device.
`sample(B)` draws by training-by-sampling (gan_lab.table_condition: a conditional vector, log-frequency,
and real rows that have the asked category) and returns (x, y): the encoded rows and the conditional
vector (B, cond_width) as floats, or None for a table with no conditional block.

Two things go into the checkpoint as plain values: `layout` (what the table model is built from:
its spans and the categories' frequencies, gan_lab.tables_model) and `state_dict()` (the fitted
transform and the held-out rows), so `gan-lab sample` writes a table without the CSV.
pandas and scikit-learn are imported only when a table is built (start-up of every other command).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gan_lab.augment import parse_policy
from gan_lab.errors import GanLabError
from gan_lab.measures import TableScores, TableUtility


class TableData:
    """A user's table: encoded training rows on the device, conditional vectors by training-by-sampling."""

    capturable = True  # sample(): torch draws on the device and index_select (gan_lab.capture)
    resamples = True  # training-by-sampling draws rows with replacement: a batch may exceed a small table (CTGAN's 500)

    def __init__(self, path: str | None, target: str | None, discrete: list[str], continuous: list[str],
                 ignore: list[str], metadata: str | None, held_out: float, split_seed: int, memory_budget: float,
                 device: str | torch.device = "cpu", augment: str | list[str] | None = None):
        from gan_lab.table import read_table
        from gan_lab.table_condition import ConditionSampler
        from gan_lab.table_transform import TableTransform

        if not path:
            raise GanLabError("data=table needs the table: give data.path=<file.csv> (CSV, TSV or Parquet, .gz "
                              "too, with a header row).")
        if not (isinstance(held_out, (int, float)) and not isinstance(held_out, bool) and 0 <= held_out < 1):
            raise GanLabError(f"data.held_out={held_out!r} is out of range: it is the fraction of rows kept out of "
                              f"training for evaluation, a number in [0, 1), e.g. data.held_out=0.2.")
        table = read_table(path, discrete, continuous, ignore, metadata, memory_budget)
        if target is not None and target not in table.frame.columns:
            raise GanLabError(f"data.target={target!r} is not a modelled column of {path}: its columns are "
                              f"{', '.join(map(str, table.frame.columns))}.")
        n = len(table.frame)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
        n_held = n - training_rows(n, held_out)
        if n - n_held < 2:
            raise GanLabError(f"data.held_out={held_out} leaves {n - n_held} of {path}'s {n} rows to train on: "
                              f"lower it (e.g. data.held_out=0) or give a larger table.")
        self.held_out_rows = order[:n_held].sort().values  # the split, recorded in the checkpoint
        self.train_rows = order[n_held:].sort().values
        # the held-out rows as the file had them: what evaluation compares generated rows with
        self.held_out_frame = table.frame.iloc[self.held_out_rows.numpy()].reset_index(drop=True)
        train_frame = table.frame.iloc[self.train_rows.numpy()].reset_index(drop=True)
        table.frame = train_frame  # the transform is fitted on the training rows only
        self.transform = TableTransform.fit(table, seed=split_seed)
        self.table, self.path, self.target, self.device = table, str(path), target, torch.device(device)
        self.train_frame = train_frame
        self.rows = torch.from_numpy(self.transform.encode(train_frame, seed=split_seed)).to(self.device)
        self.sampler = ConditionSampler(self.rows, self.transform.spans, self.device)
        self.name, self.shape, self.n_classes, self.size = "table", (self.transform.width,), 0, len(self.rows)
        self.cond_width = self.sampler.width
        self.augment = parse_policy(augment, self.shape)  # refused: DiffAugment is for images

    @property
    def layout(self) -> dict[str, Any]:
        """What the table model is built from, as plain values: each span (kind, width, conditional) and the
        conditional categories' counts in the training rows (the proportions G keeps when no condition is given)."""
        spans = [[s.kind, s.width, s.conditional] for s in self.transform.spans]
        return {"spans": spans, "frequency": self.sampler.count.cpu().tolist()}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the data (plain values): the fitted transform and the held-out split."""
        return {"transform": self.transform.state_dict(), "held_out_rows": self.held_out_rows.tolist(),
                "path": self.path, "target": self.target}

    def conditions(self, n: int, seed: int) -> Tensor | None:
        """n conditional vectors as the training rows have them (plain frequency), from `seed` alone: what evaluation
        generates with, so its rows are a function of G's weights (None for a table without conditional blocks)."""
        if not self.cond_width:
            return None
        generator = torch.Generator(self.device).manual_seed(seed)
        return self.sampler.sample(n, generator, log_frequency=False)[0]

    def comparable(self, frame: Any) -> Any:
        """A frame of this table as the scores compare it: date columns as their numbers (epoch seconds), the rest as is."""
        from gan_lab.table_columns import to_numbers

        dates = [c for c in self.table.columns if c.dtype == "datetime"]
        return frame.assign(**{c.name: to_numbers(frame[c.name], c) for c in dates}) if dates else frame

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor | None]:
        """Training-by-sampling: real rows (B, width) that have the asked categories, and the conditional vector."""
        cond, _, index = self.sampler.sample(batch_size)
        x = self.rows.index_select(0, index)
        return x, (cond if self.cond_width else None)

    def measures(self) -> tuple[TableScores, TableUtility]:
        """Quality and category coverage while training; TSTR (with data.target), privacy and figures in eval."""
        return TableScores(self), TableUtility(self)


def steps_for_epochs(path: Any, held_out: Any, epochs: Any, batch_size: Any) -> int:
    """Generator steps that make `epochs` passes over a table's training rows at `batch_size` rows a step.

    conf/data/table.yaml's default train.steps (the `table_steps` resolver, registered by gan_lab.app.cli).
    CTGAN counts its training in epochs of max(1, rows // batch) steps, so a 50,000-row table gets the
    steps it needs and a table smaller than a batch one step an epoch. The rows are counted without parsing
    (lines after the header; a Parquet file's metadata), so this is cheap for any size; a file it cannot count (missing, unreadable: TableData
    explains which) gets one step a row per batch, and the run stops at TableData's own paragraph anyway.
    """
    from gan_lab.table import count_rows

    try:
        rows = count_rows(str(path))
    except (OSError, ValueError):
        return 1
    return max(1, int(round(float(epochs) * max(1, training_rows(rows, float(held_out)) // int(batch_size)))))


def training_rows(n: int, held_out: float) -> int:
    """Of a table's n rows, those left to train on once data.held_out's share is kept out (TableData's split)."""
    return n - int(round(held_out * n))
