"""CPU seconds to read a 54,000-row table and fit gan-lab's table transform to it, on one thread.

The table is plotnine's copy of ggplot2's diamonds (53,940 rows; 7 numeric columns, 3 categorical:
the shape of the table on which CTGAN spent ~74 CPU s fitting its transforms) when plotnine is
installed, else a synthetic mixed table of the same shape. The transform is fitted on a subsample
of gan_lab.table_transform.FIT_ROWS values per column (the default) and on all rows, for comparison.

    OMP_NUM_THREADS=1 python scripts/table_fit_time.py            # ~15 CPU s with plotnine's diamonds
    OMP_NUM_THREADS=1 python scripts/table_fit_time.py --synthetic
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy's BLAS and sklearn start their threads


def diamonds() -> pd.DataFrame | None:
    """ggplot2's diamonds as plotnine ships it, or None without plotnine."""
    try:
        from plotnine.data import diamonds as frame
    except ImportError:
        return None
    return frame.assign(**{c: frame[c].astype(str) for c in ("cut", "color", "clarity")})  # as a CSV has them


def synthetic(n: int = 54_000, seed: int = 0) -> pd.DataFrame:
    """A mixed table of diamonds' shape: 7 multimodal numeric columns (floats and integers), 3 categorical."""
    rng = np.random.default_rng(seed)
    columns = {}
    for j in range(7):
        k = rng.integers(1, 5)
        x = rng.normal(0, 10, k)[rng.integers(0, k, n)] * (j + 1) + rng.normal(0, 1 + j, n)
        columns[f"num{j}"] = np.round(x) if j % 2 else np.round(x, 3)
    for j in range(3):
        names = [f"c{j}_{i}" for i in range(5 + 2 * j)]
        columns[f"cat{j}"] = rng.choice(names, n, p=rng.dirichlet(np.ones(len(names))))
    return pd.DataFrame(columns)


def main() -> None:
    """Print the read and fit CPU seconds, with the subsample and with all rows."""
    import torch

    from gan_lab.table import read_table
    from gan_lab.table_transform import FIT_ROWS, TableTransform

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="the synthetic table even with plotnine")
    args = parser.parse_args()
    frame = None if args.synthetic else diamonds()
    name = "synthetic" if frame is None else "diamonds"
    frame = synthetic() if frame is None else frame
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.csv"
        frame.to_csv(path, index=False)
        started = time.process_time()
        table = read_table(path)
        read = time.process_time() - started
    kinds = [c.kind[0] for c in table.columns]
    print(f"{name}: {len(frame)} rows, {kinds.count('c')} continuous and {kinds.count('d')} discrete columns; "
          f"read and typed in {read:.1f} CPU s")
    for rows in (FIT_ROWS, len(frame)):
        transform = TableTransform.fit(table, seed=0, max_rows=rows)
        started = time.process_time()
        transform.encode(table.frame)
        encode = time.process_time() - started
        modes = [len(c.means) for c in transform.columns if hasattr(c, "means")]
        print(f"mixtures on {rows} rows a column: fit {transform.fit_seconds:.1f} CPU s, encode {encode:.1f} CPU s, "
              f"width {transform.width}, modes {modes}")


if __name__ == "__main__":
    main()
