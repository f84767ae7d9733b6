"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from assayfew.paths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only development corpora; skips the test when they are absent."""
    path = shared_data_dir()
    if not (path / "README.md").exists():
        pytest.skip(f"shared data not found at {path} (set ASSAYFEW_SHARED_DATA)")
    return path
