"""Reading users' files: CSV dialects, encodings, Excel, SDF; every row kept, clear errors."""

import gzip
import io

import pandas as pd
import pytest

from assayfew.userfiles import InputError, read_user_table, sniff_delimiter

SDF_GOOD = """ethanol
     RDKit          2D

  3  2  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    1.2990    0.7500    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    2.5981   -0.0000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  2  3  1  0
M  END
>  <pIC50>
5.5

>  <note>
two
lines

$$$$
"""
# carbon with five bonds: parses, fails sanitisation
SDF_BAD = """bad
     RDKit          2D

  6  5  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    1.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
   -1.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    0.0000    1.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    0.0000   -1.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    0.5000    0.5000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  1  3  1  0
  1  4  1  0
  1  5  1  0
  1  6  1  0
M  END
>  <pIC50>
7.0

$$$$
"""


def test_csv_reader_keeps_text_and_rejects_ragged_rows(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("smiles,pIC50,note\nCCO,5.10,a\nCCN,,\n\nc1ccccc1,007,x\n")
    user = read_user_table(good)
    table = user.table
    assert user.format == "csv" and user.notes == [] and user.problems == ["", "", ""]
    assert len(table) == 3 and table.loc[2, "pIC50"] == "007" and pd.isna(table.loc[1, "pIC50"])
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("smiles,pIC50\nCCO,5.1,extra\n")
    with pytest.raises(InputError, match="line 2: 3 fields but the header has 2"):
        read_user_table(ragged)
    with pytest.raises(InputError, match="limit of 1 rows"):
        read_user_table(good, max_rows=1)
    dup = tmp_path / "dup.csv"
    dup.write_text("smiles,smiles\nC,C\n")
    with pytest.raises(InputError, match="duplicate column"):
        read_user_table(dup)


def test_header_only_and_empty_files_are_clear_errors(tmp_path):
    header_only = tmp_path / "h.csv"
    header_only.write_text("smiles,pIC50\n")
    with pytest.raises(InputError, match=r"h.csv: no data rows \(only a header line: smiles, pIC50\)"):
        read_user_table(header_only)
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty file"):
        read_user_table(empty)


@pytest.mark.parametrize("text, delimiter, kind", [
    ("smiles,pIC50\nCCO,5\n", ",", "csv"),
    ("smiles\tpIC50\nCCO\t5\n", "\t", "tsv"),
    ("id;smiles;pIC50\na;CCO;5,2\nb;CCN;6,1\n", ";", "semicolon"),
    ("smiles\nCCO\n", ",", "csv"),
])
def test_delimiter_is_sniffed(text, delimiter, kind):
    assert sniff_delimiter(text.splitlines()) == delimiter
    user = read_user_table(io.StringIO(text))
    assert user.format == kind
    assert user.table.columns[-1] in ("pIC50", "smiles") and len(user.table) == text.count("\n") - 1
    assert bool(user.notes) == (delimiter != ",")


def test_sep_forces_the_delimiter_and_is_checked():
    user = read_user_table(io.StringIO("smiles;pIC50\nCCO;5\n"), sep=",")
    assert list(user.table.columns) == ["smiles;pIC50"]
    with pytest.raises(InputError, match="unknown separator"):
        read_user_table(io.StringIO("a\n1\n"), sep="|")


def test_latin1_is_decoded_with_a_note(tmp_path):
    path = tmp_path / "l1.csv"
    path.write_bytes("smiles,pIC50,name\nCCO,5,Pérez µ\n".encode("latin-1"))
    user = read_user_table(path)
    assert user.table.loc[0, "name"] == "Pérez µ"
    assert len(user.notes) == 1 and "not UTF-8" in user.notes[0] and "Latin-1" in user.notes[0]


def test_binary_and_legacy_excel_are_named(tmp_path):
    png = tmp_path / "x.csv"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(InputError, match="binary file"):
        read_user_table(png)
    xls = tmp_path / "old.xls"
    xls.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100)
    with pytest.raises(InputError, match="legacy Excel .xls"):
        read_user_table(xls)


def test_excel_first_sheet_as_text(tmp_path):
    path = tmp_path / "assay.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        pd.DataFrame({"ID": [101, 102, 103], "smiles": ["CCO", "CCN", "CCC"], "pIC50": [5.5, None, 7]}).to_excel(
            writer, sheet_name="data", index=False)
        pd.DataFrame({"x": [1]}).to_excel(writer, sheet_name="other", index=False)
    user = read_user_table(path)
    assert user.format == "xlsx" and list(user.table.columns) == ["ID", "smiles", "pIC50"]
    assert user.table["ID"].tolist() == ["101", "102", "103"]
    assert user.table.loc[0, "pIC50"] == "5.5" and pd.isna(user.table.loc[1, "pIC50"])
    assert any("first of 2 sheets" in n for n in user.notes)


def test_damaged_xlsx_is_not_called_a_text_file(tmp_path):
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"PK\x03\x04" + b"garbage" * 10)
    with pytest.raises(InputError, match="not a readable Excel .xlsx file"):
        read_user_table(path)


def test_sdf_records_become_rows_and_bad_molecules_keep_theirs(tmp_path):
    path = tmp_path / "mols.sdf.gz"
    path.write_bytes(gzip.compress((SDF_GOOD + SDF_BAD + SDF_GOOD.replace("ethanol", "again")).encode()))
    user = read_user_table(path)
    table = user.table
    assert user.format == "sdf" and list(table.columns) == ["name", "smiles", "pIC50", "note"]
    assert table["name"].tolist() == ["ethanol", "bad", "again"]
    assert table.loc[0, "smiles"] == "CCO" and table.loc[0, "pIC50"] == "5.5" and table.loc[0, "note"] == "two\nlines"
    assert pd.isna(table.loc[1, "smiles"]) and table.loc[1, "pIC50"] == "7.0"
    assert user.problems[0] == "" and user.problems[1].startswith("invalid structure in SDF record 2: sanitization")


def test_sdf_is_recognised_by_content_without_its_suffix(tmp_path):
    path = tmp_path / "export.txt"
    path.write_text(SDF_GOOD)
    assert read_user_table(path).format == "sdf"
    assert read_user_table(io.StringIO(SDF_GOOD)).format == "sdf"
    not_sdf = tmp_path / "table.sdf"
    not_sdf.write_text("smiles,pIC50\nCCO,5\n")
    with pytest.raises(InputError, match="no molecules found in the SDF file"):
        read_user_table(not_sdf)


def test_size_limit_is_checked_before_reading(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("smiles,pIC50\n" + "CCO,5\n" * 100)
    with pytest.raises(InputError, match="larger than the limit of 100 bytes"):
        read_user_table(path, max_bytes=100)
    with pytest.raises(InputError, match="larger than the limit"):
        read_user_table(io.BytesIO(path.read_bytes()), max_bytes=100)
