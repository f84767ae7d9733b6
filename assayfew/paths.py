"""Well-known locations: shared data, shipped assets, caches."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def shared_data_dir() -> Path:
    """The read-only development corpora (`../shared/data`, or $ASSAYFEW_SHARED_DATA)."""
    env = os.environ.get("ASSAYFEW_SHARED_DATA")
    return Path(env) if env else REPO_DIR.parent / "shared" / "data"


def assays_dir() -> Path:
    """Assay definitions shipped with the product (split files, examples)."""
    return REPO_DIR / "assays"


def default_model_dir() -> Path:
    """The shipped pre-trained model."""
    return REPO_DIR / "models" / "default"


def cache_dir() -> Path:
    """User cache ($ASSAYFEW_CACHE, else ~/.cache/assayfew)."""
    env = os.environ.get("ASSAYFEW_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "assayfew"


def rdkit_example_dir() -> Path:
    """RDKit's bundled real ChEMBL assay (CHEMBL2321810, pIC50) used as the embedded example."""
    from rdkit import RDConfig

    return Path(RDConfig.RDContribDir) / "FreeWilson" / "data"
