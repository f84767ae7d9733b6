"""`assayfew app`: the launcher's command line and environment (streamlit itself is not started here)."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

import assayfew.cli.app as launcher
from assayfew.cli import typer_app as cli


@pytest.fixture
def launched(monkeypatch) -> list[dict]:
    calls: list[dict] = []

    def fake_run(cmd, env=None, check=False):
        calls.append({"cmd": cmd, "env": env})
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(subprocess, "run", fake_run)
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


def test_model_host_and_port_are_passed_on(launched, tmp_path):
    result = CliRunner().invoke(cli, ["app", "--host", "0.0.0.0", "--port", "9999", "--model", str(tmp_path)])
    assert result.exit_code == 0, result.output
    cmd, env = launched[0]["cmd"], launched[0]["env"]
    assert option(cmd, "--server.address") == "0.0.0.0" and option(cmd, "--server.port") == "9999"
    assert env["ASSAYFEW_MODEL_DIR"] == str(tmp_path.resolve())


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
