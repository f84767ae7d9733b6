"""`assayfew ensemble`: join trained models into one ensemble model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from assayfew.checkpoint import save_ensemble
from assayfew.cli._common import err, user_errors
from assayfew.io import check_output_dir


def main(
    members: Annotated[list[Path], typer.Argument(help="Model directories (a run's model/) to join.")],
    out: Annotated[Path, typer.Option(help="Ensemble model directory to write.")],
    fp_ridge_weight: Annotated[float, typer.Option(help="Blend weight of ridge regression on fingerprints "
                                                        "(0 = meta-model only).")] = 0.0,
    head: Annotated[str, typer.Option(help="Head fitted at adaptation: gd (inner-loop steps) or ridge.")] = "gd",
) -> None:
    """Average the predictions of several meta-trained models (each adapts to the assay on its own)."""
    check_output_dir(out)
    with user_errors():
        if head not in ("gd", "ridge"):
            raise ValueError(f"--head must be gd or ridge, not {head!r}")
        if not 0.0 <= fp_ridge_weight <= 1.0:
            raise ValueError("--fp-ridge-weight must be between 0 and 1")
        save_ensemble(members, out, prediction={"head": head, "fp_ridge_weight": fp_ridge_weight})
    err.print(f"wrote an ensemble of {len(members)} models to {out}")
