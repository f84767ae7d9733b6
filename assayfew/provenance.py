"""Where a run came from: package version, git commit, data fingerprints."""

from __future__ import annotations

import hashlib
import subprocess

import numpy as np

from assayfew import __version__
from assayfew.paths import REPO_DIR


def git_commit() -> str:
    """The repository's HEAD commit (with '+dirty' when the tree has changes), or 'unknown'."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_DIR), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def array_digest(*arrays: np.ndarray) -> str:
    """A short SHA-256 over the arrays' bytes (a training-data fingerprint)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def stamp() -> dict:
    return {"package_version": __version__, "commit": git_commit()}
