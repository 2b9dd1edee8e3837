"""`gan-lab sample` of a table checkpoint: rows with the input's columns, types and categories, as CSV or Parquet.

Needs no input file: the checkpoint holds the fitted transform as plain values (its `data_state`,
gan_lab.table_data). `condition.<column>=<value>` asks every row for one value of a discrete column
(CTGAN's conditional vector); without it G draws its conditions as the training rows had them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gan_lab.errors import GanLabError
from gan_lab.runs.files import atomic_writer

CONDITION = "condition."  # the key family of a fixed condition: condition.<column>=<value>
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")


def split_conditions(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """(the other arguments, {column: value} of each condition.<column>=<value> among them)."""
    rest, conditions = [], {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if key.startswith(CONDITION) and sep:
            conditions[key[len(CONDITION):]] = value
        else:
            rest.append(arg)
    return rest, conditions


def sample_table(G: torch.nn.Module, state: dict[str, Any], n: int, seed: int, out: Path,
                 conditions: dict[str, str]) -> Any:
    """n generated rows of a table checkpoint, written to `out` (.csv, .tsv or .parquet); returns the DataFrame."""
    from gan_lab.table_transform import TableTransform

    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise GanLabError(f"out={out} is not a table file: a table checkpoint's samples go to a .csv, .tsv or "
                          f".parquet file, e.g. out=synthetic.csv.")
    transform = TableTransform.from_state(state["data_state"]["transform"])
    if len(conditions) > 1:
        raise GanLabError(f"{len(conditions)} conditions were given ({', '.join(CONDITION + c for c in conditions)}): "
                          f"CTGAN's conditional vector asks for one column's value at a time. Give one.")
    device = next(G.parameters()).device
    y = None
    for column, value in conditions.items():
        block, category = transform.category(column, value)  # a paragraph for an unknown column or value
        y = G.condition(block, category, n).to(device)
    torch.manual_seed(seed)
    z = torch.randn(n, G.z_dim)
    with torch.no_grad():
        G.eval()
        rows = G(z.to(device), y).cpu()
    frame = transform.inverse(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(out) as tmp:  # the file whole or absent, even after a Ctrl-C
        if out.suffix.lower() == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, sep="\t" if out.suffix.lower() == ".tsv" else ",")
    return frame
