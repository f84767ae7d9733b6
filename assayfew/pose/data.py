"""Pose data: objects × views of square grayscale images with each view's normalised azimuth.

The format is MR-MAML's (Yin et al., 2020): x (objects, views, H·W) uint8 and y (objects, views, k) whose
last column is the azimuth normalised to [0, 1) (or y (objects, views)). It is stored as `.npz` (loaded
with `allow_pickle=False`, written byte-identically for the same arrays). MR-MAML's published files are
pickles; `convert_pickle` reads them with an unpickler that admits numpy array reconstruction only.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assayfew.data import DataFormatError
from assayfew.io import atomic_write

__all__ = ["PoseSet", "load_pose", "save_pose_npz", "convert_pickle", "check_pose_arrays"]


def _error(where: object, problem: str) -> DataFormatError:
    return DataFormatError(where, None, None, problem)


@dataclass
class PoseSet:
    """images (objects, views, size·size) uint8; angles (objects, views) normalised azimuths; names: one per
    object (may be empty strings)."""

    images: np.ndarray
    angles: np.ndarray
    names: list[str]
    source: str

    @property
    def n_objects(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_views(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        return math.isqrt(self.images.shape[2])

    def subset(self, objects: np.ndarray) -> PoseSet:
        return PoseSet(self.images[objects], self.angles[objects], [self.names[i] for i in objects], self.source)


def check_pose_arrays(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (objects, views, size²), angles float32 (objects, views)) from MR-MAML-shaped x and y,
    or DataFormatError naming `where` and what is wrong."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1 or math.isqrt(x.shape[2]) ** 2 != x.shape[2]:
        raise _error(where, f"x has shape {x.shape}; expected (objects, views, H·W) with square "
                              "images, e.g. (objects, views, 16384) for 128×128")
    if not (np.issubdtype(x.dtype, np.integer) and (x.size == 0 or (x.min() >= 0 and x.max() <= 255))):
        raise _error(where, f"x must hold 8-bit grey levels (integers 0-255), not {x.dtype} values")
    if y.ndim == 3:
        if y.shape[2] < 1:
            raise _error(where, f"y has shape {y.shape}; its last column must be the azimuth")
        y = y[..., -1]
    if y.ndim != 2 or y.shape != x.shape[:2]:
        raise _error(where, f"y has shape {np.shape(y)}; expected (objects, views[, k]) = "
                              f"{x.shape[:2]} to match x")
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise _error(where, f"y must hold real angles, not {y.dtype} values")
    bad = np.argwhere(~np.isfinite(y))
    if bad.size:
        o, v = (int(i) for i in bad[0])
        raise _error(where, f"{len(bad)} angle(s) are NaN or infinite, first at object {o}, view {v}")
    return x.astype(np.uint8, copy=False), y.astype(np.float32)


def load_pose(path: Path) -> PoseSet:
    """A pose `.npz` (x, y[, names]); DataFormatError when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pose data file")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise _error(path, f"not a pose data file (no {' or '.join(missing)} array; "
                                      f"has {', '.join(z.files) or 'nothing'})")
            x, y = z["x"], z["y"]
            names = [str(n) for n in z["names"]] if "names" in z.files else []
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        if isinstance(exc, DataFormatError):
            raise
        raise _error(path, f"not a readable .npz pose data file ({exc})") from None
    images, angles = check_pose_arrays(x, y, str(path))
    if names and len(names) != len(images):
        raise _error(path, f"{len(names)} names for {len(images)} objects")
    return PoseSet(images, angles, names or [""] * len(images), str(path))


def save_pose_npz(path: Path, x: np.ndarray, y: np.ndarray, names: list[str] | None = None) -> None:
    """Write x, y (and names) as `.npz`: deflated members with a fixed timestamp, so the same arrays give the
    same bytes (numpy's savez stamps the current time)."""
    arrays = {"x": np.ascontiguousarray(x), "y": np.ascontiguousarray(y)}
    if names is not None:
        arrays["names"] = np.array(names, dtype=str)

    def write(p: Path) -> None:
        with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for key, arr in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, arr, allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                zf.writestr(info, buf.getvalue(), compresslevel=6)

    atomic_write(Path(path), write)


def _latin1_bytes(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it for an array's raw bytes: latin-1 text to bytes only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _error("pickle", f"refused: the pickle encodes bytes with {encoding!r}; only numpy arrays are admitted")
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals a pickled numpy array needs (numpy 1 and 2 module names; protocol 2's bytes)."""

    core = getattr(np, "_core", None) or np.core  # numpy 2 moved numpy.core to numpy._core
    reconstruct = core.multiarray._reconstruct
    frombuffer = core.numeric._frombuffer
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): _latin1_bytes}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only numpy array reconstruction; any other global is refused before it is looked up."""

    def __init__(self, fh, where: str) -> None:
        super().__init__(fh, encoding="latin1")  # Python 2 pickles of numpy arrays need latin1
        self.where, self.allowed = where, _numpy_globals()

    def find_class(self, module: str, name: str) -> object:
        hit = self.allowed.get((module, name))
        if hit is None:
            raise _error(self.where, f"refused: the pickle asks for {module}.{name}; only numpy arrays "
                                  "are admitted (nothing was run)")
        return hit

    def persistent_load(self, pid: object) -> object:
        raise _error(self.where, f"refused: the pickle uses persistent ids; only numpy arrays are admitted")


def _xy(obj: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    """x and y from an unpickled (x, y) pair or a dict with x and y."""
    if isinstance(obj, dict) and {"x", "y"} <= set(obj):
        x, y = obj["x"], obj["y"]
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = obj
    else:
        raise _error(where, f"expected a pickled (x, y) pair or a dict with x and y, got "
                              f"{type(obj).__name__}")
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray) or x.dtype == object or y.dtype == object:
        raise _error(where, f"x and y must be numeric numpy arrays")
    return x, y


def convert_pickle(pkl: Path, out: Path) -> PoseSet:
    """Read MR-MAML's pickled (x, y) with the restricted unpickler, check the arrays, write `out` (.npz)."""
    pkl = Path(pkl)
    try:
        with open(pkl, "rb") as fh:
            obj = _ArrayUnpickler(fh, str(pkl)).load()
    except DataFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise _error(pkl, f"not a readable pickle of numpy arrays ({exc})") from None
    x, y = _xy(obj, str(pkl))
    check_pose_arrays(x, y, str(pkl))
    save_pose_npz(out, x.astype(np.uint8), y)
    return load_pose(out)
