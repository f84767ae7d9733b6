"""Bad-input catalogue (issue 11, screening libraries): `assayfew predict ASSAY --library LIB --out OUT`.

Each row writes one bad (or borderline) library file, runs the command in process (typer's CliRunner) on the
outputs catalogue's tiny untrained model, and states the exit code, a phrase the one-line message must
contain (every error names the library file) and whether the output exists afterwards. An output that
existed before a failed run is left as it was.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from assayfew.cli import typer_app
from tests.cli.test_bad_input_catalogue_outputs import ACTIVITY, SMILES, tiny_model  # noqa: F401  (shared)

runner = CliRunner()

PREVIOUS = "previous results\n"


@dataclass
class Case:
    name: str
    library: str  # file name of the library (in the test's directory)
    make: Callable[[Path], None] | None  # writes the library file (None: it does not exist)
    exit_code: int
    message: str  # must appear in the output (a phrase of the one-line message)
    output: str  # "untouched" (a previous output is left as it was) or "written"
    args: tuple[str, ...] = ()


def text(content: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(content)


def raw(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


def gz(content: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with gzip.open(path, "wt") as handle:
            handle.write(content)
    return make


CASES = [
    Case("missing file", "lib.smi", None, 2, "lib.smi: file not found", "untouched"),
    Case("empty .smi", "lib.smi", text(""), 2, "lib.smi: empty file", "untouched"),
    Case("blank-lines-only .csv", "lib.csv", text("\n\n  \n"), 2, "lib.csv: empty file", "untouched"),
    Case("empty .sdf", "lib.sdf", text(""), 2, "lib.sdf: empty file", "untouched"),
    Case("csv without a SMILES column", "lib.csv", text("id,name\n1,a\n"), 2,
         "lib.csv: no library smiles column found", "untouched"),
    Case("the named SMILES column is missing", "lib.csv", text("structure,id\nCCO,1\n"), 2,
         "library smiles column 'smi' not found", "untouched", ("--library-smiles-col", "smi")),
    Case("csv header only", "lib.csv", text("smiles,id\n"), 2, "lib.csv: no compounds (only a header)", "untouched"),
    Case("a row with more fields than the header", "lib.csv", text("smiles,id\nCCO,1\nCCN,2,x\n"), 2,
         "lib.csv, line 3: 3 fields but the header has 2", "untouched"),
    Case("binary content", "lib.csv", raw(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe"), 2, "lib.csv, line 1: not a UTF-8 text file",
         "untouched"),
    Case("Latin-1 bytes past the header", "lib.csv", raw(b"smiles,name\nCCO,caf\xe9\n"), 2,
         "lib.csv, line 2: not a UTF-8 text file", "untouched"),
    Case("not gzip though named .gz", "lib.smi.gz", text("CCO a\n"), 2, "lib.smi.gz: not a readable gzip file",
         "untouched"),
    Case("a directory", "lib.csv", lambda path: path.mkdir(), 2, "lib.csv: is a directory", "untouched"),
    Case("unknown extension", "lib.xlsx", text("whatever"), 2, "lib.xlsx: unknown library format", "untouched"),
    Case("duplicate column names", "lib.csv", text("smiles,id,id\nCCO,1,2\n"), 2,
         "lib.csv: duplicate column name(s) in the header: id", "untouched"),
    Case("--out is a directory (refused before the work)", "lib.smi", text("CCO a\n"), 2,
         "is a directory; give a file name", "untouched",
         ("--out", "{root}")),
    # borderline inputs that must work: rows that cannot be scored are kept with a status
    Case("invalid and empty SMILES rows", "lib.smi", text("CCO a\nnot_a_smiles b\n  c\nC1CC d\n"), 0,
         "rows that could not be scored: 3", "written"),
    Case("gzipped csv with a quoted field", "lib.csv.gz", gz('smiles,note\nCCO,"a, b"\n'), 0,
         "1 compounds scored", "written"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_library(case: Case, tiny_model: Path, tmp_path: Path) -> None:
    assay = tmp_path / "assay.csv"
    pd.DataFrame({"smiles": SMILES, "pIC50": ACTIVITY}).to_csv(assay, index=False)
    library = tmp_path / case.library
    if case.make is not None:
        case.make(library)
    out = tmp_path / "scored.csv"
    out.write_text(PREVIOUS)
    args = [a.format(root=tmp_path) for a in case.args]  # a later --out replaces the first
    res = runner.invoke(typer_app, ["predict", str(assay), "--model", str(tiny_model), "--library", str(library),
                                    "--out", str(out), *args])
    output = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == case.exit_code, res.output
    assert case.message in output, res.output
    assert "Traceback" not in res.output
    if case.exit_code:
        assert output.count("error:") == 1  # one line, naming the file
        assert (str(tmp_path) if "--out" in case.args else library.name) in output
    if case.output == "untouched":
        assert out.read_text() == PREVIOUS
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left
    else:
        table = pd.read_csv(out)
        assert list(table.columns[-5:]) == ["prediction", "uncertainty", "similarity_to_support", "in_domain",
                                            "status"]
