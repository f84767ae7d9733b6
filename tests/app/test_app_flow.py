"""The Streamlit dashboard's flow, driven headlessly with AppTest (no browser)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from assayfew.checkpoint import load_model
from assayfew.predict import PredictOptions, adapt_and_predict, example_assay
from assayfew.userfiles import read_user_table

pytest.importorskip("streamlit")
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

APP_FILE = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"
TIMEOUT = 60


@pytest.fixture
def app(tiny_model_dir, monkeypatch) -> AppTest:
    monkeypatch.setenv("ASSAYFEW_MODEL_DIR", str(tiny_model_dir))
    at = AppTest.from_file(str(APP_FILE), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    return at


@pytest.fixture
def downloads(monkeypatch) -> list[bytes]:
    """Bytes handed to st.download_button (CSV media files), captured as the app registers them."""
    captured: list[bytes] = []
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):
        if mimetype == "text/csv":
            captured.append(bytes(path_or_data))
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    return captured


def results_frame(at: AppTest) -> pd.DataFrame:
    frames = [d.value for d in at.dataframe if "status" in d.value.columns and "prediction" in d.value.columns]
    assert len(frames) == 1, "expected exactly one results table"
    return frames[0]


def top_prediction_text(at: AppTest) -> str:
    texts = [m.value for m in at.markdown if m.value.startswith("Top prediction:")]
    assert len(texts) == 1
    return texts[0]


def test_example_flow_matches_library(app, tiny_model_dir, downloads):
    app.button(key="load_example").click().run()
    assert not app.exception and not app.error
    app.button(key="adapt").click().run()
    assert not app.exception
    assert not app.error, [e.value for e in app.error]

    table, _ = example_assay(32, seed=0)
    expected = adapt_and_predict(table, load_model(tiny_model_dir), options=PredictOptions(seed=0))
    shown = results_frame(app)
    assert len(shown) == len(table)
    assert list(shown.columns) == list(expected.table.columns)
    assert downloads and downloads[-1] == expected.table.to_csv(index=False).encode()

    unmeasured = expected.table[table["pIC50"].isna().to_numpy()]
    best = unmeasured.loc[unmeasured["prediction"].idxmax()]
    text = top_prediction_text(app)
    assert best["compound_id"] in text
    assert re.search(rf">{best['prediction']:.3f}<", text)
    assert [m.label for m in app.metric][:2] == ["Measured (support)", "Predicted"]
    assert app.metric[0].value == "32"


def test_uploaded_csv_with_other_seed_matches_library(app, tiny_model_dir, downloads, tmp_path):
    table, _ = example_assay(20, seed=3)
    path = tmp_path / "assay.csv"
    table.to_csv(path, index=False)
    app.file_uploader(key="upload").upload("assay.csv", path.read_bytes(), "text/csv").run()
    app.number_input(key="seed").set_value(5).run()
    app.button(key="adapt").click().run()
    assert not app.exception and not app.error

    expected = adapt_and_predict(read_user_table(path).table, load_model(tiny_model_dir), options=PredictOptions(seed=5))
    assert downloads[-1] == expected.table.to_csv(index=False).encode()
    assert len(results_frame(app)) == len(table)


def test_undetectable_columns_are_chosen_by_hand(app, tiny_model_dir, downloads):
    table, _ = example_assay(20, seed=1)
    csv = table.rename(columns={"smiles": "structure", "pIC50": "potency"}).to_csv(index=False).encode()
    app.file_uploader(key="upload").upload("odd.csv", csv, "text/csv").run()
    assert not app.exception and not app.error
    assert app.button(key="adapt").disabled
    smiles_box = next(s for s in app.selectbox if s.label == "SMILES column")
    activity_box = next(s for s in app.selectbox if s.label == "Activity column")
    assert smiles_box.value is None and activity_box.value is None
    smiles_box.set_value("structure").run()
    activity_box = next(s for s in app.selectbox if s.label == "Activity column")
    activity_box.set_value("potency").run()
    app.button(key="adapt").click().run()
    assert not app.exception and not app.error
    assert len(results_frame(app)) == len(table)


def test_kappa_changes_the_ranking_score(app):
    app.button(key="load_example").click().run()
    app.button(key="adapt").click().run()
    ranking = next(d.value for d in app.dataframe if "ucb" in d.value.columns)
    assert (ranking["ucb"] >= ranking["p_prediction"]).all()
    assert ranking["ucb"].is_monotonic_decreasing
    app.slider(key="kappa").set_value(0.0).run()
    ranking0 = next(d.value for d in app.dataframe if "ucb" in d.value.columns)
    assert ranking0["ucb"].tolist() == pytest.approx(ranking0["p_prediction"].tolist())


@pytest.mark.parametrize("pasted, message", [
    ("not_a_smiles,1\nalso bad,2\nCCO,\n", "need at least 3 measured"),
    ("CCO,1,2,3\nCC\n", "line 1: 4 fields"),
    ("smiles,activity\nCCO,1\n\"C,2\n", "not a readable CSV"),
    ("CCO,5\nCCN,5\nCCC,5\nCCCl,\n", "all 3 measured activities are equal"),
])
def test_bad_pasted_input_shows_an_error_not_a_traceback(app, pasted, message):
    app.text_area(key="pasted").input(pasted).run()
    app.button(key="use_pasted").click().run()
    if not app.error:
        app.button(key="adapt").click().run()
    assert not app.exception
    assert len(app.error) == 1 and message in app.error[0].value, [e.value for e in app.error]


def test_cells_pasted_from_a_spreadsheet_are_tab_separated(app):
    app.text_area(key="pasted").input("CCO\t5,1\nCCN\t6.2\nCCC\t7\nCCCl\t\n").run()
    app.button(key="use_pasted").click().run()
    assert not app.error and not app.info, [e.value for e in app.error]
    app.button(key="adapt").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    frame = results_frame(app)
    assert list(frame.columns[:2]) == ["smiles", "activity"] and len(frame) == 4
    assert (frame["status"] == "ok").all()


def test_missing_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ASSAYFEW_MODEL_DIR", str(tmp_path / "nowhere"))
    at = AppTest.from_file(str(APP_FILE), default_timeout=TIMEOUT)
    at.run()
    at.button(key="load_example").click().run()
    at.button(key="adapt").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "not a valid assayfew model: no such directory" in at.error[0].value
