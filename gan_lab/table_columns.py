"""One column of a user's table: what it is (ColumnSpec), how its type is inferred, and its numbers.

A column is either continuous (modelled through a number: floats, integers with many values,
dates as epoch seconds) or discrete (modelled as categories: strings, booleans, pandas categories,
integers with few values). The spec also records how to write a generated value back the way the
input had it: integers as integers within the observed range, floats at the input's decimals,
dates in the input's format, categories with the input's category set.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from gan_lab.errors import GanLabError

KINDS = ("continuous", "discrete")
DTYPES = ("float", "int", "bool", "str", "category", "datetime")

# An integer column with at most this many distinct values is discrete: a one-hot gives back its
# exact value set and frequencies, where a mixture of up to 10 modes would smear neighbouring counts
# into each other (0/1 flags, ratings 1-5, number of children). Above it an integer column is more
# likely a quantity whose order matters (age, price in cents), which the mixture models. A fixed
# count rather than a share of rows, so the choice does not flip as the table grows.
FEW_INTEGERS = 10

# A discrete column whose distinct values are at least this share of its rows carries an id, a
# name or free text: a one-hot could only memorise it, and its width grows with the table.
ID_LIKE_SHARE = 0.9
ID_LIKE_MIN_ROWS = 20  # below this a table is too small to tell an id from a category

_DATE_PARTS = ("%m", "%b", "%B")  # a guessed format without a month is a number, not a date
_MAX_DECIMALS = 8


@dataclass
class ColumnSpec:
    """How one column is modelled and written back: plain values only (stored in a checkpoint)."""

    name: str
    kind: str                              # continuous | discrete
    dtype: str                             # float | int | bool | str | category | datetime
    pandas_dtype: str = ""                 # the input's pandas dtype, restored where it can be
    minimum: float | None = None           # continuous: observed range, generated values are clipped to it
    maximum: float | None = None
    decimals: int | None = None            # float: the input's decimals (None: more than _MAX_DECIMALS)
    datetime_format: str | None = None     # datetime read from text: its strftime format
    datetime_unit: str = "s"               # datetime: "D" when every value is a midnight, else "s"
    timezone: str | None = None            # datetime with a time zone: its name (values are modelled in UTC)
    categories: list[Any] | None = None    # category dtype: the input's declared categories

    def to_dict(self) -> dict:
        """Plain values (what torch.load(weights_only=True) accepts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> ColumnSpec:
        """The spec to_dict() described, checked."""
        if state.get("kind") not in KINDS or state.get("dtype") not in DTYPES:
            raise ValueError(f"not a column spec: {state!r}")
        return cls(**state)


def _python(value: Any) -> Any:
    """A numpy or pandas scalar as the plain Python value it stands for."""
    return value.item() if isinstance(value, np.generic) else value


def _line(row: int) -> str:
    return f"data row {row} (line {row + 1} counting the header)"


def infer_column(series: pd.Series, source: str, wanted: str | None = None,
                 date_format: str | None = None) -> ColumnSpec:
    """The spec of one column: its kind inferred unless `wanted` names it; refuses what cannot be modelled."""
    name, observed = str(series.name), series.dropna()
    if observed.empty:
        raise GanLabError(f"Column {name!r} of {source} is entirely empty: there is nothing to learn from it. "
                          f"Leave it out with data.ignore=[{name}].")
    dtype, date_format = _base_dtype(series, observed, source, wanted, date_format)
    spec = ColumnSpec(name, "discrete", dtype, str(series.dtype), datetime_format=date_format)
    if dtype == "category":
        spec.categories = [_python(c) for c in series.cat.categories]
    distinct = observed.nunique()
    if distinct == 1 and len(observed) == len(series):
        raise GanLabError(f"Column {name!r} of {source} is constant (every row is {_python(observed.iloc[0])!r}): a "
                          f"generator would learn nothing from it. Leave it out with data.ignore=[{name}].")
    if wanted is not None:
        spec.kind = wanted
    elif dtype in ("float", "datetime") or (dtype == "int" and distinct > FEW_INTEGERS):
        spec.kind = "continuous" if distinct > 1 else "discrete"  # one value and missing: a flag
    if spec.kind == "continuous":
        if dtype in ("bool", "str", "category"):
            raise GanLabError(f"Column {name!r} of {source} holds {dtype} values (e.g. "
                              f"{_python(observed.iloc[0])!r}), which cannot be continuous: drop it from "
                              f"data.continuous.")
        numbers = to_numbers(series, spec)
        spec.minimum, spec.maximum = float(np.nanmin(numbers)), float(np.nanmax(numbers))
        if dtype == "float":
            spec.decimals = _decimals(numbers[~np.isnan(numbers)])
        if dtype == "datetime":
            spec.datetime_unit = "D" if np.all(numbers[~np.isnan(numbers)] % 86400 == 0) else "s"
            timezone = getattr(getattr(series, "dt", None), "tz", None)
            spec.timezone = "UTC" if "%z" in (date_format or "") else None if timezone is None else str(timezone)
    elif dtype == "datetime" and spec.datetime_format is None:
        raise GanLabError(f"Column {name!r} of {source} holds dates, which gan-lab models as continuous: drop "
                          f"it from data.discrete.")
    elif wanted is None and dtype != "bool" and len(observed) >= ID_LIKE_MIN_ROWS \
            and distinct >= ID_LIKE_SHARE * len(observed):
        first, second = _python(observed.iloc[0]), _python(observed.iloc[1])
        raise GanLabError(f"Column {name!r} of {source} looks like an id: {distinct} distinct values in "
                          f"{len(observed)} rows (e.g. {first!r}, {second!r}), so a generator could only copy "
                          f"it. Leave it out with data.ignore=[{name}] (or, if it is a category after all, keep "
                          f"it with data.discrete=[{name}]).")
    return spec


def _base_dtype(series: pd.Series, observed: pd.Series, source: str, wanted: str | None,
                date_format: str | None) -> tuple[str, str | None]:
    """What the column's values are (float, int, bool, str, category, datetime) and a text date's format."""
    name = str(series.name)
    if isinstance(series.dtype, pd.CategoricalDtype):
        return "category", None
    if pd.api.types.is_bool_dtype(series.dtype) or observed.map(lambda v: isinstance(v, (bool, np.bool_))).all():
        return "bool", None
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return "datetime", None
    if pd.api.types.is_numeric_dtype(series.dtype):
        infinite = np.isinf(series.to_numpy(dtype=float, na_value=np.nan))
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0]) + 1
            raise GanLabError(f"Column {name!r} of {source} is infinite ({series.iloc[row - 1]}) on {_line(row)}: "
                              f"a generator cannot learn an infinite value. Replace it with an empty cell (a "
                              f"missing value, which gan-lab models) or a finite number.")
        values = observed.to_numpy(dtype=float)
        return ("int" if np.all(values == np.round(values)) else "float"), None
    text = observed.astype(str)
    numeric = pd.to_numeric(text, errors="coerce").notna().to_numpy()
    if numeric.any() and not numeric.all() and wanted != "discrete":
        rows = np.flatnonzero(numeric)[0], np.flatnonzero(~numeric)[0]
        raise GanLabError(f"Column {name!r} of {source} mixes numbers and text: {text.iloc[rows[0]]!r} and "
                          f"{text.iloc[rows[1]]!r} (on {_line(series.index.get_loc(text.index[rows[1]]) + 1)}). "
                          f"If its values are categories, say so with data.discrete=[{name}]; if they are "
                          f"numbers, fix the text ones (an empty cell is a missing value).")
    formats = [date_format] if date_format else [] if wanted == "discrete" else _date_formats(text)
    if not formats:
        return "str", None
    parsed = {f: pd.to_datetime(text, format=f, errors="coerce") for f in formats}
    best = max(formats, key=lambda f: parsed[f].notna().sum())  # the first that parses the most
    if parsed[best].isna().any():
        bad = text[parsed[best].isna()].iloc[0]
        raise GanLabError(f"Column {name!r} of {source} looks like dates in the format {best!r} (e.g. "
                          f"{text.iloc[0]!r}) but {bad!r} is not one. Fix that value, or model the column as "
                          f"categories with data.discrete=[{name}].")
    return "datetime", best


def _date_formats(text: pd.Series) -> list[str]:
    """Candidate strftime formats of a text column of dates, guessed from its first values (day or month
    first: 01/02/2020 is ambiguous until a 13 appears); empty when they are not dates."""
    formats: list[str] = []
    for value in text.iloc[:20]:
        for dayfirst in (False, True):
            with warnings.catch_warnings():  # pandas warns that a day-first guess was asked for: it was
                warnings.simplefilter("ignore", UserWarning)
                guess = guess_datetime_format(value, dayfirst=dayfirst)
            if guess and any(part in guess for part in _DATE_PARTS) and guess not in formats:
                formats.append(guess)
    return formats


def _decimals(values: np.ndarray) -> int | None:
    """The fewest decimals that write every value back unchanged (None: more than _MAX_DECIMALS)."""
    for decimals in range(_MAX_DECIMALS + 1):
        if np.allclose(values, np.round(values, decimals), rtol=1e-12, atol=0):
            return decimals
    return None


def to_numbers(series: pd.Series, spec: ColumnSpec) -> np.ndarray:
    """A continuous column as float64 numbers (dates: epoch seconds, UTC), NaN where missing."""
    if spec.dtype != "datetime":
        return series.to_numpy(dtype=float, na_value=np.nan)
    if not pd.api.types.is_datetime64_any_dtype(series.dtype):
        series = pd.to_datetime(series, format=spec.datetime_format, utc="%z" in (spec.datetime_format or ""))
    if getattr(series.dt, "tz", None) is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    nanoseconds = series.astype("datetime64[ns]").to_numpy().astype("int64").astype(float)
    nanoseconds[series.isna().to_numpy()] = np.nan
    return nanoseconds / 1e9


def from_numbers(numbers: np.ndarray, spec: ColumnSpec) -> pd.Series:
    """Generated numbers (NaN for missing) as the input had the column: clipped, rounded, typed."""
    values = np.clip(np.asarray(numbers, dtype=float), spec.minimum, spec.maximum)  # NaN stays NaN
    missing = np.isnan(values)
    if spec.dtype == "int":
        return pd.Series(np.round(values), name=spec.name).astype("Int64" if missing.any() else "int64")
    if spec.dtype == "float":
        return pd.Series(values if spec.decimals is None else np.round(values, spec.decimals), name=spec.name)
    step = 86400 if spec.datetime_unit == "D" else 1
    moments = pd.to_datetime(pd.Series(np.round(values / step) * step, name=spec.name), unit="s")
    if spec.timezone is not None:  # text with UTC offsets is written back in UTC (+0000): the same instants
        moments = moments.dt.tz_localize("UTC").dt.tz_convert(spec.timezone)
    if spec.datetime_format is None:
        return moments.astype(spec.pandas_dtype)  # the input's resolution (pandas 3 reads Parquet's as us)
    return _text(moments.dt.strftime(spec.datetime_format).astype(object).where(~missing, None), spec)


def categories_of(series: pd.Series) -> list[Any]:
    """A discrete column's observed values as plain Python values, sorted (missing left out)."""
    values = [_python(v) for v in series.dropna().unique()]
    if values and isinstance(values[0], float) and all(v == round(v) for v in values):
        values = [int(v) for v in values]  # integers pandas read as floats because of a missing value
    try:
        return sorted(values)
    except TypeError:  # mixed types a user declared discrete: order by text, still deterministic
        return sorted(values, key=lambda v: (type(v).__name__, str(v)))


def from_categories(values: list[Any], spec: ColumnSpec) -> pd.Series:
    """Generated categories (None for missing) as the input had the column, with its dtype."""
    series = pd.Series(values, name=spec.name, dtype=object)
    missing = bool(series.isna().any())
    if spec.dtype == "category":
        return pd.Series(pd.Categorical(values, categories=spec.categories), name=spec.name)
    if spec.dtype == "int":
        return series.astype("Int64" if missing else "int64")
    if spec.dtype == "bool":
        return series.astype("boolean" if missing else "bool")
    if spec.dtype == "float":
        return series.astype("float64")
    return _text(series, spec)


def _text(series: pd.Series, spec: ColumnSpec) -> pd.Series:
    """Text in the input's dtype: pandas 3 reads text as its str dtype (NaN for missing), pandas 2 as object."""
    return series if spec.pandas_dtype in ("object", "") else series.astype(spec.pandas_dtype)
