"""The dashboard reads the same file formats as the CLI, shows the same messages and enforces its limits."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.cli.test_bad_input_catalogue_inputs import (assay, csv_bytes, nanomolar_in_p_column,
                                                       replicate_disagreeing, salt_and_parent, sdf_bytes, xlsx_bytes)

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP_FILE = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"
runner = CliRunner()


@pytest.fixture
def app(tiny_model_dir, monkeypatch) -> AppTest:
    monkeypatch.setenv("ASSAYFEW_MODEL_DIR", str(tiny_model_dir))
    at = AppTest.from_file(str(APP_FILE), default_timeout=60)
    at.run()
    return at


def cli_output(path: Path, model: Path) -> str:
    from assayfew.cli import typer_app

    res = runner.invoke(typer_app, ["predict", str(path), "--model", str(model), "--out", str(path) + ".out"])
    return " ".join(res.output.split())


def upload(app: AppTest, name: str, data: bytes) -> AppTest:
    return app.file_uploader(key="upload").upload(name, data, "application/octet-stream").run()


def shown(elements) -> list[str]:
    return [" ".join(e.value.split()) for e in elements]


@pytest.mark.parametrize("name, make", [
    ("h.csv", lambda p: b"smiles,pIC50\n"),
    ("broken.xlsx", lambda p: b"PK\x03\x04" + b"\x00junk" * 50),
    ("image.csv", lambda p: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff"),
    ("nm.csv", lambda p: csv_bytes(nanomolar_in_p_column())),
    ("few.csv", lambda p: b"smiles,pIC50\nCCO,5\nCCN,6\nCCC,\n"),
])
def test_bad_uploads_show_the_cli_message(app, tiny_model_dir, tmp_path, name, make):
    path = tmp_path / name
    path.write_bytes(make(path))
    upload(app, name, path.read_bytes())
    if not app.error:
        app.button(key="adapt").click().run()
    assert not app.exception
    errors = shown(app.error)
    assert len(errors) == 1
    message = errors[0].replace(name, str(path))  # the CLI names the path, the app the uploaded file
    assert f"error: {message}" in cli_output(path, tiny_model_dir), (message, cli_output(path, tiny_model_dir))


@pytest.mark.parametrize("name, make, n_notes, n_input_warnings", [
    ("assay.xlsx", lambda p: xlsx_bytes(assay(), p.with_name("tmp.xlsx")), 0, 0),
    ("mols.sdf.gz", lambda p: gzip.compress(sdf_bytes(assay())), 0, 0),
    ("assay.tsv", lambda p: csv_bytes(assay(), sep="\t"), 1, 0),
    ("latin1.csv", lambda p: csv_bytes(assay().assign(note="Müller")).decode().encode("latin-1"), 1, 0),
    ("dup.csv", lambda p: csv_bytes(replicate_disagreeing()), 0, 2),
])
def test_file_formats_match_the_cli(app, tiny_model_dir, tmp_path, name, make, n_notes, n_input_warnings):
    path = tmp_path / name
    path.write_bytes(make(path))
    upload(app, name, path.read_bytes())
    app.button(key="adapt").click().run()
    assert not app.exception and not app.error, shown(app.error)
    cli = cli_output(path, tiny_model_dir)
    expected = pd.read_csv(str(path) + ".out")
    frame = next(d.value for d in app.dataframe if "status" in d.value.columns and "prediction" in d.value.columns)
    assert len(frame) == len(expected)
    assert list(frame["status"]) == list(expected["status"])
    summary = [t for t in shown(app.caption) if t.startswith("rows:")]
    assert len(summary) == 1 and summary[0] in cli
    notes = [t for t in shown(app.info) if t.startswith(name)]
    assert len(notes) == n_notes
    for note in notes:
        assert f"note: {note.replace(name, str(path))}" in cli
    warnings = shown(app.warning)
    # the input's own warnings (replicates), plus the CV R² warning exactly when the CLI gives it too
    assert len([w for w in warnings if not w.startswith("cross-validated R²")]) == n_input_warnings
    assert len(warnings) == cli.count("warning: ")
    for warning in warnings:
        assert f"warning: {warning}" in cli


def test_row_limit_is_enforced_by_the_app(app):
    body = b"smiles,pIC50\n" + b"CCO,5\n" * 20_001
    upload(app, "many.csv", body)
    assert [e for e in shown(app.error) if "many.csv: more than the limit of 20,000 rows" in e]


def test_size_limit_is_enforced_by_the_app(app):
    body = b"smiles,pIC50,note\n" + b"CCO,5," + b"x" * 10_000_100 + b"\n"
    upload(app, "big.csv", body)
    assert [e for e in shown(app.error) if "big.csv: larger than the limit of 10 MB" in e]


def test_keeping_structures_as_given_matches_no_standardize(app, tiny_model_dir, tmp_path):
    path = tmp_path / "salt.csv"
    path.write_bytes(csv_bytes(salt_and_parent()))
    upload(app, "salt.csv", path.read_bytes())
    app.checkbox(key="no_standardize").check().run()
    app.button(key="adapt").click().run()
    assert not app.exception and not app.error
    from assayfew.cli import typer_app

    out = tmp_path / "cli.csv"
    res = runner.invoke(typer_app, ["predict", str(path), "--model", str(tiny_model_dir), "--out", str(out),
                                    "--no-standardize"])
    assert res.exit_code == 0, res.output
    frame = next(d.value for d in app.dataframe if "status" in d.value.columns and "prediction" in d.value.columns)
    expected = pd.read_csv(out)
    assert frame["prediction"].iloc[-1] == pytest.approx(expected["prediction"].iloc[-1], abs=1e-9)
    assert frame["prediction"].iloc[-1] != pytest.approx(frame["prediction"].iloc[-2], abs=1e-6)
