"""assayfew dashboard: adapt the meta-trained model to one assay's measured compounds and rank the rest.

The app only parses input, calls `assayfew.predict` and presents the result; the model comes from
$ASSAYFEW_MODEL_DIR (set by `assayfew app --model DIR`), else the shipped model.
Run with `assayfew app` (or `streamlit run app/streamlit_app.py`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app_support import (MAX_BYTES, MAX_ROWS, UPLOAD_TYPES, candidates, cv_chart, guess_column,  # noqa: E402
                         histogram, parse_pasted, top_predicted)

from assayfew.device import resolve_device  # noqa: E402
from assayfew.paths import default_model_dir  # noqa: E402
from assayfew.predict import (ACTIVITY_COLUMNS, SMILES_COLUMNS, UNITS, InputError,  # noqa: E402
                              PredictionResult, PredictOptions, adapt_and_predict, example_assay,
                              load_default_model)
from assayfew.userfiles import UserTable, read_user_table  # noqa: E402

log = logging.getLogger("assayfew.app")
EXAMPLE_MEASURED = 32
UNIT_LABELS = {"p": "p-units (pIC50, pKi, …)", "nM": "nM", "uM": "µM"}
PASTE_PLACEHOLDER = "smiles,activity\nCCOc1ccccc1,6.2\nCCN(CC)C(=O)c1ccccc1,\n…"


def model_dir() -> Path:
    env = os.environ.get("ASSAYFEW_MODEL_DIR")
    return Path(env) if env else default_model_dir()


@st.cache_resource(show_spinner="Loading the model…")
def cached_model(path: str):
    # the device `assayfew app --device` chose (validated there); the CPU by default
    return load_default_model(Path(path)).to(resolve_device(os.environ.get("ASSAYFEW_DEVICE", "cpu")))


def set_table(user: UserTable, source: str) -> None:
    """Make `user`'s table the current input; forget earlier results."""
    state = st.session_state
    state.table, state.problems, state.notes, state.source = user.table, user.problems, user.notes, source
    state.table_id = state.get("table_id", 0) + 1
    state.result, state.error = None, None


def show_failure(message: str) -> None:
    st.session_state.result, st.session_state.error = None, message


def input_section() -> None:
    st.subheader("1 · Your assay")
    upload_tab, paste_tab, example_tab = st.tabs(["Upload a file", "Paste SMILES,value", "Built-in example"])
    with upload_tab:
        uploaded = st.file_uploader("CSV/TSV, Excel .xlsx or SDF with structures and an activity column "
                                    "(blank = unmeasured)", type=UPLOAD_TYPES, key="upload")
        if uploaded is not None and uploaded.file_id != st.session_state.get("upload_id"):
            st.session_state.upload_id = uploaded.file_id
            try:
                set_table(read_user_table(uploaded, max_rows=MAX_ROWS, max_bytes=MAX_BYTES), uploaded.name)
            except InputError as exc:
                show_failure(str(exc))
    with paste_tab:
        text = st.text_area("One compound per line: SMILES,value (leave the value empty to predict it)",
                            key="pasted", height=160, placeholder=PASTE_PLACEHOLDER)
        if st.button("Use pasted data", key="use_pasted"):
            try:
                set_table(parse_pasted(text), "pasted text")
            except InputError as exc:
                show_failure(str(exc))
    with example_tab:
        st.caption(f"RDKit's bundled ChEMBL assay CHEMBL2321810 (pIC50): {EXAMPLE_MEASURED} random compounds keep "
                   "their measured value (drawn with the seed under *Settings*), the rest are to be predicted.")
        if st.button("Load built-in example", key="load_example"):
            seed = int(st.session_state.get("seed", 0))
            table, _ = example_assay(EXAMPLE_MEASURED, seed=seed)
            set_table(UserTable(table=table, format="csv", problems=[""] * len(table)),
                      f"example CHEMBL2321810 (seed {seed})")
    with st.expander("Settings"):
        st.number_input("Seed (cross-validation and the example draw)", min_value=0, value=0, step=1,
                        key="seed")
        st.number_input("Adaptation steps (0 = the model's default)", min_value=0, max_value=200, value=0, step=1,
                        key="steps")
        st.checkbox("Keep structures as given (no salt stripping or neutralisation; like --no-standardize)",
                    key="no_standardize")


def mapping_section(table: pd.DataFrame) -> tuple[str | None, str | None, str]:
    """Column and unit choices; None where the user still has to choose."""
    state = st.session_state
    st.subheader("2 · Columns and units")
    st.caption(f"**{state.source}** — {len(table)} rows; columns: {', '.join(map(str, table.columns))}")
    for note in state.get("notes") or []:
        st.info(note)
    columns = [str(c) for c in table.columns]
    smiles_guess, smiles_note = guess_column(columns, SMILES_COLUMNS, "smiles")
    activity_guess, activity_note = guess_column(columns, ACTIVITY_COLUMNS, "activity")
    left, middle, right = st.columns(3)
    with left:
        smiles_col = st.selectbox("SMILES column", columns, index=smiles_guess, key=f"smiles_col_{state.table_id}",
                                  placeholder="choose the SMILES column")
        if smiles_note and smiles_col is None:
            st.caption(smiles_note)
    with middle:
        activity_col = st.selectbox("Activity column", columns, index=activity_guess,
                                    key=f"activity_col_{state.table_id}", placeholder="choose the activity column")
        if activity_note and activity_col is None:
            st.caption(activity_note)
    with right:
        units = st.selectbox("Activity units", UNITS, format_func=UNIT_LABELS.get, key="units")
    with st.expander("Preview of the input"):
        st.dataframe(table.head(100), hide_index=True, height=240)
    return smiles_col, activity_col, units


def run_prediction(table: pd.DataFrame, smiles_col: str, activity_col: str, units: str) -> None:
    state = st.session_state
    if smiles_col == activity_col:
        show_failure("the SMILES column and the activity column must differ")
        return
    bar = st.progress(0.0, text="loading the model")
    try:
        model = cached_model(str(model_dir()))
        options = PredictOptions(steps=int(state.get("steps", 0)) or None, seed=int(state.get("seed", 0)),
                                 standardize=False if state.get("no_standardize") else None)
        result = adapt_and_predict(
            table, model, smiles_col=smiles_col, activity_col=activity_col, units=units, options=options,
            input_problems=state.get("problems"),
            progress=lambda fraction, message: bar.progress(min(max(float(fraction), 0.0), 1.0), text=message))
    except InputError as exc:
        show_failure(str(exc))
    except Exception as exc:  # last resort: a short message, the traceback goes to the server log
        log.exception("prediction failed")
        show_failure(f"prediction failed unexpectedly ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    else:
        state.result, state.error = result, None
        state.csv_bytes = result.table.to_csv(index=False).encode()
    finally:
        bar.empty()


def format_value(value: float, units: str) -> str:
    return f"{value:.3f}" if units == "p" else f"{value:.4g} {units}"


def results_section(result: PredictionResult) -> None:
    st.subheader("3 · Results")
    st.caption(result.summary())
    for warning in result.warnings:
        st.warning(warning)
    if result.n_invalid:
        st.info(f"{result.n_invalid} row(s) have a structure that could not be used; "
                "their reason is in the status column.")
    cols = st.columns(4)
    cols[0].metric("Measured (support)", result.n_measured)
    cols[1].metric("Predicted", result.n_predicted)
    cols[2].metric("Invalid structures", result.n_invalid)
    cols[3].metric("Support CV R²", f"{result.cv_r2:.2f}")

    top = top_predicted(result, 12)
    if len(top):
        best = top.iloc[0]
        with st.container(key="top_prediction"):
            st.markdown(f"Top prediction: **{best['compound']}** "
                        f"<span id='top-value'>{format_value(float(best['prediction']), result.units)}</span>",
                        unsafe_allow_html=True)

    st.markdown("**All rows** (click a column header to sort)")
    st.dataframe(result.table, hide_index=True, key="results_table",
                 column_config={"prediction": st.column_config.NumberColumn(format="%.3f"),
                                "uncertainty": st.column_config.NumberColumn(
                                    format="%.3f", help="Standard deviation of the prediction error in log "
                                    "units: prediction ± 1.96 × uncertainty is a 95% interval (p-scale)"),
                                "cv_prediction": st.column_config.NumberColumn(format="%.3f")})
    st.download_button("Download predictions (CSV)", data=st.session_state.csv_bytes,
                       file_name="assayfew_predictions.csv", mime="text/csv", on_click="ignore", key="download")

    st.markdown("**Measure next** — ranked by upper confidence bound = predicted p-activity + κ · uncertainty "
                "(unmeasured valid compounds)")
    kappa = st.slider("κ (exploration)", min_value=0.0, max_value=3.0, value=1.0, step=0.1, key="kappa")
    ranking = candidates(result, kappa).head(25).reset_index(drop=True)
    ranking.insert(0, "rank", range(1, len(ranking) + 1))
    st.dataframe(ranking.drop(columns=["smiles"]), hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("prediction", "p_prediction", "uncertainty", "ucb")})

    if len(top):
        st.markdown("**Top predicted unmeasured compounds**")
        try:
            st.image(structure_grid(top, result.units))
        except Exception as exc:  # drawing is a nicety: never fail the page for it
            log.exception("drawing failed")
            st.info(f"structures could not be drawn ({type(exc).__name__})")

    left, right = st.columns(2)
    with left:
        st.altair_chart(cv_chart(result), width="stretch")
    with right:
        st.altair_chart(histogram(result), width="stretch")


def structure_grid(top: pd.DataFrame, units: str):
    from rdkit import Chem
    from rdkit.Chem import Draw

    mols = [Chem.MolFromSmiles(s) for s in top["smiles"]]
    legends = [f"{c}: {format_value(v, units)}" for c, v in zip(top["compound"], top["prediction"])]
    keep = [i for i, m in enumerate(mols) if m is not None]
    return Draw.MolsToGridImage([mols[i] for i in keep], molsPerRow=4, subImgSize=(260, 200),
                                legends=[legends[i] for i in keep])


def main() -> None:
    st.set_page_config(page_title="assayfew — few-shot activity prediction", layout="wide")
    st.title("assayfew")
    st.caption("Few-shot activity prediction: a meta-trained model adapts to your measured compounds and "
               "predicts the rest of the assay.")
    with st.sidebar:
        st.markdown(f"**Model:** `{model_dir()}`")
        st.caption("Override with `assayfew app --model DIR` (or $ASSAYFEW_MODEL_DIR).")
        st.caption(f"Limits: {MAX_BYTES // 1_000_000} MB per upload, {MAX_ROWS:,} rows.")

    input_section()
    state = st.session_state
    table = state.get("table")
    if table is not None:
        smiles_col, activity_col, units = mapping_section(table)
        ready = smiles_col is not None and activity_col is not None
        if st.button("Adapt and predict", type="primary", disabled=not ready, key="adapt"):
            run_prediction(table, smiles_col, activity_col, units)
    if state.get("error"):
        st.error(state.error)
    if state.get("result") is not None:
        results_section(state.result)


main()
