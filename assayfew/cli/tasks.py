"""`assayfew tasks`: read, validate and featurize corpora into a compact task cache."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from assayfew.bounds import MAX_FP_BITS, MAX_FP_RADIUS, MIN_FP_BITS, SEED_MAX
from assayfew.chem import FingerprintSpec
from assayfew.cli._common import FEATURE_BITS_HELP, fingerprint_spec
from assayfew.cli._common import fail as _fail
from assayfew.io import OutputError, check_output_dir, write_json
from assayfew.splits import Split, SplitError
from assayfew.tasks import TaskSet, build_taskset, taskset_summary

FORMATS = ("pqsar", "long", "dir", "fsmol")


def main(
    sources: Annotated[list[Path], typer.Argument(help="Corpus files/directories (several are concatenated).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Cache directory to write.")],
    fmt: Annotated[
        Optional[str], typer.Option("--format", "-f", help="pqsar | long | dir | fsmol (default: detect per source).")
    ] = None,
    split: Annotated[Optional[Path], typer.Option("--split", help="Split file to resolve (saved as split.json).")] = None,
    radius: Annotated[int, typer.Option(min=0, max=MAX_FP_RADIUS, help="Morgan radius.")] = 2,
    bits: Annotated[int, typer.Option(min=MIN_FP_BITS, max=MAX_FP_BITS, help="Fingerprint length.")] = 1024,
    feature_bits: Annotated[int, typer.Option(min=0, max=MAX_FP_BITS, help=FEATURE_BITS_HELP)] = 0,
    standardize: Annotated[bool, typer.Option(
        "--standardize/--no-standardize", help="Strip salts and neutralise (largest organic fragment) before "
                                               "featurizing; recorded in the cache and in models trained on it.")] = True,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Seed (validation draws of partial split files).")] = 0,
    fp_cache: Annotated[
        bool, typer.Option("--fp-cache/--no-fp-cache", help="Reuse cached fingerprints across runs.")
    ] = True,
) -> None:
    """Featurize and validate corpora; write the task cache, summary.json and config.json."""
    if fmt is not None and fmt not in FORMATS:
        raise _fail(f"unknown --format {fmt!r} (expected one of {', '.join(FORMATS)})")
    for source in sources:
        if not source.exists():
            raise _fail(f"{source}: no such file or directory")
    split_file: Split | None = None
    if split is not None:
        try:
            split_file = Split.load(split)
        except SplitError as exc:
            raise _fail(str(exc)) from None
    try:
        check_output_dir(out)
    except OutputError as exc:
        raise _fail(str(exc)) from None

    spec = fingerprint_spec(radius, bits, feature_bits)
    started = time.perf_counter()
    sets: list[TaskSet] = []
    per_source: list[dict[str, Any]] = []
    for source in sources:
        try:
            taskset, summary = build_taskset(source, fmt, spec=spec, standardize=standardize, cache=fp_cache)
        except (OSError, ValueError, UnicodeDecodeError) as exc:  # DataFormatError is a ValueError
            raise _fail(f"{source}: {exc}" if str(source) not in str(exc) else str(exc)) from None
        sets.append(taskset)
        per_source.append(summary)
    prefixes = _prefixes(sources, sets)
    for src, prefix in zip(sources, prefixes):
        if prefix:
            Console(stderr=True).print(f"note: assay ids of {src} collide with an earlier source; "
                                       f"they are prefixed {prefix + '/'!r}", highlight=False)
    try:
        taskset = sets[0] if len(sets) == 1 else TaskSet.concat(sets, prefixes=prefixes)
    except ValueError as exc:
        raise _fail(f"cannot combine the sources: {exc}") from None

    resolved: Split | None = None
    if split_file is not None:
        try:
            resolved = split_file.resolve(taskset.assay_ids, seed=seed)
        except SplitError as exc:
            raise _fail(f"{split}: {exc}") from None

    config = {
        "command": "tasks",
        "sources": [str(s) for s in sources],
        "format": fmt,
        "out": str(out),
        "spec": spec.to_dict(),
        "standardize": standardize,
        "seed": seed,
        "split": str(split) if split is not None else None,
        "fp_cache": fp_cache,
    }
    summary = taskset_summary(taskset)
    summary["rejected"] = [r for s in per_source for r in s["rejected"]]
    notes: Counter[str] = Counter()
    for s in per_source:
        for reason, count in s["notes"].items():
            notes[_reason_kind(reason)] += count
    summary["notes"] = dict(notes)
    summary["sources"] = [
        {"source": str(src), "prefix": prefix, **{k: s[k] for k in ("n_assays", "n_compounds", "n_measurements", "n_trn", "n_tst")},
         "n_rejected": len(s["rejected"])}
        for src, s, prefix in zip(sources, per_source, prefixes)
    ]
    if resolved is not None:
        summary["split"] = {
            "file": str(split),
            **{f"n_{side}": len(getattr(resolved, side)) for side in ("train", "val", "test")},
            "unknown": resolved.unknown,
            "unassigned": resolved.unassigned,
        }
    summary["config"] = config

    try:
        taskset.save(out)
        if resolved is not None:
            resolved.save(out / "split.json")
        elif (out / "split.json").exists():
            (out / "split.json").unlink()  # a stale split from an earlier run would mislead
        summary["seconds"] = round(time.perf_counter() - started, 2)
        write_json(out / "config.json", config)
        write_json(out / "summary.json", summary)
    except OSError as exc:
        raise _fail(f"{out}: cannot write the cache ({exc})") from None
    _print_summary(summary, out)


def _source_name(source: Path) -> str:
    name = source.name or str(source)
    for suffix in (".gz", ".csv", ".txt", ".tsv"):
        name = name.removesuffix(suffix)
    return name


def _prefixes(sources: list[Path], sets: list[TaskSet]) -> list[str]:
    """No prefix unless a source's assay ids collide with an earlier one's: then '<source name>'."""
    seen: set[str] = set()
    prefixes = []
    for source, taskset in zip(sources, sets):
        prefix = _source_name(source) if seen & set(taskset.assay_ids) else ""
        prefixes.append(prefix)
        seen.update(f"{prefix}/{a}" if prefix else a for a in taskset.assay_ids)
    return prefixes


def _reason_kind(reason: str) -> str:
    """Group per-row reasons: quoted details and row numbers are blanked."""
    return re.sub(r"\brow \d+", "row N", re.sub(r"'[^']*'", "'…'", reason))


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    console = Console()
    table = Table(title=f"Task cache {out}", show_footer=len(summary["sources"]) > 1)
    columns = ("n_assays", "n_compounds", "n_measurements", "n_trn", "n_tst", "n_rejected")
    table.add_column("source", footer="total")
    total = {**summary, "n_rejected": len(summary["rejected"])}
    for col in columns:
        table.add_column(col[2:], justify="right", footer=f"{total[col]:,}")
    for row in summary["sources"]:
        table.add_row(Path(row["source"]).name or row["source"], *(f"{row[c]:,}" for c in columns))
    console.print(table)
    if summary["notes"]:
        notes = Table(title="Notes (kept rows)")
        notes.add_column("reason")
        notes.add_column("rows", justify="right")
        for reason, count in sorted(summary["notes"].items(), key=lambda kv: -kv[1]):
            notes.add_row(reason, f"{count:,}")
        console.print(notes)
    if summary["rejected"]:
        reasons = Counter(r["reason"].split(":", 1)[0] for r in summary["rejected"])
        console.print(
            f"[yellow]{len(summary['rejected'])} rejected rows[/] (file/row/reason in summary.json): "
            + ", ".join(f"{r} ×{n}" for r, n in reasons.most_common(5))
        )
    if "split" in summary:
        s = summary["split"]
        console.print(f"split {s['file']}: train {s['n_train']}, val {s['n_val']}, test {s['n_test']}")
        if s["unknown"]:
            console.print(f"[yellow]{len(s['unknown'])} split ids not in the corpus[/]: {', '.join(s['unknown'][:10])}")
        if s["unassigned"]:
            console.print(f"{len(s['unassigned'])} corpus assays on no side: {', '.join(s['unassigned'][:10])}")
    console.print(f"wrote {out} in {summary['seconds']} s")


__all__ = ["main"]
