"""End to end: the real Streamlit server driven by Debian's Chromium agrees with `assayfew predict`."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from assayfew.cli import typer_app as cli
from assayfew.cli.app import app_file, streamlit_command
from assayfew.predict import example_assay

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SERVER_START_S = 60
RESULT_WAIT_MS = 90_000
TOP_PATTERN = re.compile(r"Top prediction:\s*(\S+)\s+(-?\d+\.\d+)")

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not answer on {url} within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def describe_difference(downloaded: bytes, cli_out: Path) -> str:
    """Where the app's download and the CLI's file differ (for a useful failure message)."""
    import io

    ours, theirs = pd.read_csv(io.BytesIO(downloaded)), pd.read_csv(cli_out)
    if ours.shape != theirs.shape or list(ours.columns) != list(theirs.columns):
        return f"shape/columns differ: {ours.shape} {list(ours.columns)} vs {theirs.shape} {list(theirs.columns)}"
    numeric = ours.select_dtypes("number").columns
    gaps = {c: float((ours[c] - theirs[c]).abs().max()) for c in numeric}
    return f"download differs from the CLI output; max abs difference per column: {gaps}"


@pytest.fixture
def server(tiny_model_dir, tmp_path):
    """The dashboard served on a free localhost port with the launcher's own command line."""
    port = free_port()
    env = dict(os.environ, ASSAYFEW_MODEL_DIR=str(tiny_model_dir))
    log = tmp_path / "streamlit.log"
    with log.open("w") as out:
        proc = subprocess.Popen(streamlit_command(app_file(), "127.0.0.1", port), env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_browser_upload_adapt_matches_cli(server, tiny_model_dir, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")

    table, _ = example_assay(32, seed=0)
    csv_path = tmp_path / "assay.csv"
    table.to_csv(csv_path, index=False)
    cli_out = tmp_path / "cli.csv"
    result = CliRunner().invoke(cli, ["predict", str(csv_path), "--model", str(tiny_model_dir), "--seed", "0",
                                      "--out", str(cli_out)])
    assert result.exit_code == 0, result.output
    expected = pd.read_csv(cli_out)
    unmeasured = expected[expected["pIC50"].isna()]
    best = unmeasured.loc[unmeasured["prediction"].idxmax()]

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(30_000)
            page.goto(server, wait_until="domcontentloaded")
            page.locator("input[type=file]").first.set_input_files(str(csv_path))
            adapt = page.get_by_role("button", name="Adapt and predict")
            adapt.wait_for(state="visible")
            adapt.click()
            top = page.locator(".st-key-top_prediction")
            sync_api.expect(top).to_contain_text(TOP_PATTERN, timeout=RESULT_WAIT_MS)
            page.locator("[data-testid='stDataFrame']:visible").first.wait_for(state="visible")
            match = TOP_PATTERN.search(top.inner_text())
            assert match, top.inner_text()
            assert match.group(1) == str(best["compound_id"])
            assert match.group(2) == f"{best['prediction']:.3f}"

            with page.expect_download(timeout=30_000) as info:
                page.get_by_test_id("stDownloadButton").locator("button").click()
            downloaded = Path(info.value.path()).read_bytes()
            assert downloaded == cli_out.read_bytes(), describe_difference(downloaded, cli_out)

            page.get_by_test_id("stImage").first.wait_for(state="visible")
            page.locator("[data-testid='stVegaLiteChart']").first.wait_for(state="visible")
            page.set_viewport_size({"width": 1400, "height": 3400})
            page.wait_for_timeout(1500)
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("ASSAYFEW_SCREENSHOT"):
                shutil.copyfile(shot, os.environ["ASSAYFEW_SCREENSHOT"])
        finally:
            browser.close()
