"""A user's table read from CSV, TSV or Parquet (.gz too): its columns typed, checked, ready to encode.

`read_table(path, ...)` returns a Table: the modelled columns as pandas read them and one
ColumnSpec each (gan_lab.table_columns: the type inference and how values are written back).
Types are inferred, overridden by name (`discrete`, `continuous`, `ignore`), or read from an SDV
single-table metadata JSON. Every file a user can get wrong is refused with one GanLabError
paragraph naming the file, column or line; nothing is written.
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gan_lab.errors import GanLabError
from gan_lab.table_columns import ColumnSpec, infer_column

SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
PARQUET = (".parquet", ".pq")

# SDV's single-table metadata: sdtype -> gan-lab's kind. Others (id, and the PII types such as
# email or address, which SDV replaces with fakes) are left out of the model, as data.ignore does.
SDTYPES = {"numerical": "continuous", "datetime": "continuous", "categorical": "discrete", "boolean": "discrete"}

# Bytes per encoded value (float32) and the widest a continuous column can encode to: a scalar,
# up to 10 mode indicators and a missing indicator (gan_lab.table_transform).
_FLOAT_BYTES = 4
_CONTINUOUS_WIDTH = 1 + 10 + 2


@dataclass
class Table:
    """The modelled columns of a user's table (file order) and one spec each."""

    frame: pd.DataFrame        # the modelled columns only, as pandas read them
    columns: list[ColumnSpec]  # one per column of frame, same order
    source: str                # the file, for messages
    ignored: list[str]         # columns of the file left out (data.ignore, SDV id and PII columns): not generated

    def encoded_bytes(self) -> int:
        """An upper bound of the encoded table's size (float32, before the mixtures are fitted)."""
        return len(self.frame) * sum(_width(self.frame[c.name], c) for c in self.columns) * _FLOAT_BYTES


def _width(series: pd.Series, spec: ColumnSpec) -> int:
    if spec.kind == "continuous":
        return _CONTINUOUS_WIDTH
    return int(series.nunique()) + int(series.isna().any())


def read_table(path: str | Path, discrete: Sequence[str] = (), continuous: Sequence[str] = (),
               ignore: Sequence[str] = (), metadata: str | Path | None = None,
               memory_budget: float | None = None) -> Table:
    """Read, type and check a user's table; `memory_budget` (GiB) bounds the encoded size."""
    path = Path(path)
    frame = read_frame(path)
    source = str(path)
    wanted = {**{n: "discrete" for n in discrete}, **{n: "continuous" for n in continuous}}
    both = sorted(set(discrete) & set(continuous))
    if both:
        raise GanLabError(f"Column {both[0]!r} is in both data.discrete and data.continuous: name it in one.")
    formats: dict[str, str] = {}
    ignore = list(ignore)
    if metadata is not None:
        sdv_kinds, formats, sdv_ignored = read_metadata(Path(metadata), list(frame.columns))
        wanted = {**sdv_kinds, **wanted}
        ignore += [n for n in sdv_ignored if n not in wanted and n not in ignore]
    _check_names(source, list(frame.columns), [*wanted, *ignore])
    kept = [n for n in frame.columns if n not in ignore]
    if not kept:
        raise GanLabError(f"Every column of {source} is in data.ignore: keep at least one.")
    columns = [infer_column(frame[n], source, wanted.get(n), formats.get(n)) for n in kept]
    table = Table(frame[kept], columns, source, [n for n in frame.columns if n in ignore])
    if memory_budget is not None:
        check_memory(table, memory_budget)
    return table


def count_rows(path: str | Path) -> int:
    """The rows of a table file without parsing it: its lines after the header (a final line without a
    newline counts; a quoted field spanning lines counts once a line), or a Parquet file's row count.

    Counted once per file version: Hydra resolves the config (and so train.steps' resolver) several times
    a run, and a large CSV is read whole to count its lines."""
    stat = Path(path).stat()
    return _count_rows(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _count_rows(path_text: str, size: int, mtime_ns: int) -> int:
    # size and mtime_ns key the cache only: a file rewritten in place is counted again
    path = Path(path_text)
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] in PARQUET:
        import pyarrow.parquet

        return int(pyarrow.parquet.read_metadata(path).num_rows)
    opened = gzip.open(path, "rb") if suffixes[-1:] == [".gz"] else open(path, "rb")
    lines, last = 0, b"\n"
    with opened as stream:
        while chunk := stream.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return max(0, lines + (last != b"\n") - 1)


def read_frame(path: Path) -> pd.DataFrame:
    """The file as pandas reads it, a header row required; every reading failure as a GanLabError."""
    if not path.is_file():
        raise GanLabError(f"data.path={path} does not exist or is not a file. Give the path of a CSV, TSV or "
                          f"Parquet table (.gz too), with a header row.")
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    kind = suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) == 2 else suffixes[-1] if suffixes else ""
    if kind not in SEPARATORS and kind not in PARQUET:
        raise GanLabError(f"data.path={path} is not a table gan-lab reads: name a .csv, .tsv or .parquet file "
                          f"(.csv.gz and .tsv.gz too).")
    try:
        if kind in PARQUET:
            frame = _read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=SEPARATORS[kind], encoding="utf-8", skipinitialspace=True,
                                low_memory=False)
    except UnicodeDecodeError as error:
        raise GanLabError(f"{path} is not UTF-8 text: {_bad_byte(path)}. Re-save it as UTF-8 (in a "
                          f"spreadsheet: CSV UTF-8; or `iconv -f latin1 -t utf-8`).") from error
    except pd.errors.EmptyDataError as error:
        raise GanLabError(f"{path} is empty: no header row and no rows. Give a table with a header row "
                          f"naming its columns.") from error
    except pd.errors.ParserError as error:
        raise GanLabError(_ragged(path, str(error))) from error
    except (OSError, EOFError) as error:  # a truncated or mislabelled .gz, an unreadable Parquet file
        raise GanLabError(f"{path} could not be read: {error}. Check that the file is complete and is what "
                          f"its name says.") from error
    # pandas makes the first column an index when the first rows have one field more than the header,
    # and fills a row with too few fields with missing values: both are ragged rows, found by counting
    # (only then: a short row leaves the last column missing).
    if kind in SEPARATORS and (not frame.index.equals(pd.RangeIndex(len(frame))) or frame.iloc[:, -1].isna().any()):
        _check_fields(path, SEPARATORS[kind])
    _check_shape(path, frame)
    return frame


def _check_fields(path: Path, separator: str) -> None:
    """Refuse the first row whose field count differs from the header's (csv's count, quotes respected)."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as file:
        rows = csv.reader(file, delimiter=separator, skipinitialspace=True)
        header = next(rows, [])
        for row in rows:
            if row and len(row) != len(header):
                raise GanLabError(_ragged(path, f"Expected {len(header)} fields in line {rows.line_num}, "
                                                f"saw {len(row)}"))


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        import pyarrow  # noqa: F401  (pandas' Parquet engine; optional, so it is asked for by name)
    except ImportError as error:
        raise GanLabError(f"Reading {path} needs pyarrow, which is not installed: pip install "
                          f"'gan-lab[parquet]' (or pip install pyarrow), or save the table as CSV.") from error
    return pd.read_parquet(path)


def _bad_byte(path: Path) -> str:
    """Where the first byte that is not UTF-8 sits: its line and byte, read line by line."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return f"line {number}, byte {error.start + 1} of that line is {line[error.start:error.start + 1]!r}"
    return "a byte sequence is not valid UTF-8"


def _ragged(path: Path, message: str) -> str:
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if not found:
        return f"{path} could not be parsed as a table: {message.strip()}. Check its separator and quoting."
    expected, line, saw = found.groups()
    fields = "1 field" if saw == "1" else f"{saw} fields"
    return (f"Line {line} of {path} has {fields} where the header has {expected}: a ragged row. Fix that "
            f"row (a value that contains the separator needs quotes) or remove it.")


def _check_shape(path: Path, frame: pd.DataFrame) -> None:
    names = [str(n) for n in frame.columns]
    if all(_is_number(n) for n in names):
        raise GanLabError(f"The first row of {path} looks like data, not a header ({', '.join(names[:4])}). "
                          f"Add a header row naming the columns.")
    if len(names) < 2:
        hint = " (is it separated by ';'? gan-lab reads .csv with ',' and .tsv with tabs)" \
            if any(s in names[0] for s in ";|") else ""
        raise GanLabError(f"{path} has one column ({names[0]!r}){hint}: a table to model needs at least two "
                          f"columns, with a header row naming them.")
    if frame.empty:
        raise GanLabError(f"{path} has a header ({', '.join(names[:4])}) but no rows: there is nothing to learn.")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_names(source: str, columns: list[str], named: list[str]) -> None:
    unknown = [n for n in named if n not in columns]
    if unknown:
        raise GanLabError(f"Column {unknown[0]!r} (in data.discrete, data.continuous, data.ignore or the "
                          f"metadata) is not a column of {source}, whose columns are: {', '.join(columns)}.")


def read_metadata(path: Path, columns: list[str]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """An SDV single-table metadata JSON: each column's kind, date formats, and the columns left out."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        described = meta["columns"]
        sdtypes = {name: described[name]["sdtype"] for name in described}
    except FileNotFoundError as error:
        raise GanLabError(f"data.metadata={path} does not exist. Give SDV's single-table metadata JSON, or "
                          f"leave data.metadata out to infer the types.") from error
    except (ValueError, KeyError, TypeError) as error:
        raise GanLabError(f"data.metadata={path} is not SDV single-table metadata: it needs {{\"columns\": "
                          f"{{name: {{\"sdtype\": ...}}}}}} ({type(error).__name__}: {error}).") from error
    missing = [n for n in columns if n not in sdtypes]
    if missing:
        raise GanLabError(f"Column {missing[0]!r} of the table is not in data.metadata={path}: describe it "
                          f"there or leave it out with data.ignore=[{missing[0]}].")
    kinds = {n: SDTYPES[t] for n, t in sdtypes.items() if t in SDTYPES and n != meta.get("primary_key")}
    formats = {n: described[n]["datetime_format"] for n in kinds
               if sdtypes[n] == "datetime" and described[n].get("datetime_format")}
    return kinds, formats, [n for n in sdtypes if n not in kinds]


def check_memory(table: Table, budget_gib: float) -> None:
    """Refuse a table whose encoded rows would not fit `budget_gib`, saying what would."""
    need = table.encoded_bytes()
    budget = budget_gib * 2**30
    if need <= budget:
        return
    per_row = need // len(table.frame)
    widths = sorted(((_width(table.frame[c.name], c), c.name) for c in table.columns), reverse=True)
    widest = ", ".join(f"{name!r} ({width})" for width, name in widths[:3])
    raise GanLabError(f"{table.source} would take about {need / 2**30:.2f} GiB encoded ({len(table.frame)} rows "
                      f"x {per_row // _FLOAT_BYTES} numbers), over data.memory_budget={budget_gib} GiB: at this "
                      f"width {int(budget // per_row)} rows fit. The widest columns are {widest}; leave wide "
                      f"ones out with data.ignore, use fewer rows, or raise data.memory_budget.")

