"""Shared CLI plumbing: turning library errors into clear messages and an exit code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

err = Console(stderr=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Report expected failures (bad paths, bad input) in one line, without a traceback."""
    try:
        yield
    except (FileNotFoundError, ValueError, KeyError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        err.print(f"[red]error:[/red] {message}")
        raise typer.Exit(2) from None
