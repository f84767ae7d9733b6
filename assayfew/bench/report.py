"""The grid's Markdown report, made from the results CSV alone (a half-finished grid gives a partial report).

Per K: mean / median / #(R² > 0.3) per method over the test assays (each assay's R² averaged over the seeds
run; 95% bootstrap CIs over assays) as in the MetaMix paper's Table 2; paired comparisons with a reference
method (Wilcoxon signed-rank over assays, bootstrap CI of the mean difference); one table per study (mixing
strategies, layer sets, ...) and, for a study along one numeric axis (α, fixed λ), a PNG plot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from assayfew.bench.run import META_COLUMNS, RESULTS_FILE, SCORE_COLUMNS
from assayfew.io import atomic_write
from assayfew.metrics import summarize

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
N_BOOT = 2000


def load_results(path: Path) -> pd.DataFrame:
    """The results CSV (ValueError naming the file when a column is missing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results file (run `assayfew bench drug` into this directory first)")
    frame = pd.read_csv(path, dtype={"assay_id": str, "method": str, "studies": str, "cell": str},
                        keep_default_na=False, na_values={"r2": [""], "mse": [""]})
    missing = [c for c in META_COLUMNS + SCORE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a bench results file (missing column(s) {', '.join(missing)})")
    return frame


def axis_columns(frame: pd.DataFrame) -> list[str]:
    """The grid's axis fields: the columns between the fixed ones and the scores."""
    return [c for c in frame.columns if c not in META_COLUMNS + SCORE_COLUMNS]


def per_assay(frame: pd.DataFrame) -> pd.DataFrame:
    """R² per (method, k, assay), averaged over the seeds run; column `seeds` counts them."""
    grouped = frame.groupby(["method", "k", "assay_id"], sort=False)["r2"]
    return pd.concat([grouped.mean(), grouped.size().rename("seeds")], axis=1).reset_index()


def method_table(frame: pd.DataFrame, k: int, methods: list[str] | None = None) -> pd.DataFrame:
    """Table 2 at one K: per method, seeds, assays, mean (95% CI), median, #>0.3 of the seed-averaged R², and
    the standard deviation of the per-seed means."""
    scores = per_assay(frame[frame["k"] == k])
    rows = []
    for method in methods or list(dict.fromkeys(frame["method"])):
        values = scores.loc[scores["method"] == method, "r2"].to_numpy()
        if values.size == 0:
            continue
        s = summarize(values, n_boot=N_BOOT, seed=0)
        runs = frame[(frame["k"] == k) & (frame["method"] == method)]
        seed_means = runs.groupby("seed")["r2"].mean()
        rows.append({"method": method, "seeds": len(seed_means), "assays": s["n"], "mean": s["mean"],
                     "mean 95% CI": _ci(s["mean_ci"]), "seed sd": seed_means.std() if len(seed_means) > 1 else "",
                     "median": s["median"], "#>0.3": s["gt03"]})
    return pd.DataFrame(rows)


def paired_table(frame: pd.DataFrame, k: int, reference: str) -> pd.DataFrame:
    """Every other method against `reference` at one K, over the assays and seeds both ran (R² averaged per
    assay over the common seeds): mean difference (method − reference) with its paired bootstrap 95% CI,
    wins/losses, Wilcoxon signed-rank p (two-sided)."""
    from scipy.stats import wilcoxon

    at_k = frame[frame["k"] == k]
    ref = at_k[at_k["method"] == reference]
    rows = []
    for method in dict.fromkeys(at_k["method"]):
        if method == reference or ref.empty:
            continue
        both = at_k[at_k["method"] == method].merge(ref, on=["seed", "assay_id"], suffixes=("", "_ref"))
        if both.empty:
            continue
        per = both.groupby("assay_id")[["r2", "r2_ref"]].mean()
        diff = (per["r2"] - per["r2_ref"]).to_numpy()
        s = summarize(diff, n_boot=N_BOOT, seed=0)
        p = float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
        rows.append({"method": method, "seeds": both["seed"].nunique(), "assays": diff.size, "Δ mean": s["mean"],
                     "Δ 95% CI": _ci(s["mean_ci"]),
                     "better / worse": f"{int((diff > 0).sum())} / {int((diff < 0).sum())}", "Wilcoxon p": p})
    return pd.DataFrame(rows)


def _ci(bounds: list[float]) -> str:
    return f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


def _markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "_no results yet_\n"
    def cell(v: object, column: str) -> str:
        if isinstance(v, (float, np.floating)):
            return f"{v:.2g}" if column.endswith(" p") and v < 1e-3 else f"{v:.3f}"
        return str(v)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v, c) for v, c in zip(row, table.columns)) + " |"
              for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def studies(frame: pd.DataFrame) -> list[str]:
    """Study names in first-seen order (the baselines' own group excluded)."""
    names = [s for entry in frame.loc[frame["kind"] == "meta", "studies"] for s in str(entry).split(";") if s]
    return list(dict.fromkeys(names))


def study_axis(rows: pd.DataFrame, axes: list[str]) -> str | None:
    """The numeric axis a study varies along (the first of its varying axes when all are numeric and move
    together, as α and β in a joint axis); None otherwise."""
    varying = [a for a in axes if rows[a].astype(str).nunique() > 1]
    if not varying:
        return None
    numeric = {a: pd.to_numeric(rows[a], errors="coerce") for a in varying}
    text = {a: rows[a].astype(str) for a in varying}
    if any(numeric[a].notna().sum() < 2 or (numeric[a].isna() & (text[a] != "")).any() for a in varying):
        return None  # not a numeric axis (e.g. layer sets "1,2"); empty = not set (the Beta draw of λ)
    combos = rows[varying].astype(str).drop_duplicates()
    return varying[0] if len(combos) == rows[varying[0]].astype(str).nunique() else None


def plot_axis(frame: pd.DataFrame, axis: str, path: Path, title: str) -> None:
    """Mean R² (95% bootstrap CI) against a numeric axis, one line per K (rows with no numeric value left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    numeric = frame.assign(_x=pd.to_numeric(frame[axis], errors="coerce")).dropna(subset=["_x"])
    for k in sorted(numeric["k"].unique()):
        at_k = numeric[numeric["k"] == k]
        points = []
        for x, rows in at_k.groupby("_x"):
            s = summarize(per_assay(rows)["r2"].to_numpy(), n_boot=N_BOOT, seed=0)
            points.append((x, s["mean"], *s["mean_ci"]))
        xs, means, lo, hi = (np.array(v) for v in zip(*sorted(points)))
        ax.errorbar(xs, means, yerr=[means - lo, hi - means], marker="o", capsize=3, label=f"K = {k}")
    if len(numeric) and numeric["_x"].min() > 0 and numeric["_x"].max() >= 8 * numeric["_x"].min():
        ax.set_xscale("log")
    ax.set_xlabel(axis)
    ax.set_ylabel("mean R² over test assays")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def render(frame: pd.DataFrame, out: Path, reference: str | None = None) -> str:
    """The report's Markdown (plots written under out/plots)."""
    ks = sorted(int(k) for k in frame["k"].unique())
    axes = axis_columns(frame)
    cells = frame.drop_duplicates("cell")
    lines = ["# Benchmark report", "",
             f"Generated from `{RESULTS_FILE}` alone: {len(cells)} finished cell(s), "
             f"{frame['method'].nunique()} method(s), seeds {sorted(frame['seed'].unique().tolist())}, "
             f"K = {ks}, {frame['assay_id'].nunique()} test assay(s). Per assay, R² is the squared Pearson "
             "correlation on the query (TST) compounds, averaged over the seeds run; CIs are 95% bootstrap "
             f"intervals over assays ({N_BOOT} resamples).", ""]
    if frame.empty:
        return "\n".join(lines + ["_no finished cells yet_", ""])
    lines += ["## Methods (Table 2 style)", ""]
    for k in ks:
        lines += [f"### K = {k}", "", _markdown(method_table(frame, k))]
    lines += ["## Paired comparisons", ""]
    for k in ks:
        ref = reference if reference in set(frame.loc[frame["k"] == k, "method"]) else None
        if ref is None:
            table = method_table(frame, k)
            ref = str(table.sort_values("mean", ascending=False)["method"].iloc[0])
        lines += [f"### K = {k}: each method − {ref}", "",
                  "Over the assays and seeds both ran (per assay, R² averaged over the common seeds); Δ > 0: "
                  "the method beats the reference. Wilcoxon signed-rank, two-sided, on the per-assay "
                  "differences.", "", _markdown(paired_table(frame, k, ref))]
    meta = frame[frame["kind"] == "meta"]
    for study in studies(frame):
        rows = meta[meta["studies"].astype(str).str.split(";").apply(lambda names, s=study: s in names)]
        methods = list(dict.fromkeys(rows["method"]))
        varying = [a for a in axes if rows[a].astype(str).nunique() > 1]
        lines += [f"## Study: {study}", "", f"Axes varied: {', '.join(varying) or 'none (one config)'}.", ""]
        axis = study_axis(rows, axes)
        if axis is not None:
            name = f"{study}_{axis}.png".replace("/", "_")
            plot_axis(rows, axis, out / PLOTS_DIR / name, f"{study}: mean R² vs {axis}")
            lines += [f"![{study}: mean R² vs {axis}]({PLOTS_DIR}/{name})", ""]
        for k in ks:
            lines += [f"### K = {k}", "", _markdown(method_table(rows, k, methods))]
    lines += ["## Wall time per cell", "", _markdown(_wall_table(cells)),
              f"Total wall time of the finished cells: {cells['wall_s'].sum() / 60:.1f} min.", ""]
    return "\n".join(lines)


def _wall_table(cells: pd.DataFrame) -> pd.DataFrame:
    grouped = cells.groupby("method", sort=False)["wall_s"]
    return pd.DataFrame({"method": grouped.size().index, "cells": grouped.size().to_numpy(),
                         "median s": grouped.median().to_numpy(), "total s": grouped.sum().to_numpy()})


def write_report(out: Path, reference: str | None = None) -> Path:
    """Regenerate DIR/report.md (and DIR/plots/) from DIR/results.csv; returns the report's path."""
    out = Path(out)
    text = render(load_results(out / RESULTS_FILE), out, reference)
    atomic_write(out / REPORT_FILE, lambda p: p.write_text(text))
    return out / REPORT_FILE
