"""Training run directories: recognising an existing run, and clearing one that is replaced on purpose."""

from __future__ import annotations

import shutil
from pathlib import Path

#: What `train` (and `pretrain`) write into a run directory (config.toml and split.json are rewritten by every run).
RUN_ARTEFACTS = ("model", "state", "metrics.csv", "config.toml", "val_assays.json", "split.json",
                 "heads.safetensors")


def run_artefacts(run_dir: Path) -> list[str]:
    """The names of a training run's artefacts present in `run_dir` (empty: not a run)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return [name for name in RUN_ARTEFACTS[:3] if (run_dir / name).exists()]


def clear_run(run_dir: Path) -> None:
    """Remove a run's artefacts (only those `train` writes; anything else in the directory stays)."""
    for name in RUN_ARTEFACTS:
        path = Path(run_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
