"""Shared CLI plumbing: turning errors into clear one-line messages and an exit code.

Known failures (bad input, bad model, unwritable output, a full disk) print `error: <why>` and exit 2.
Anything else is a bug: it prints `internal error: <summary>; details in <log file>` and exits 1, with the
traceback in the log file, never on the terminal.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from assayfew.chem import FingerprintSpec
from assayfew.io import read_toml
from assayfew.paths import cache_dir

err = Console(stderr=True)

# The options that name an experiment's data (`assayfew.experiment.experiment_data`), shared by its commands.
GroupOption = Annotated[Optional[int], typer.Option(min=1, max=4, help="pQSAR drug group 1-4.")]
DataDirOption = Annotated[Optional[Path], typer.Option(help="Folder with the pQSAR SI files (default: "
                                                            "$ASSAYFEW_PQSAR_DIR, else ./pqsar).")]
CorpusOption = Annotated[Optional[list[Path]], typer.Option(help="Corpus or task cache (repeatable).")]
FormatOption = Annotated[Optional[str], typer.Option("--format", help="pqsar|long|dir|fsmol (auto).")]
SplitOption = Annotated[Optional[Path], typer.Option(help="Split file {train,val,test} for --corpus.")]

FEATURE_BITS_HELP = ("How many of the --bits columns (the last ones) hold an FCFP-like fingerprint (pharmacophoric "
                     "atom features, same radius); 0 = all ECFP-like.")

F = TypeVar("F", bound=Callable[..., Any])
# Typer's own exits and usage errors (its click may be vendored): click prints these itself.
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_PASS_THROUGH = (typer.Exit, typer.Abort, _CLICK_EXCEPTION, KeyboardInterrupt)


def fail(message: str) -> typer.Exit:
    """Print `error: message` (one line, no markup interpretation) and return the exit to raise."""
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(2)


def fingerprint_spec(radius: int, bits: int, feature_bits: int) -> FingerprintSpec:
    """The spec of --radius/--bits/--feature-bits, or a one-line error when they do not fit together."""
    try:
        return FingerprintSpec(radius=radius, bits=bits, feature_bits=feature_bits)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--feature-bits") from None


@contextmanager
def user_errors() -> Iterator[None]:
    """Report expected failures (bad paths, bad input) in one line, without a traceback."""
    try:
        yield
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise fail(str(exc.args[0] if exc.args else exc)) from None


def run_options(config: Path | None, out: Path, resume: bool, flags: dict[str, Any]) -> dict[str, Any]:
    """A training command's run options: the --config TOML (or, resuming without one, OUT/config.toml) with the
    flags that were given on top."""
    values: dict[str, Any] = read_toml(config) if config else {}
    if resume and (out / "config.toml").exists() and not config:
        values = read_toml(out / "config.toml")
    return values | {k: v for k, v in flags.items() if v is not None}


def _known_message(exc: BaseException) -> str | None:
    """The one-line message of an anticipated failure; None for a bug."""
    from assayfew.checkpoint import ModelError
    from assayfew.data import DataFormatError
    from assayfew.predict import InputError
    from assayfew.splits import SplitError

    if isinstance(exc, (ModelError, DataFormatError, InputError, SplitError)):
        return str(exc)
    if isinstance(exc, OSError):  # the environment: permissions, a full disk, a missing file
        if exc.filename is not None and exc.strerror:
            return f"{exc.filename}: {exc.strerror}"
        return str(exc)
    return None


def log_dir() -> Path:
    """Where internal-error reports go: $ASSAYFEW_CACHE/logs (default ~/.cache/assayfew/logs), else a temp dir."""
    for candidate in (cache_dir() / "logs", Path(tempfile.gettempdir()) / "assayfew-logs"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
        except OSError:
            continue
    return Path(tempfile.gettempdir())


def write_error_log(exc: BaseException) -> Path:
    """Write the traceback and the command line to a new log file; return its path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(dir=log_dir(), prefix=f"assayfew-error-{stamp}-", suffix=".log")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"command: {' '.join(sys.argv)}\n\n")
        fh.write("".join(traceback.format_exception(exc)))
    return Path(name)


def internal_error(exc: BaseException) -> typer.Exit:
    """Log the traceback of an unexpected failure and print one line pointing at the log."""
    summary = f"{type(exc).__name__}: {str(exc).splitlines()[0]}" if str(exc).strip() else type(exc).__name__
    try:
        where = f"details in {write_error_log(exc)}"
    except OSError as log_exc:
        where = f"no details saved ({log_exc})"
    err.print(f"[red]internal error:[/red] {escape(summary)}; {escape(where)}", soft_wrap=True)
    return typer.Exit(1)


def guarded(command: F) -> F:
    """Wrap a subcommand so that no exception reaches the user as a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except BrokenPipeError:  # the reader of our output went away (`| head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(1) from None
        except Exception as exc:  # noqa: BLE001 - this is the last line of defence
            message = _known_message(exc)
            if message is not None:
                raise fail(message) from None
            raise internal_error(exc) from None

    return wrapper  # type: ignore[return-value]
