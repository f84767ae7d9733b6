"""`assayfew app`: launch the Streamlit dashboard (bound to 127.0.0.1 unless told otherwise).

The launcher checks the port, then *becomes* the Streamlit server (`os.execve`): a signal sent to
`assayfew app` reaches the server itself, so stopping it leaves nothing running.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from assayfew.checkpoint import load_model
from assayfew.cli._common import err, fail
from assayfew.device import DEVICE_HELP, resolve_device
from assayfew.paths import REPO_DIR, default_model_dir

MAX_UPLOAD_MB = 10
#: the address the dashboard binds when --host is not given: 127.0.0.1 (this machine only) unless this
#: variable says otherwise (the Docker images set it to 0.0.0.0, so that a published port reaches the app)
HOST_ENV = "ASSAYFEW_APP_HOST"


def app_file() -> Path:
    return REPO_DIR / "app" / "streamlit_app.py"


def streamlit_command(script: Path, host: str, port: int) -> list[str]:
    """The `streamlit run` command line the launcher executes."""
    return [sys.executable, "-m", "streamlit", "run", str(script),
            "--server.address", host, "--server.port", str(port), "--server.headless", "true",
            "--server.maxUploadSize", str(MAX_UPLOAD_MB), "--browser.gatherUsageStats", "false"]


def bind_host(host: str | None, env: dict[str, str]) -> str:
    """--host, else $ASSAYFEW_APP_HOST, else 127.0.0.1."""
    return host or env.get(HOST_ENV) or "127.0.0.1"


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port (None when it can): tried by binding, then released."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve --host {host!r} ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no obstacle
        try:
            probe.bind(address)
        except OSError as exc:
            return f"cannot serve on {host}:{port} ({exc.strerror}); choose another --port"
    return None


def main(
    host: Annotated[Optional[str], typer.Option(help=f"Address to bind (default: ${HOST_ENV}, else 127.0.0.1: "
                                                     "this machine only).")] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 8501,
    model: Annotated[Optional[Path], typer.Option(help="Model directory (default: the shipped model).")] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
) -> None:
    """Open the dashboard: upload an assay, adapt the model, browse and download predictions."""
    script = app_file()
    if not script.is_file():
        raise fail(f"the dashboard is not installed: {script} is missing (run from a source checkout of assayfew)")
    env = dict(os.environ)
    host = bind_host(host, env)
    try:
        env["ASSAYFEW_DEVICE"] = str(resolve_device(device))
    except ValueError as exc:
        raise fail(str(exc)) from None
    if model is not None:
        if not model.is_dir():
            raise fail(f"model directory {model} not found")
        load_model(model)  # a damaged model is reported here, not after the browser opens
        env["ASSAYFEW_MODEL_DIR"] = str(model.resolve())
    elif "ASSAYFEW_MODEL_DIR" not in env and not default_model_dir().is_dir():
        err.print(f"[yellow]warning:[/yellow] no shipped model at {default_model_dir()}; pass --model DIR")
    problem = port_problem(host, port)
    if problem:
        raise fail(problem)
    err.print(f"assayfew dashboard on http://{host}:{port}  (Ctrl-C to stop)")
    command = streamlit_command(script, host, port)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)
