"""`assayfew predict`: adapt the model to your measured compounds and predict the rest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from assayfew.bounds import MAX_STEPS, SEED_MAX
from assayfew.cli._common import fail
from assayfew.io import check_output_file, write_csv
from assayfew.device import DEVICE_HELP, resolve_device
from assayfew.metrics import r2_pearson
from assayfew.predict import (InputError, PredictOptions, adapt_and_predict, example_assay, load_default_model,
                              ridge_baseline_r2)
from assayfew.userfiles import read_user_table
from assayfew.screen import LibraryFeatures, open_library
from assayfew.cli._library import score_with_progress

err = Console(stderr=True)


def main(
    input_csv: Annotated[Optional[Path], typer.Argument(
        metavar="INPUT", help="CSV/TSV, Excel .xlsx or SDF (.sdf, .sdf.gz) with structures and an activity "
                              "column; rows with an empty activity are predicted.")] = None,
    model: Annotated[Optional[Path], typer.Option(help="Model directory (default: the shipped model).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output CSV (default: standard output).")] = None,
    smiles_col: Annotated[Optional[str], typer.Option(help="SMILES column (auto-detected).")] = None,
    activity_col: Annotated[Optional[str], typer.Option(help="Activity column (auto-detected).")] = None,
    units: Annotated[str, typer.Option(help="Activity units: p (pIC50/pKi...), nM or uM.")] = "p",
    steps: Annotated[Optional[int], typer.Option(min=1, max=MAX_STEPS,
                                                 help="Gradient steps of adaptation (default: the model's).")] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX,
                                      help="Seed for the cross-validation draws.")] = 0,
    example: Annotated[bool, typer.Option("--example", help="Run on RDKit's bundled ChEMBL assay "
                                                            "CHEMBL2321810 (pIC50).")] = False,
    n_measured: Annotated[int, typer.Option(min=3, help="With --example: how many compounds count as measured.")] = 32,
    sep: Annotated[Optional[str], typer.Option(help="Column separator of a text INPUT: ',', ';' or 'tab' "
                                                    "(default: sniffed).")] = None,
    standardize: Annotated[Optional[bool], typer.Option(
        "--standardize/--no-standardize", help="Strip salts and neutralise (largest organic fragment) before "
                                               "featurizing; the output keeps your SMILES (default: as the model "
                                               "was trained; models without a record: standardise).")] = None,
    device: Annotated[str, typer.Option(help=f"{DEVICE_HELP}. One assay adapts in well under a second on "
                                             "the CPU, where CUDA start-up alone takes longer.")] = "cpu",
    library: Annotated[Optional[Path], typer.Option(help="Screening library to score instead of the assay's rows "
                                                         "(.smi, .csv, .tsv, .sdf; optionally .gz): adapts once "
                                                         "on the measured compounds, then streams the library.")
                       ] = None,
    library_smiles_col: Annotated[Optional[str], typer.Option(help="SMILES column of a --library CSV "
                                                                   "(auto-detected).")] = None,
) -> None:
    """Predict activities for the unmeasured compounds of one assay."""
    if out is not None:
        check_output_file(out)  # before the work, not after it
    try:
        target = resolve_device(device)
    except ValueError as exc:
        raise fail(str(exc)) from None
    screen: LibraryFeatures | None = None
    try:
        loaded = load_default_model(model).to(target)
        problems = None
        if example:
            table, truth = example_assay(n_measured=n_measured, seed=seed)
        elif input_csv is None:
            raise InputError("give an INPUT file, or --example")
        else:
            user = read_user_table(input_csv, sep=sep)
            for note in user.notes:
                err.print(f"note: {note}")
            table, truth, problems = user.table, None, user.problems
        if library is not None:  # featurising starts now, while the assay is adapted
            screen = LibraryFeatures(open_library(library, library_smiles_col), loaded.spec,
                                     standardize=loaded.standardize if standardize is None else standardize)
        with err.status("adapting…"):
            result = adapt_and_predict(table, loaded, smiles_col=smiles_col, activity_col=activity_col,
                                       units=units, input_problems=problems,
                                       options=PredictOptions(steps=steps, seed=seed, standardize=standardize))
    except BaseException as exc:
        if screen is not None:
            screen.close()
        if isinstance(exc, InputError):
            raise fail(str(exc)) from None
        raise

    if out is not None and screen is None:
        write_csv(out, result.table)
    err.print(escape(result.summary()))
    err.print(f"cross-validated R² on the measured compounds: {result.cv_r2:.3f}")
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if screen is not None:
        score_with_progress(result, screen, out, err)
        return
    if truth is not None:
        unmeasured = table["pIC50"].isna().to_numpy()
        r2 = r2_pearson(truth[unmeasured], result.table["prediction"].to_numpy()[unmeasured])
        ridge = ridge_baseline_r2(table, truth, loaded.spec)
        err.print(f"example CHEMBL2321810: R² of predictions vs true pIC50 on the {int(unmeasured.sum())} "
                  f"unmeasured compounds: [bold]{r2:.3f}[/bold] (ridge regression on the same "
                  f"{result.n_measured} measured compounds: {ridge:.3f})")
    if out is not None:
        err.print(f"wrote {out}")
    elif example:
        _print_top(result.table, truth)
    else:
        result.table.to_csv(sys.stdout, index=False)


def _print_top(table, truth, n: int = 10) -> None:
    """The example's best-predicted unmeasured compounds, next to their true values."""
    view = table.assign(true_pIC50=truth)
    view = view[view["pIC50"].isna() & view["status"].str.startswith("ok")].nlargest(n, "prediction")
    grid = Table(title=f"top {n} predicted (unmeasured) compounds")
    for col in ("compound_id", "prediction", "uncertainty", "in_domain", "true_pIC50"):
        grid.add_column(col)
    for _, row in view.iterrows():
        grid.add_row(str(row["compound_id"]), f"{row['prediction']:.2f}", f"{row['uncertainty']:.2f}",
                     str(bool(row["in_domain"])), f"{row['true_pIC50']:.2f}")
    Console().print(grid)
