"""The `assayfew` command line: thin subcommands over the library."""

from __future__ import annotations

import importlib

import typer

from assayfew.cli._common import guarded

typer_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

# Each subcommand lives in assayfew/cli/<module>.py and exposes `main`.
_COMMANDS = {
    "featurize": "featurize",
    "tasks": "tasks",
    "train": "train",
    "pretrain": "pretrain",
    "evaluate": "evaluate",
    "predict": "predict",
    "ensemble": "ensemble",
    "calibrate": "calibrate",
    "app": "app",
}

for _name, _module in _COMMANDS.items():
    try:
        _mod = importlib.import_module(f"assayfew.cli.{_module}")
    except ModuleNotFoundError as exc:  # subcommand not written yet
        if exc.name != f"assayfew.cli.{_module}":
            raise
        continue
    typer_app.command(_name)(guarded(_mod.main))

# Command groups: assayfew/cli/<module>.py exposes a Typer `app`.
_GROUPS = {"images": "images", "pose": "pose", "bench": "bench"}

for _name, _module in _GROUPS.items():
    typer_app.add_typer(importlib.import_module(f"assayfew.cli.{_module}").app, name=_name)


def main() -> None:
    """Console-script entry point."""
    typer_app()
