"""`assayfew app`: the launcher's command line and environment (streamlit itself is not started here)."""

from __future__ import annotations

import os
import socket

import pytest
from typer.testing import CliRunner

import assayfew.cli.app as launcher
from assayfew.cli import typer_app as cli
from assayfew.paths import default_model_dir


@pytest.fixture
def launched(monkeypatch) -> list[dict]:
    """Record the exec instead of replacing the test process; every port counts as free."""
    calls: list[dict] = []

    def fake_execve(path, cmd, env):
        calls.append({"cmd": cmd, "env": env})

    monkeypatch.setattr(os, "execve", fake_execve)
    monkeypatch.setattr(launcher, "port_problem", lambda host, port: None)
    return calls


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_defaults_bind_localhost_with_upload_limit(launched, monkeypatch):
    monkeypatch.delenv("ASSAYFEW_MODEL_DIR", raising=False)
    result = CliRunner().invoke(cli, ["app"])
    assert result.exit_code == 0, result.output
    cmd = launched[0]["cmd"]
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4] == str(launcher.app_file())
    assert option(cmd, "--server.address") == "127.0.0.1"
    assert option(cmd, "--server.port") == "8501"
    assert option(cmd, "--server.headless") == "true"
    assert option(cmd, "--server.maxUploadSize") == "10"
    assert option(cmd, "--browser.gatherUsageStats") == "false"
    assert "ASSAYFEW_MODEL_DIR" not in launched[0]["env"]


def test_model_host_and_port_are_passed_on(launched):
    model = default_model_dir()
    result = CliRunner().invoke(cli, ["app", "--host", "0.0.0.0", "--port", "9999", "--model", str(model)])
    assert result.exit_code == 0, result.output
    cmd, env = launched[0]["cmd"], launched[0]["env"]
    assert option(cmd, "--server.address") == "0.0.0.0" and option(cmd, "--server.port") == "9999"
    assert env["ASSAYFEW_MODEL_DIR"] == str(model.resolve())


def test_damaged_model_is_refused_before_launch(launched, tmp_path):
    (tmp_path / "config.json").write_text("{broken")
    result = CliRunner().invoke(cli, ["app", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "not a valid assayfew model" in result.output and not launched


def test_busy_port_is_refused_before_announcing_a_url(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert launcher.port_problem("127.0.0.1", port) is not None
        result = CliRunner().invoke(cli, ["app", "--port", str(port)])
    assert result.exit_code == 2 and "choose another --port" in result.output
    assert "http://" not in result.output and not calls
    assert launcher.port_problem("127.0.0.1", port) is None  # released


def test_missing_model_dir_or_app_file_is_a_clear_error(launched, tmp_path, monkeypatch):
    result = CliRunner().invoke(cli, ["app", "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "not found" in result.output and not launched
    monkeypatch.setattr(launcher, "app_file", lambda: tmp_path / "missing.py")
    result = CliRunner().invoke(cli, ["app"])
    assert result.exit_code == 2 and "missing" in result.output and not launched


def test_app_file_exists():
    assert launcher.app_file().is_file()


def test_registered_as_assayfew_app():
    result = CliRunner().invoke(cli, ["app", "--help"])
    assert result.exit_code == 0 and "--model" in result.output and "--port" in result.output
