"""gan_lab.table: reading a user's table, inferring its column types, and refusing bad input in one paragraph."""

from __future__ import annotations

import builtins
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gan_lab.errors import GanLabError
from gan_lab.table import read_table
from gan_lab.table_columns import FEW_INTEGERS, from_categories, from_numbers, to_numbers


def mixed_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """A small mixed table with missing values in a numeric and a text column, and no accidental twins."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.integers(18, 90, n),                                    # many integers: continuous
        "rating": rng.integers(1, 6, n),                                   # five integers: discrete
        "income": np.round(rng.lognormal(10, 1, n), 2),                    # floats: continuous
        "joined": pd.date_range("2020-01-01", periods=n, freq="D").strftime("%d/%m/%Y"),  # day first
        "member": rng.random(n) < 0.3,                                     # booleans: discrete
        "city": rng.choice(["Oslo", "Lima", "Pune"], n),                   # text: discrete
    })
    frame.loc[::7, "income"] = np.nan
    frame.loc[3::9, "city"] = np.nan
    return frame


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path, **kwargs) -> str:
    """The one-paragraph message read_table gives for a bad file."""
    with pytest.raises(GanLabError) as error:
        read_table(path, **kwargs)
    message = str(error.value)
    assert "\n" not in message and message.endswith("."), message
    return message


def test_types_are_inferred_by_the_documented_rules(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    mixed_frame().to_csv(path, index=False)
    table = read_table(path)
    got = {c.name: (c.kind, c.dtype) for c in table.columns}
    assert got == {"age": ("continuous", "int"), "rating": ("discrete", "int"), "income": ("continuous", "float"),
                   "joined": ("continuous", "datetime"), "member": ("discrete", "bool"), "city": ("discrete", "str")}
    joined = table.columns[3]
    assert joined.datetime_format == "%d/%m/%Y" and joined.datetime_unit == "D"  # 13/01/2020 settles day first
    assert table.columns[2].decimals == 2 and table.columns[0].minimum == table.frame.age.min()


def test_integers_are_discrete_up_to_few_distinct_values(tmp_path: Path) -> None:
    n = 40
    frame = pd.DataFrame({"few": np.arange(n) % FEW_INTEGERS, "more": np.arange(n) % (FEW_INTEGERS + 1),
                          "x": np.linspace(0, 1, n)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    kinds = {c.name: c.kind for c in read_table(tmp_path / "t.csv").columns}
    assert kinds == {"few": "discrete", "more": "continuous", "x": "continuous"}


def test_overrides_and_ignore_by_name(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    mixed_frame().to_csv(path, index=False)
    table = read_table(path, discrete=["age"], continuous=["rating"], ignore=["city", "joined"])
    assert [c.name for c in table.columns] == ["age", "rating", "income", "member"]  # the file's order
    assert [c.kind for c in table.columns] == ["discrete", "continuous", "continuous", "discrete"]
    assert table.ignored == ["joined", "city"] and list(table.frame.columns) == ["age", "rating", "income", "member"]
    assert "'salary' (in data.discrete" in refused(path, discrete=["salary"])
    assert "'age' is in both" in refused(path, discrete=["age"], continuous=["age"])
    assert "cannot be continuous" in refused(path, continuous=["city"])


def test_sdv_metadata_is_read_as_sdv_writes_it(tmp_path: Path) -> None:
    frame = mixed_frame()
    frame.insert(0, "id", np.arange(len(frame)))
    frame["email"] = [f"u{i}@x.org" for i in range(len(frame))]
    frame.to_csv(tmp_path / "t.csv", index=False)
    meta = {"METADATA_SPEC_VERSION": "SINGLE_TABLE_V1", "primary_key": "id", "columns": {
        "id": {"sdtype": "id"}, "age": {"sdtype": "categorical"},
        "rating": {"sdtype": "numerical", "computer_representation": "Int64"},
        "income": {"sdtype": "numerical", "computer_representation": "Float"},
        "joined": {"sdtype": "datetime", "datetime_format": "%d/%m/%Y"}, "member": {"sdtype": "boolean"},
        "city": {"sdtype": "categorical"}, "email": {"sdtype": "email", "pii": True}}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    table = read_table(tmp_path / "t.csv", metadata=tmp_path / "meta.json")
    got = {c.name: (c.kind, c.dtype) for c in table.columns}
    assert got == {"age": ("discrete", "int"), "rating": ("continuous", "int"), "income": ("continuous", "float"),
                   "joined": ("continuous", "datetime"), "member": ("discrete", "bool"), "city": ("discrete", "str")}
    assert table.ignored == ["id", "email"]
    del meta["columns"]["city"]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert "'city' of the table is not in data.metadata" in refused(tmp_path / "t.csv", metadata=tmp_path / "meta.json")
    (tmp_path / "meta.json").write_text('{"tables": {}}')
    assert "is not SDV single-table metadata" in refused(tmp_path / "t.csv", metadata=tmp_path / "meta.json")


def test_tsv_gzip_and_parquet_read_as_the_csv_does(tmp_path: Path) -> None:
    frame = mixed_frame()
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    with gzip.open(tmp_path / "t.csv.gz", "wt", encoding="utf-8") as file:
        frame.to_csv(file, index=False)
    specs = [[c.to_dict() for c in read_table(tmp_path / name).columns] for name in ("t.csv", "t.tsv", "t.csv.gz")]
    assert specs[0] == specs[1] == specs[2]
    pytest.importorskip("pyarrow")
    frame.assign(joined=pd.to_datetime(frame.joined, format="%d/%m/%Y"),
                 city=frame.city.astype("category")).to_parquet(tmp_path / "t.parquet")
    table = read_table(tmp_path / "t.parquet")
    got = {c.name: (c.kind, c.dtype) for c in table.columns}
    assert got["joined"] == ("continuous", "datetime") and got["city"] == ("discrete", "category")
    assert table.columns[5].categories == ["Lima", "Oslo", "Pune"]


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow":
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    assert "pip install 'gan-lab[parquet]'" in refused(write(tmp_path, "", "t.parquet"))


def test_values_are_written_back_as_the_input_had_them(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    mixed_frame().to_csv(path, index=False)
    table = read_table(path)
    for spec in table.columns:
        column = table.frame[spec.name]
        if spec.kind == "continuous":
            back = from_numbers(to_numbers(column, spec), spec)
        else:
            back = from_categories([None if pd.isna(v) else v for v in column], spec)
        pd.testing.assert_series_equal(back, column, check_dtype=spec.name != "rating", check_names=False)
    spec = table.columns[0]  # age, an integer column: generated values rounded and kept in range
    assert from_numbers(np.array([17.2, 50.6, 1e9, np.nan]), spec).tolist() == [18, 51, 89, pd.NA]


def test_a_missing_file_and_an_unknown_format(tmp_path: Path) -> None:
    assert f"data.path={tmp_path / 'nope.csv'} does not exist" in refused(tmp_path / "nope.csv")
    assert "name a .csv, .tsv or .parquet" in refused(write(tmp_path, "a,b\n1,2\n", "t.xlsx"))


def test_no_header_one_column_empty_file_and_no_rows(tmp_path: Path) -> None:
    assert "looks like data, not a header (1.5, 2, 3)" in refused(write(tmp_path, "1.5,2,3\n4,5,6\n"))
    message = refused(write(tmp_path, "a;b\n1;2\n"))
    assert "has one column ('a;b')" in message and "separated by ';'" in message
    assert "is empty: no header row" in refused(write(tmp_path, ""))
    assert "has a header (a, b) but no rows" in refused(write(tmp_path, "a,b\n"))


def test_a_ragged_row_is_named_by_its_line(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "a,b\n1,x\n2,y\n3,z,extra\n4,w\n"))
    assert message.startswith("Line 4 of") and "has 3 fields where the header has 2" in message
    # pandas would make column a the index here, and fill the short row with a missing value
    message = refused(write(tmp_path, "a,b\n1,x,extra\n2,y\n"))
    assert message.startswith("Line 2 of") and "has 3 fields where the header has 2" in message
    message = refused(write(tmp_path, 'a,b\n1,"two\nlines"\n2\n3,z\n'))
    assert message.startswith("Line 4 of") and "has 1 field where the header has 2" in message


def test_an_empty_or_constant_column(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "a,b,c\n1,,x\n2,,y\n3,,x\n"))
    assert "Column 'b'" in message and "entirely empty" in message and "data.ignore=[b]" in message
    message = refused(write(tmp_path, "a,b,c\n1,7,x\n2,7,y\n3,7,x\n"))
    assert "Column 'b'" in message and "constant (every row is 7)" in message and "data.ignore=[b]" in message
    table = read_table(write(tmp_path, "a,b,c\n1,7,x\n2,,y\n3,7,x\n"))  # one value and missing: a flag
    assert (table.columns[1].kind, table.columns[1].dtype) == ("discrete", "int")


def test_a_mixed_column_shows_a_value_of_each_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b\n1,12\n2,7\n3,abc\n4,9\n")
    message = refused(path)
    assert "Column 'b'" in message and "'12' and 'abc'" in message and "line 4" in message
    assert "data.discrete=[b]" in message
    assert read_table(path, discrete=["b"]).columns[1].dtype == "str"


def test_an_id_like_column_suggests_ignoring_it(tmp_path: Path) -> None:
    rows = "".join(f"{i % 3},user{i}\n" for i in range(30))
    message = refused(write(tmp_path, "a,name\n" + rows))
    assert "'name'" in message and "looks like an id: 30 distinct values in 30 rows" in message
    assert "data.ignore=[name]" in message
    few = "".join(f"{i % 3},user{i % 20}\n" for i in range(30))  # 20 of 30: a category
    assert read_table(write(tmp_path, "a,name\n" + few)).columns[1].kind == "discrete"


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("a,b\n1,Oslo\n2,Malmö\n".encode("latin-1"))
    message = refused(path)
    assert "is not UTF-8 text: line 3, byte 7" in message and "Re-save it as UTF-8" in message


def test_an_infinite_value_names_its_row(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "a,b\n1,x\n2.5,y\ninf,x\n"))
    assert "Column 'a'" in message and "infinite (inf) on data row 3 (line 4" in message


def test_a_table_over_the_memory_budget_says_what_fits(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    mixed_frame(n=200).to_csv(path, index=False)
    table = read_table(path)
    need = table.encoded_bytes()
    # age, income (missing), joined: 13 numbers each at most; rating 5, member 2, city 3 + missing
    assert need == 200 * (3 * 13 + 5 + 2 + 4) * 4
    message = refused(path, memory_budget=need / 2 / 2**30)
    assert "over data.memory_budget" in message and "at this width 100 rows fit" in message
    assert "'age' (13)" in message
    assert read_table(path, memory_budget=need / 2**30).columns == table.columns
