"""Small file helpers: atomic writes, output-path checks, JSON/TOML config files."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w


class OutputError(OSError):
    """An output that cannot be written; the message names the path and says why."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_output_file(path: Path) -> Path:
    """Fail early, before any computation, when `path` cannot be written as a file.

    Missing parent directories are created; a directory, a non-regular file (device, pipe) or an
    unwritable location is an OutputError.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name for the output")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise OutputError(f"{path}: exists and is not a regular file")
    _check_directory(path.parent, for_output=path)
    return path


def check_output_dir(path: Path) -> Path:
    """Fail early when `path` cannot be used as an output directory (it is created when missing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a directory")
    _check_directory(path, for_output=path)
    return path


def _check_directory(directory: Path, *, for_output: Path) -> None:
    """Create `directory` if missing and prove a file can be created in it (then removed)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{for_output}: {directory} exists and is not a directory") from None
    except OSError as exc:
        where = f"{directory} is not a directory" if isinstance(exc, NotADirectoryError) else \
            f"cannot create the directory {directory} ({_reason(exc)})"
        raise OutputError(f"{for_output}: {where}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".assayfew-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{for_output}: cannot write in {directory} ({_reason(exc)})") from None


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file in the same directory, then rename over `path`.

    A write that fails part-way (disk full, file-size limit) leaves any existing `path` untouched and
    raises OutputError naming `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({_reason(exc)})") from exc
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files: give the usual permissions
        os.replace(tmp, path)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({_reason(exc)}); nothing was changed there") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_csv(path: Path, frame: Any) -> None:
    """A pandas DataFrame as CSV (no index), atomically."""
    atomic_write(path, lambda p: frame.to_csv(p, index=False))


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n"))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _tomlable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _tomlable(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_tomlable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_toml(path: Path, data: dict) -> None:
    """TOML has no null: keys whose value is None are left out."""
    atomic_write(path, lambda p: p.write_text(tomli_w.dumps(_tomlable(data))))


def read_toml(path: Path) -> dict:
    import tomllib

    with open(path, "rb") as fh:
        return tomllib.load(fh)
