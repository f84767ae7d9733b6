"""Bad-input catalogue (issue 11, part a): outputs, model directories, run directories, numeric options.

Each row runs one command on one bad (or borderline) input and states the exit code, a phrase the
one-line message must contain, and what must (not) exist afterwards. Commands run in process through
typer's CliRunner on a tiny untrained model built here; only what needs a real process (a file-size
limit, a signal) runs as a subprocess.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from assayfew.checkpoint import build_learner_from_config, save_model
from assayfew.cli import typer_app

runner = CliRunner()

SMILES = ["CCO", "CCN", "CCCO", "c1ccccc1O", "c1ccccc1N", "CC(=O)O", "CCOC(=O)C", "c1ccncc1", "CCCCN", "OCCO"]
ACTIVITY = ["5.1", "6.2", "5.8", "7.0", "6.6", "4.9", "", "", "", ""]
TINY_CONFIG = {
    "format": "assayfew-model/1",
    "architecture": {"type": "mlp", "in_dim": 64, "hidden": [8, 8], "negative_slope": 0.01, "per_step_blocks": "last"},
    "fingerprint": {"radius": 2, "bits": 64},
    "label_scaling": {"mode": "center", "min_std": 0.5},
    "algorithm": {"name": "anil++", "inner_steps": 2, "inner_lr": 0.01,
                  "options": {"msl_epochs": 10, "first_order_epochs": 0}},
}


@dataclass
class Workspace:
    root: Path  # this test's scratch directory
    model: Path  # a valid tiny model (untrained weights)
    csv: Path  # 6 measured + 4 unmeasured compounds
    marker: Path  # a file that exists only if a planted pickle was ever executed


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "model"
    torch.manual_seed(0)
    save_model(path, build_learner_from_config(TINY_CONFIG), TINY_CONFIG)
    return path


@pytest.fixture
def ws(tmp_path, tiny_model) -> Workspace:
    shutil.copytree(tiny_model, tmp_path / "model")
    csv = tmp_path / "in.csv"
    pd.DataFrame({"compound_id": [f"c{i}" for i in range(len(SMILES))], "smiles": SMILES,
                  "pIC50": ACTIVITY}).to_csv(csv, index=False)
    return Workspace(root=tmp_path, model=tmp_path / "model", csv=csv, marker=tmp_path / "PICKLE_RAN")


# -- ways to damage a model directory ------------------------------------------------------------------------
def edit_config(change: Callable[[dict], None]) -> Callable[[Workspace], None]:
    def damage(ws: Workspace) -> None:
        config = json.loads((ws.model / "config.json").read_text())
        change(config)
        (ws.model / "config.json").write_text(json.dumps(config))
    return damage


def as_ensemble(members: list[str]) -> Callable[[Workspace], None]:
    """Turn the model directory into an ensemble whose config lists `members` (m0 is a valid copy)."""
    def damage(ws: Workspace) -> None:
        shutil.copytree(ws.model, ws.root / "m0_src")
        shutil.move(ws.root / "m0_src", ws.model / "m0")
        config = json.loads((ws.model / "config.json").read_text()) | {"members": members}
        (ws.model / "config.json").write_text(json.dumps(config))
        (ws.model / "weights.safetensors").unlink()
    return damage


def write_weights(make: Callable[[Workspace], bytes]) -> Callable[[Workspace], None]:
    def damage(ws: Workspace) -> None:
        (ws.model / "weights.safetensors").write_bytes(make(ws))
    return damage


class _Planted:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def tensors_with(change: Callable[[dict], None]) -> Callable[[Workspace], bytes]:
    def make(ws: Workspace) -> bytes:
        tensors = {k: v.clone() for k, v in load_file(str(ws.model / "weights.safetensors")).items()}
        change(tensors)
        save_file(tensors, str(ws.root / "w.safetensors"))
        return (ws.root / "w.safetensors").read_bytes()
    return make


def _nan_first(tensors: dict) -> None:
    key = sorted(tensors)[0]
    tensors[key].view(-1)[0] = float("nan")


def _shrink_first(tensors: dict) -> None:
    key = sorted(tensors)[0]
    tensors[key] = tensors[key][:1].clone()


def symlinked_member(ws: Workspace) -> None:
    outside = ws.root / "elsewhere"
    shutil.copytree(ws.model, outside)
    (ws.model / "m0").symlink_to(outside, target_is_directory=True)
    config = json.loads((ws.model / "config.json").read_text()) | {"members": ["m0"]}
    (ws.model / "config.json").write_text(json.dumps(config))


def hold_run(ws: Workspace) -> None:
    run = ws.root / "run"
    (run / "model").mkdir(parents=True)
    (run / "config.toml").write_text("seed = 0\n")
    (run / "metrics.csv").write_text("epoch\n0\n")


# -- the catalogue ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    args: Callable[[Workspace], list[str]]
    code: int
    message: str  # must appear in the output (whitespace and box borders normalised); "" = no check
    setup: Callable[[Workspace], None] | None = None
    out: str | None = None  # path (relative to the workspace) whose state is checked
    out_state: str = "absent"  # absent | written | unchanged
    not_in_output: tuple[str, ...] = ()


def predict(*extra: str, out: str = "pred.csv") -> Callable[[Workspace], list[str]]:
    return lambda ws: ["predict", str(ws.csv), "--model", str(ws.model), "--out", str(ws.root / out), *extra]


def command(*argv: str) -> Callable[[Workspace], list[str]]:
    return lambda ws: [a.replace("{root}", str(ws.root)).replace("{csv}", str(ws.csv)).replace("{model}", str(ws.model))
                       for a in argv]


INVALID_MODEL = "not a valid assayfew model"
WORK_DONE = ("measured:", "cross-validated")  # printed only after the computation

CASES = [
    # defect 1: outputs
    Case("predict_out_in_missing_directories_creates_them", predict(out="new/deeper/pred.csv"), 0, "wrote",
         out="new/deeper/pred.csv", out_state="written"),
    Case("predict_out_is_a_directory", predict(out="adir"), 2, "is a directory",
         setup=lambda ws: (ws.root / "adir").mkdir(), out="adir/pred.csv", not_in_output=WORK_DONE),
    Case("predict_out_below_a_regular_file", predict(out="in.csv/pred.csv"), 2, "is not a directory",
         out="in.csv/pred.csv", not_in_output=WORK_DONE),
    Case("featurize_out_without_npz_suffix_is_written_as_named",
         command("featurize", "{csv}", "--out", "{root}/fps", "--no-cache"), 0, "written to {root}/fps",
         out="fps", out_state="written"),
    Case("featurize_out_is_a_directory", command("featurize", "{csv}", "--out", "{root}", "--no-cache"), 2,
         "is a directory", out="fps.npz"),
    Case("evaluate_out_is_a_directory", command("evaluate", "--model", "{model}", "--out", "{root}"), 2,
         "is a directory"),
    Case("tasks_out_is_a_file", command("tasks", "{csv}", "--out", "{csv}"), 2, "exists and is not a directory",
         out="in.csv", out_state="unchanged"),
    Case("ensemble_out_is_a_file", command("ensemble", "{model}", "--out", "{csv}"), 2,
         "exists and is not a directory", out="in.csv", out_state="unchanged"),
    # defects 2 and 3: model directories
    Case("model_missing_directory", command("predict", "{csv}", "--model", "{root}/nomodel", "--out", "{root}/p.csv"),
         2, "nomodel: not a valid assayfew model: no such directory", out="p.csv"),
    Case("model_members_empty", predict(), 2, "members: [] should be non-empty",
         setup=edit_config(lambda c: c.update(members=[])), out="pred.csv"),
    Case("model_weights_nan", predict(), 2, "non-finite values",
         setup=write_weights(tensors_with(_nan_first)), out="pred.csv"),
    Case("model_weights_shape_mismatch", predict(), 2, "does not match config.json",
         setup=write_weights(tensors_with(_shrink_first)), out="pred.csv"),
    Case("model_weights_are_a_pickle", predict(), 2, "not a readable safetensors file",
         setup=write_weights(lambda ws: pickle.dumps(_Planted(ws.marker))), out="PICKLE_RAN"),
    Case("model_weights_truncated", predict(), 2, "not a readable safetensors file",
         setup=write_weights(lambda ws: (ws.model / "weights.safetensors").read_bytes()[:-40]), out="pred.csv"),
    Case("model_weights_empty", predict(), 2, "not a readable safetensors file",
         setup=write_weights(lambda ws: b""), out="pred.csv"),
    Case("model_config_invalid_json", predict(), 2, "config.json is not valid JSON",
         setup=lambda ws: (ws.model / "config.json").write_text('{"format": "assayfew-model/1",'), out="pred.csv"),
    Case("model_config_nan_literal", predict(), 2, "NaN is not allowed",
         setup=lambda ws: (ws.model / "config.json").write_text(
             (ws.model / "config.json").read_text().replace('"inner_lr": 0.01', '"inner_lr": NaN')), out="pred.csv"),
    Case("model_hidden_huge", predict(), 2, "architecture.hidden[0]: 100000000.0 is greater than the maximum",
         setup=edit_config(lambda c: c["architecture"].update(hidden=[1e8])), out="pred.csv"),
    Case("model_inner_steps_huge", predict(), 2, "algorithm.inner_steps",
         setup=edit_config(lambda c: c["algorithm"].update(inner_steps=1e9)), out="pred.csv"),
    Case("model_fingerprint_bits_huge", predict(), 2, "fingerprint.bits",
         setup=edit_config(lambda c: c["fingerprint"].update(bits=10**9)), out="pred.csv"),
    Case("model_feature_bits_fill_the_fingerprint", predict(), 2, "feature_bits must be in [0, bits)",
         setup=edit_config(lambda c: c["fingerprint"].update(feature_bits=c["fingerprint"]["bits"])), out="pred.csv"),
    Case("model_wrong_format_tag", predict(), 2, "format: expected 'assayfew-model/2' or 'assayfew-model/1'",
         setup=edit_config(lambda c: c.update(format="other/9")), out="pred.csv"),
    Case("model_uncertainty_calibration_absurd", predict(), 2, "uncertainty.intercept",
         setup=edit_config(lambda c: c.update(uncertainty={"intercept": 1e6})), out="pred.csv"),
    Case("calibrate_seeds_zero", command("calibrate", "--model", "{model}", "--corpus", "{csv}", "--split", "{csv}",
                                         "--seeds", "0"), 2, "--seeds"),
    Case("model_member_absolute_path", predict(), 2, "not a plain sub-directory name",
         setup=as_ensemble(["/etc"]), out="pred.csv"),
    Case("model_member_parent_escape", predict(), 2, "not a plain sub-directory name",
         setup=as_ensemble(["../model"]), out="pred.csv"),
    Case("model_member_symlink_outside", predict(), 2, "points outside the model directory",
         setup=symlinked_member, out="pred.csv"),
    Case("model_valid_ensemble_member_predicts", predict(), 0, "wrote", setup=as_ensemble(["m0"]),
         out="pred.csv", out_state="written"),
    Case("evaluate_with_damaged_model", command("evaluate", "--model", "{model}"), 2, INVALID_MODEL,
         setup=edit_config(lambda c: c.update(members=[]))),
    Case("ensemble_of_a_damaged_model", command("ensemble", "{model}", "--out", "{root}/ens"), 2, INVALID_MODEL,
         setup=write_weights(lambda ws: b"")),
    # defect 4: train refuses to replace a run
    Case("train_out_holds_a_run", command("train", "--corpus", "{csv}", "--out", "{root}/run"), 2, "--resume",
         setup=hold_run, out="run/metrics.csv", out_state="unchanged"),
    Case("train_resume_and_overwrite", command("train", "--out", "{root}/run", "--resume", "--overwrite"), 2,
         "contradict"),
    # defect 7: numeric options
    Case("predict_seed_negative", predict("--seed", "-1"), 2, "--seed", out="pred.csv"),
    Case("predict_steps_zero", predict("--steps", "0"), 2, "--steps", out="pred.csv"),
    Case("predict_steps_negative", predict("--steps", "-1"), 2, "--steps", out="pred.csv"),
    Case("predict_steps_beyond_bound", predict("--steps", "100000"), 2, "--steps", out="pred.csv"),
    Case("predict_n_measured_too_small", command("predict", "--example", "--n-measured", "1"), 2, "--n-measured"),
    Case("evaluate_support_k_zero", command("evaluate", "--model", "{model}", "--support-k", "0"), 2, "--support-k"),
    Case("evaluate_group_five", command("evaluate", "--model", "{model}", "--group", "5"), 2, "--group"),
    Case("train_seed_negative", command("train", "--out", "{root}/r", "--seed", "-1"), 2, "seed must be ≥ 0",
         out="r"),
    Case("train_inner_steps_huge", command("train", "--out", "{root}/r", "--inner-steps", "1000000000"), 2,
         "inner_steps must be ≥ 1 and ≤ 200", out="r"),
    Case("train_hidden_zero", command("train", "--out", "{root}/r", "--hidden", "0,8"), 2, "hidden width", out="r"),
    Case("train_mixing_layer_beyond_the_network", command("train", "--out", "{root}/r", "--layers", "1,5"), 2,
         "mixing layer must be ≥ 0 and ≤ 2, not 5", out="r"),
    Case("train_inner_lr_zero", command("train", "--out", "{root}/r", "--inner-lr", "0"), 2, "inner_lr must be > 0",
         out="r"),
    Case("featurize_bits_huge", command("featurize", "{csv}", "--out", "{root}/f.npz", "--bits", "1000000000"), 2,
         "--bits", out="f.npz"),
    Case("tasks_seed_negative", command("tasks", "{csv}", "--out", "{root}/cache", "--seed", "-1"), 2, "--seed",
         out="cache"),
    # defect 8 (featurize): the column is blamed only when it is the column's fault
    Case("featurize_utf16_file", command("featurize", "{root}/utf16.csv", "--out", "{root}/f.npz"), 2,
         "not a readable CSV", setup=lambda ws: (ws.root / "utf16.csv").write_bytes("smiles,name\nCCO,caf\xe9\n"
                                                                                    .encode("utf-16")),
         out="f.npz", not_in_output=("--smiles-col",)),
    Case("featurize_empty_file", command("featurize", "{root}/empty.csv", "--out", "{root}/f.npz"), 2,
         "not a readable CSV", setup=lambda ws: (ws.root / "empty.csv").write_text(""), out="f.npz",
         not_in_output=("--smiles-col",)),
    Case("featurize_missing_column_names_the_option", command("featurize", "{csv}", "--out", "{root}/f.npz",
                                                              "--smiles-col", "structure"), 2, "--smiles-col",
         out="f.npz"),
    Case("featurize_input_is_a_directory", command("featurize", "{root}", "--out", "{root}/f.npz"), 2,
         "is a directory, not a CSV file", out="f.npz"),
    # already right before issue 11; kept so they stay right
    Case("predict_missing_input_file", command("predict", "{root}/none.csv", "--model", "{model}"), 2, "none.csv"),
    Case("predict_happy_path", predict(), 0, "wrote", out="pred.csv", out_state="written"),
]


def flat(text: str) -> str:
    """Output with rich's box borders and all line wrapping removed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_catalogue(case: Case, ws: Workspace) -> None:
    if case.setup:
        case.setup(ws)
    target = ws.root / case.out if case.out else None
    before = target.read_bytes() if target is not None and target.is_file() else None
    result = runner.invoke(typer_app, case.args(ws))
    output = flat(result.output)
    assert result.exit_code == case.code, result.output
    assert flat(case.message.replace("{root}", str(ws.root))) in output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    if errors:  # our own messages: exactly one line, never wrapped
        assert len(errors) == 1 and case.message.replace("{root}", str(ws.root)) in errors[0], result.output
    assert "Traceback" not in result.output and "internal error" not in output
    for phrase in case.not_in_output:
        assert phrase not in output, result.output
    if target is not None:
        if case.out_state == "absent":
            assert not target.exists()
        elif case.out_state == "unchanged":
            assert target.read_bytes() == before
        else:
            assert target.is_file() and target.stat().st_size > 0
    assert not ws.marker.exists()  # no pickle was ever executed
    assert not list(ws.root.rglob(".*.tmp"))  # no temporary file left behind


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 22 and len({c.name for c in CASES}) == len(CASES)


def test_written_outputs_are_what_they_claim(ws: Workspace) -> None:
    """The npz written without a suffix and the predictions CSV are complete and readable."""
    featurize = command("featurize", "{csv}", "--out", "{root}/fps", "--no-cache")
    assert runner.invoke(typer_app, featurize(ws)).exit_code == 0
    with np.load(ws.root / "fps", allow_pickle=False) as data:
        assert data["smiles"].tolist() == SMILES and data["fingerprints"].shape == (len(SMILES), 1024)
    assert runner.invoke(typer_app, predict()(ws)).exit_code == 0
    table = pd.read_csv(ws.root / "pred.csv")
    assert len(table) == len(SMILES) and np.isfinite(table["prediction"]).all()


def test_unexpected_errors_are_logged_not_printed(ws: Workspace, monkeypatch) -> None:
    monkeypatch.setenv("ASSAYFEW_CACHE", str(ws.root / "cache"))

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setattr("assayfew.cli.featurize.featurize_smiles", broken)
    result = runner.invoke(typer_app, ["featurize", str(ws.csv), "--out", str(ws.root / "f.npz"), "--no-cache"])
    assert result.exit_code == 1
    output = flat(result.output)
    assert "internal error: RuntimeError: simulated bug; details in" in output and "Traceback" not in output
    logs = list((ws.root / "cache" / "logs").glob("assayfew-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in output
    text = logs[0].read_text()
    assert "Traceback" in text and "simulated bug" in text and "featurize" in text
    assert not (ws.root / "f.npz").exists()


def test_train_refuses_a_run_unless_resumed_or_overwritten(ws: Workspace) -> None:
    from assayfew.splits import Split
    from tests.conftest import make_synthetic_taskset

    taskset = make_synthetic_taskset(n_assays=8, bits=64, n_per_assay=40, with_split=True)
    taskset.save(ws.root / "cache")
    ids = taskset.assay_ids
    Split(train=ids[:5], val=ids[5:7], test=ids[7:]).save(ws.root / "split.json")
    run = ws.root / "run"
    args = ["train", "--corpus", str(ws.root / "cache"), "--split", str(ws.root / "split.json"), "--out", str(run),
            "--iters", "3", "--meta-batch", "2", "--hidden", "8,8", "--device", "cpu"]
    assert runner.invoke(typer_app, args + ["--epochs", "2"]).exit_code == 0
    (run / "notes.txt").write_text("mine")
    metrics = (run / "metrics.csv").read_bytes()
    weights = (run / "model" / "weights.safetensors").read_bytes()
    refused = runner.invoke(typer_app, args + ["--epochs", "1"])
    assert refused.exit_code == 2 and "--resume" in flat(refused.output) and "--overwrite" in flat(refused.output)
    assert (run / "metrics.csv").read_bytes() == metrics
    assert (run / "model" / "weights.safetensors").read_bytes() == weights
    replaced = runner.invoke(typer_app, args + ["--epochs", "1", "--overwrite", "--seed", "1"])
    assert replaced.exit_code == 0, replaced.output
    assert len(pd.read_csv(run / "metrics.csv")) == 1
    assert (run / "model" / "weights.safetensors").read_bytes() != weights
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from assayfew.cli import main; main()", *args]


def test_failed_write_leaves_the_existing_output_intact(ws: Workspace) -> None:
    """A write cut short by a file-size limit (as a full disk would) keeps the previous file byte for byte."""
    existing = ws.root / "existing.csv"
    good = b"compound_id,prediction\n" + b"".join(b"c%d,5.0\n" % i for i in range(200))
    existing.write_bytes(good)
    big = ws.root / "big.csv"  # 100 rows: the predictions (~10 kB) exceed the 2 kB limit
    pd.DataFrame({"smiles": SMILES * 10, "pIC50": ACTIVITY + [""] * 90}).to_csv(big, index=False)
    argv = _cli("predict", str(big), "--model", str(ws.model), "--out", str(existing))
    done = subprocess.run(["bash", "-c", 'ulimit -f 2; exec "$@"', "bash", *argv], capture_output=True, text=True,
                          timeout=120, env=os.environ | {"ASSAYFEW_CACHE": str(ws.root / "cache")})
    assert done.returncode == 2, done.stderr
    assert "existing.csv: cannot write (File too large); nothing was changed there" in flat(done.stderr)
    assert "Traceback" not in done.stderr
    assert existing.read_bytes() == good
    assert not list(ws.root.glob(".*.tmp"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_to_the_app_leaves_no_server_behind(ws: Workspace) -> None:
    port = _free_port()
    proc = subprocess.Popen(_cli("app", "--port", str(port)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        else:
            pytest.fail("the dashboard did not start listening within 60 s")
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert children == []  # the launcher became the server: no child to orphan
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("damage, message", [
    (edit_config(lambda c: c.update(members=[])), "members: [] should be non-empty"),
    (write_weights(tensors_with(_nan_first)), "non-finite values"),
], ids=["members_empty", "weights_nan"])
def test_app_shows_the_same_model_message(ws: Workspace, monkeypatch, damage, message) -> None:
    """The dashboard reports a damaged model with the CLI's words, not a traceback or empty predictions."""
    from streamlit.testing.v1 import AppTest

    damage(ws)
    cli = runner.invoke(typer_app, predict()(ws))
    assert cli.exit_code == 2 and message in flat(cli.output)
    monkeypatch.setenv("ASSAYFEW_MODEL_DIR", str(ws.model))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.button(key="load_example").click().run()
    at.button(key="adapt").click().run()
    assert not at.exception
    assert len(at.error) == 1 and INVALID_MODEL in at.error[0].value and message in at.error[0].value


def test_closed_output_pipe_stops_quietly(ws: Workspace) -> None:
    """`assayfew predict in.csv | head` : no traceback, no 'Broken pipe' noise when the reader leaves."""
    big = ws.root / "big.csv"  # ~100 kB of predictions: more than a pipe buffer holds
    pd.DataFrame({"smiles": SMILES * 100, "pIC50": ACTIVITY + [""] * 990}).to_csv(big, index=False)
    proc = subprocess.Popen(_cli("predict", str(big), "--model", str(ws.model)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=os.environ | {"ASSAYFEW_CACHE": str(ws.root / "cache")})
    assert proc.stdout.read(10)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in stderr and "Broken pipe" not in stderr and "Exception ignored" not in stderr, stderr
