"""A procedural pose data set: real molecules rendered at random azimuths (`assayfew pose make-data`).

Design (the MR-MAML pose benchmark's shape and kind, made from data we have):
- Objects: distinct molecules with 18-40 heavy atoms from the shared SIMPD ChEMBL-32 Ki sets
  (`simpd_chembl32_ki/*.csv`, canonical SMILES; files read in name order until 4× the molecules needed are
  found), a seeded draw split into training and test objects.
- Canonical frame: one RDKit ETKDG conformer (seeded, heavy atoms kept), centred on its centroid and
  rotated onto its principal axes (largest spread first; each axis' sign chosen so the third moment along it is
  positive; the third axis is their cross product, so the frame is a rotation and never mirrors). Every
  object therefore has its own fixed orientation: a model can memorise the training objects' frames, which is
  what makes the tasks non-mutually-exclusive.
- A view: the molecule turned by the azimuth about its third principal axis (the normal of its main plane),
  seen by an orthographic camera 50° above that plane, drawn as 128×128 grayscale shaded spheres (0.6×
  van der Waals radii; grey level by element; Lambert shading with ambient light from a fixed direction) with a
  numpy z-buffer. Scale is fixed per object (its largest extent fits the image), so size never gives the
  angle away but the shape's turn, occlusion and shading do.
- Labels: y (objects, views, 1) = azimuth / 2π in [0, 1) (MR-MAML's last column; the benchmark scales ×10).
  Views draw their azimuths uniformly, seeded per object.
Output: DIR/train.npz, DIR/test.npz (x uint8 (objects, views, size²), y, names = the SMILES) and
DIR/data.json (the settings and molecules). Same seed and settings -> byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from assayfew.data import DataFormatError
from assayfew.io import write_json
from assayfew.paths import shared_data_dir
from assayfew.pose.data import save_pose_npz

__all__ = ["RenderConfig", "make_pose_data", "molecule_source", "canonical_coords", "render_view"]

SOURCE = "simpd_chembl32_ki"
#: (van der Waals radius in Å, grey level) by element; others: (1.8, 0.7)
_ELEMENTS = {"C": (1.70, 0.55), "N": (1.55, 0.85), "O": (1.52, 1.0), "S": (1.80, 0.75), "F": (1.47, 0.35),
             "Cl": (1.75, 0.4), "Br": (1.85, 0.3), "I": (1.98, 0.25), "P": (1.80, 0.65), "B": (1.92, 0.45)}
_LIGHT = np.array([-0.4, 0.5, 0.77])  # towards the light, camera frame (x right, y up, z to the viewer)
_LIGHT = _LIGHT / np.linalg.norm(_LIGHT)


@dataclass(frozen=True)
class RenderConfig:
    train_objects: int = 60
    test_objects: int = 15
    views: int = 50
    size: int = 128
    elevation_deg: float = 50.0
    radius_scale: float = 0.6
    min_atoms: int = 18
    max_atoms: int = 40
    seed: int = 0

    def check(self) -> None:
        if min(self.train_objects, self.test_objects, self.views) < 1 or self.size < 8:
            raise ValueError("make-data: objects and views must be >= 1 and images >= 8 pixels")


def molecule_source() -> Path:
    """The shared SIMPD folder, or FileNotFoundError saying it is missing."""
    folder = shared_data_dir() / SOURCE
    if not folder.is_dir() or not any(folder.glob("*.csv")):
        raise FileNotFoundError(f"make-data needs the shared molecules at {folder} (not found; set "
                                "ASSAYFEW_SHARED_DATA to the shared data folder)")
    return folder


def _candidates(folder: Path, cfg: RenderConfig, need: int) -> list[str]:
    """Distinct canonical SMILES of the right size, in a fixed order: the SIMPD files are read in name order
    until they hold 4× the molecules needed (or all are read)."""
    from rdkit import Chem

    out: list[str] = []
    seen: set[str] = set()
    for path in sorted(folder.glob("*.csv")):
        if len(out) >= 4 * need:
            break
        with open(path, newline="") as fh:
            smiles = sorted({row.get("canonical_smiles") or "" for row in csv.DictReader(fh)} - seen)
        for smi in smiles:
            seen.add(smi)
            mol = Chem.MolFromSmiles(smi, sanitize=False) if smi and "." not in smi else None
            if mol is not None and cfg.min_atoms <= mol.GetNumHeavyAtoms() <= cfg.max_atoms:
                out.append(smi)
    return out


def canonical_coords(smiles: str, seed: int) -> tuple[np.ndarray, list[str]] | None:
    """Heavy-atom coordinates (n, 3) in the molecule's principal-axis frame and the elements; None if RDKit
    cannot embed it."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed, params.numThreads = int(seed), 1
    if AllChem.EmbedMolecule(mol, params) != 0:
        return None
    mol = Chem.RemoveHs(mol)
    xyz = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
    xyz -= xyz.mean(0)
    _, vecs = np.linalg.eigh(xyz.T @ xyz)
    axes = vecs[:, ::-1].T.copy()  # rows: largest spread first
    for i in (0, 1):
        if np.sum((xyz @ axes[i]) ** 3) < 0:
            axes[i] = -axes[i]
    axes[2] = np.cross(axes[0], axes[1])
    return xyz @ axes.T, [a.GetSymbol() for a in mol.GetAtoms()]


def render_view(xyz: np.ndarray, radii: np.ndarray, grey: np.ndarray, azimuth: float, cfg: RenderConfig,
                scale: float) -> np.ndarray:
    """One (size, size) uint8 image of the canonical coordinates turned by `azimuth` (radians)."""
    c, s = np.cos(azimuth), np.sin(azimuth)
    a = xyz[:, 0] * c - xyz[:, 1] * s
    b = xyz[:, 0] * s + xyz[:, 1] * c
    el = np.radians(cfg.elevation_deg)
    u, v = a, b * np.sin(el) + xyz[:, 2] * np.cos(el)  # image right, image up
    depth = -b * np.cos(el) + xyz[:, 2] * np.sin(el)  # towards the viewer
    n = cfg.size
    half = (n - 1) / 2.0
    px, py, pz, pr = half + u * scale, half - v * scale, depth * scale, radii * scale
    zbuf = np.full((n, n), -np.inf)
    img = np.zeros((n, n))
    for i in np.argsort(depth):  # back to front; the z-buffer decides overlaps
        x0, x1 = max(int(px[i] - pr[i]), 0), min(int(px[i] + pr[i]) + 2, n)
        y0, y1 = max(int(py[i] - pr[i]), 0), min(int(py[i] + pr[i]) + 2, n)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = (np.arange(x0, x1) - px[i]) / pr[i]
        dy = (np.arange(y0, y1) - py[i]) / pr[i]
        r2 = dx[None, :] ** 2 + dy[:, None] ** 2
        inside = r2 < 1.0
        nz = np.sqrt(np.clip(1.0 - r2, 0.0, None))
        z = pz[i] + pr[i] * nz
        win = inside & (z > zbuf[y0:y1, x0:x1])
        normal_dot = dx[None, :] * _LIGHT[0] - dy[:, None] * _LIGHT[1] + nz * _LIGHT[2]  # surface normal · light
        shade = grey[i] * (0.25 + 0.75 * np.clip(normal_dot, 0.0, None))
        zbuf[y0:y1, x0:x1] = np.where(win, z, zbuf[y0:y1, x0:x1])
        img[y0:y1, x0:x1] = np.where(win, shade, img[y0:y1, x0:x1])
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def _render_object(smiles: str, index: int, cfg: RenderConfig) -> tuple[np.ndarray, np.ndarray] | None:
    seed = int.from_bytes(hashlib.sha256(f"{cfg.seed}:{smiles}".encode()).digest()[:3], "little")  # RDKit seeds are signed 32-bit
    got = canonical_coords(smiles, seed)
    if got is None:
        return None
    xyz, elements = got
    radii = np.array([_ELEMENTS.get(e, (1.8, 0.7))[0] for e in elements]) * cfg.radius_scale
    grey = np.array([_ELEMENTS.get(e, (1.8, 0.7))[1] for e in elements])
    extent = float(np.max(np.linalg.norm(xyz, axis=1) + radii))
    scale = ((cfg.size - 1) / 2.0 - 1.0) / extent
    angles = np.random.default_rng([cfg.seed, index]).random(cfg.views)
    images = np.stack([render_view(xyz, radii, grey, 2 * np.pi * t, cfg, scale) for t in angles])
    return images.reshape(cfg.views, -1), angles.astype(np.float32)


def make_pose_data(out: Path, cfg: RenderConfig, *, progress=None) -> dict:
    """Render the data set into `out` (train.npz, test.npz, data.json); returns data.json's content.
    `progress(done, total)` is called after each object."""
    cfg.check()
    folder = molecule_source()
    need = cfg.train_objects + cfg.test_objects
    pool = _candidates(folder, cfg, need)
    if len(pool) < need:
        raise DataFormatError(folder, None, None, f"only {len(pool)} usable molecules, {need} needed")
    order = np.random.default_rng([cfg.seed, 0]).permutation(len(pool))
    rendered: list[tuple[str, np.ndarray, np.ndarray]] = []
    for j in order:
        if len(rendered) == need:
            break
        got = _render_object(pool[j], len(rendered), cfg)
        if got is not None:
            rendered.append((pool[j], *got))
            if progress is not None:
                progress(len(rendered), need)
    if len(rendered) < need:
        raise DataFormatError(folder, None, None, f"only {len(rendered)} molecules could be embedded, {need} needed")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = {"train": rendered[:cfg.train_objects], "test": rendered[cfg.train_objects:]}
    for name, objs in parts.items():
        save_pose_npz(out / f"{name}.npz", np.stack([o[1] for o in objs]), np.stack([o[2] for o in objs])[..., None],
                      [o[0] for o in objs])
    info = {"format": "pose-npz", "source": f"{SOURCE} (shared data; canonical SMILES)", "settings": asdict(cfg),
            "labels": "y[..., -1] = azimuth / (2 pi), uniform per view; the benchmark scales it x10",
            "objects": {name: [o[0] for o in objs] for name, objs in parts.items()}}
    write_json(out / "data.json", info)
    return info

