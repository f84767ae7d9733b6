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


def make_synthetic_taskset(n_assays: int = 12, bits: int = 256, n_per_assay: int = 60, seed: int = 0,
                           with_split: bool = False):
    """A small TaskSet whose labels are linear in the fingerprint bits (shared + assay-specific weights)."""
    import numpy as np

    from assayfew.chem import FingerprintSpec
    from assayfew.tasks import TaskSet

    rng = np.random.default_rng(seed)
    n_compounds = n_assays * n_per_assay
    fps = (rng.random((n_compounds, bits)) < 0.1).astype(np.uint8)
    shared = rng.normal(0, 1, bits)
    rows, values, split, offsets = [], [], [], [0]
    for a in range(n_assays):
        idx = rng.choice(n_compounds, n_per_assay, replace=False)
        w = shared + 0.5 * rng.normal(0, 1, bits)
        y = 6.0 + 0.4 * fps[idx] @ w + rng.normal(0, 0.1, n_per_assay)
        rows.append(idx)
        values.append(y)
        split.append(np.where(np.arange(n_per_assay) < n_per_assay // 2, 1, 2) if with_split
                     else np.zeros(n_per_assay))
        offsets.append(offsets[-1] + n_per_assay)
    return TaskSet(fingerprints=fps, assay_ids=[f"A{a}" for a in range(n_assays)], families=[""] * n_assays,
                   offsets=np.array(offsets), fp_rows=np.concatenate(rows), values=np.concatenate(values),
                   split=np.concatenate(split), censored=np.zeros(n_assays * n_per_assay, bool),
                   spec=FingerprintSpec(radius=2, bits=bits))


TINY_CONFIG = dict(epochs=2, iters=8, meta_batch=4, hidden=(32, 32), support_min=8, support_max=16,
                   query_min=8, query_max=16, val_max_assays=4, seed=0, device="cpu")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A small model meta-trained in a few seconds on synthetic 256-bit tasks (for predict/app tests)."""
    from assayfew.train import TrainConfig, train

    ts = make_synthetic_taskset()
    run = tmp_path_factory.mktemp("tiny_run")
    train(TrainConfig(**TINY_CONFIG), ts.subset(ts.assay_ids[:9]), ts.subset(ts.assay_ids[9:]), run)
    return run / "model"


def make_omniglot_zip(path: Path, n_classes: int = 6, per_class: int = 4, size: int = 35,
                      extra: dict[str, bytes] | None = None) -> Path:
    """A small zip in Omniglot's layout (<top>/<alphabet>/<character>/<drawing>.png, two alphabets): each
    character a different bar pattern on white, drawings jittered. `extra`: more members (name -> bytes)."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for c in range(n_classes):
            alphabet, char = f"Alpha{c % 2}", f"character{c:02d}"
            for d in range(per_class):
                img = np.full((size, size), 255, dtype=np.uint8)
                row = 3 + (c * 5) % (size - 8) + int(rng.integers(0, 2))
                img[row:row + 3, 4:size - 4] = 0  # one horizontal stroke per character
                img[4:size - 4, 3 + (c * 7) % (size - 8):6 + (c * 7) % (size - 8)] = 0  # one vertical stroke
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="PNG")
                zf.writestr(f"images_tiny/{alphabet}/{char}/{c:04d}_{d + 1:02d}.png", buf.getvalue())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path
