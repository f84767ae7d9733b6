"""Screening libraries: the adapt/predict split, streamed scoring equal to `adapt_and_predict`, formats."""

import gzip
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from rdkit import Chem

from assayfew import checkpoint
from assayfew.baselines import ridge_predict
from assayfew.checkpoint import MetaModel
from assayfew.chem import FingerprintSpec, OnBits, featurize_chunks, featurize_smiles
from assayfew.predict import InputError, adapt_and_predict
from assayfew.screen import SCORE_COLUMNS, LibraryFeatures, open_library, score_library

from tests.unit.test_predict import OPTS, assay, model  # noqa: F401  (the same fixtures as predict's tests)

INVALID = {3: "not_a_smiles", 7: "", 8: "C1CC"}  # library positions of rows that cannot be scored


@pytest.fixture(scope="module", params=["similarity", "local", "neighbours", "local+neighbours"])
def reference(request, model, assay):
    """The one-shot path: the library's compounds as unmeasured rows of the assay table; with an uncertainty
    calibrated on similarity and CV error only, with the local error of the nearest measured compounds, and with
    the distance term on the mean similarity of the 2 nearest (without and with the local error)."""
    uncertainty: dict = {}
    if "local" in request.param:
        uncertainty |= {"intercept": -0.4, "cv_slope": 0.7, "distance_slope": 0.9, "local_slope": 0.3}
    if "neighbours" in request.param:
        uncertainty |= {"distance_slope": 1.3, "distance_neighbours": 2}
    if uncertainty:
        model = MetaModel(learners=model.learners, config=model.config | {"uncertainty": uncertainty})
    return adapt_and_predict(assay, model, options=OPTS)


def library_rows(assay):
    """(id, SMILES) of the assay's unmeasured compounds, with invalid rows planted at INVALID's positions."""
    rows = [(cid, smi) for cid, smi, act in assay[["compound_id", "smiles", "pIC50"]].itertuples(index=False)
            if pd.isna(act)]
    for pos, smi in sorted(INVALID.items()):
        rows.insert(pos, (f"bad{pos}", smi))
    return rows


def scored(reference, path, tmp_path, **kw) -> pd.DataFrame:
    out = tmp_path / "scored.csv"
    summary = score_library(reference.adaptation, open_library(path, kw.pop("smiles_col", None)), out,
                            n_jobs=kw.pop("n_jobs", 1), **kw)
    table = pd.read_csv(out, dtype={"name": str, "compound_id": str})
    assert summary.n_rows == len(table)
    return table


def expected(reference, assay, rows):
    """The reference's numbers for the library rows (by compound id)."""
    out = reference.table.set_index("compound_id")
    return [out.loc[cid] if not cid.startswith("bad") else None for cid, _ in rows]


def write_smi(path, rows, header=None):
    with open(path, "w") as handle:
        if header:
            handle.write(header + "\n")
        for cid, smi in rows:
            handle.write(f"{smi} {cid}\n" if smi else f" {cid}\n")


def check_against_reference(table, rows, reference, id_col):
    assert list(table[id_col]) == [cid for cid, _ in rows]  # every row, in input order
    for (cid, _), (_, got), want in zip(rows, table.iterrows(), expected(reference, None, rows)):
        if want is None:
            assert got["status"].startswith("invalid") and np.isnan(got["prediction"])
            assert got["in_domain"] == False  # noqa: E712
            continue
        assert got["status"] == "ok"
        assert got["prediction"] == pytest.approx(want["prediction"], rel=1e-5, abs=1e-6)  # float32 rounding (folded batch norm)
        assert got["uncertainty"] == pytest.approx(want["uncertainty"], abs=1e-6)
        assert got["similarity_to_support"] == pytest.approx(want["similarity_to_support"], abs=1e-9)
        assert got["in_domain"] == want["in_domain"]


@pytest.mark.parametrize("ridge_weight", [0.0, 0.4])
def test_adapt_then_predict_equals_the_one_shot_path(model, one_thread, ridge_weight):
    """MetaModel.adapt + predict (the query's sparse form shared by the members) = each learner's
    adapt_and_predict, averaged, blended with fingerprint ridge regression when the model says so."""
    model = model.with_prediction(fp_ridge_weight=ridge_weight)
    rng = np.random.default_rng(0)
    bits = model.spec.bits
    xs = (rng.random((12, bits)) < 0.1).astype(np.float32)
    ys = rng.normal(6, 1, 12)
    xq = (rng.random((40, bits)) < 0.1).astype(np.float32)
    boot = rng.integers(0, 12, 12)
    a, b = model.adapt(xs, ys), model.adapt(xs[boot], ys[boot])
    together = [model.predict(a, xq), model.predict(b, xq)]
    for support_x, support_y, got in ((xs, ys, together[0]), (xs[boot], ys[boot], together[1])):
        shift = support_y.mean()  # the model's label scaling: centred on the support mean
        one_shot = np.mean([learner.adapt_and_predict(torch.as_tensor(support_x),
                                                      torch.as_tensor((support_y - shift).astype(np.float32)),
                                                      torch.as_tensor(xq)).numpy() for learner in model.learners],
                           axis=0) + shift
        one_shot = (1 - ridge_weight) * one_shot + ridge_weight * ridge_predict(support_x, support_y, xq)
        np.testing.assert_allclose(got, one_shot, rtol=0, atol=1e-6)
        np.testing.assert_allclose(model.adapt_predict(support_x, support_y, xq), got, rtol=0, atol=1e-6)
    assert not np.allclose(together[0], together[1])  # the two adaptations really differ


@pytest.mark.parametrize("ridge_weight", [0.0, 0.4])
def test_predict_from_set_bits_equals_predict(model, one_thread, monkeypatch, ridge_weight):
    """The library path (set bits, each member's bits_forward in row blocks, ridge summed over set bits) gives
    `predict`'s numbers, across block boundaries and for a row without set bits; it does not fall back."""
    model = model.with_prediction(fp_ridge_weight=ridge_weight)
    rng = np.random.default_rng(1)
    bits = model.spec.bits
    xs, ys = (rng.random((12, bits)) < 0.1).astype(np.float32), rng.normal(6, 1, 12)
    xq = (rng.random((40, bits)) < 0.1).astype(np.uint8)
    xq[5] = 0
    query = OnBits.from_packed(np.packbits(xq, axis=1, bitorder="little"), bits)
    np.testing.assert_array_equal(query.dense(), xq)
    np.testing.assert_array_equal(np.diff(query.starts()), xq.sum(axis=1))
    adaptation = model.adapt(xs, ys)
    want = model.predict(adaptation, xq)
    monkeypatch.setattr(checkpoint, "BITS_BLOCK", 7)
    monkeypatch.setattr(MetaModel, "predict", lambda *a: pytest.fail("predict_bits fell back to predict"))
    np.testing.assert_allclose(model.predict_bits(adaptation, query), want, rtol=0, atol=1e-6)


def test_adaptation_predict_from_set_bits_equals_predict(reference, assay, one_thread):
    """Prediction, uncertainty and similarity to the measured compounds (bit-exact) from the set bits."""
    spec = reference.adaptation.model.spec
    x = featurize_smiles(list(assay["smiles"]) * 3, spec, canonical=False).fingerprints
    want = reference.adaptation.predict(x)
    got = reference.adaptation.predict_bits(OnBits.from_dense(x))
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got[2], want[2])
    assert (want[2] == 1).sum() >= 12 and 0 < want[2].min() < 1  # measured compounds, and others


@pytest.mark.parametrize("spec", [FingerprintSpec(), FingerprintSpec(bits=4096, feature_bits=2048)])
def test_featurize_chunks_equals_featurize_smiles(spec):
    smiles = ["CCO", "c1ccccc1", "xx", "", None, "C1CC", "CC(=O)Nc1ccc(O)cc1"] * 5
    chunks = [smiles[a:a + 4] for a in range(0, len(smiles), 4)]
    for jobs in (1, 2):
        out = list(featurize_chunks(chunks, spec, n_jobs=jobs))
        assert [len(p) for p, _ in out] == [len(c) for c in chunks]
        packed = np.concatenate([p for p, _ in out])
        ref = featurize_smiles(smiles, spec, canonical=False)
        np.testing.assert_array_equal(np.unpackbits(packed, axis=1, count=spec.bits, bitorder="little"),
                                      ref.fingerprints)
        assert [r for _, rs in out for r in rs] == ref.reasons


@pytest.mark.parametrize("chunk_size,jobs", [(5, 1), (4, 2), (10_000, 1)])
def test_streamed_library_equals_adapt_and_predict(reference, assay, tmp_path, chunk_size, jobs):
    """Tiny chunks: order kept across chunk boundaries (also through the worker pool); invalid rows kept."""
    rows = library_rows(assay)
    write_smi(tmp_path / "lib.smi", rows)
    table = scored(reference, tmp_path / "lib.smi", tmp_path, chunk_size=chunk_size, n_jobs=jobs)
    assert list(table.columns) == ["smiles", "name", *SCORE_COLUMNS]
    check_against_reference(table, rows, reference, "name")
    assert table.loc[7, "status"] == "invalid SMILES: empty SMILES"


def test_features_started_before_adapting_give_the_same_file(reference, assay, tmp_path):
    """`LibraryFeatures` featurises in the background from the start (as `predict --library` does while it
    adapts); handed to `score_library` it writes the same bytes; a mismatched fingerprint is refused."""
    rows = library_rows(assay)
    write_smi(tmp_path / "l.smi", rows)
    plain = tmp_path / "plain.csv"
    score_library(reference.adaptation, open_library(tmp_path / "l.smi"), plain, n_jobs=2, chunk_size=5)
    adaptation = reference.adaptation
    features = LibraryFeatures(open_library(tmp_path / "l.smi"), adaptation.model.spec,
                               standardize=adaptation.standardize, chunk_size=5, n_jobs=2)
    early = tmp_path / "early.csv"
    score_library(adaptation, features, early)
    assert early.read_bytes() == plain.read_bytes()
    assert not features._thread.is_alive()
    other = LibraryFeatures(open_library(tmp_path / "l.smi"), FingerprintSpec(radius=3, bits=adaptation.model.spec.bits),
                            standardize=adaptation.standardize, chunk_size=5, n_jobs=1)
    with pytest.raises(ValueError, match="another fingerprint"):
        score_library(adaptation, other, tmp_path / "other.csv")
    assert not other._thread.is_alive() and not (tmp_path / "other.csv").exists()


def test_features_closed_early_stop_their_work(assay, tmp_path):
    """Closing before (or while) consuming stops the thread and its worker pool; read errors reach the consumer."""
    write_smi(tmp_path / "l.smi", library_rows(assay) * 20)
    features = LibraryFeatures(open_library(tmp_path / "l.smi"), FingerprintSpec(), standardize=False, chunk_size=3,
                               n_jobs=2, ahead=1)
    next(iter(features))
    features.close()
    assert not features._thread.is_alive()
    (tmp_path / "bad.csv").write_text("smiles,id\nCCO,1\nCCN,2,extra\n")
    with LibraryFeatures(open_library(tmp_path / "bad.csv"), FingerprintSpec(), standardize=False, n_jobs=1) as bad:
        with pytest.raises(InputError, match=r"bad\.csv, line 3: 3 fields"):
            list(bad)


def test_units_of_the_assay_apply_to_library_predictions(model, assay, tmp_path):
    nm = assay.assign(pIC50=10 ** (9 - assay["pIC50"].astype(float)))
    ref = adapt_and_predict(nm, model, units="nM", options=OPTS)
    rows = library_rows(assay)
    write_smi(tmp_path / "lib.smi", rows)
    table = scored(ref, tmp_path / "lib.smi", tmp_path, units="nM")
    check_against_reference(table, rows, ref, "name")


def test_formats_give_the_same_scores(reference, assay, tmp_path):
    """.smi (with a header), .csv (extra columns kept), .tsv.gz, .sdf and .sdf.gz."""
    rows = library_rows(assay)
    write_smi(tmp_path / "h.smi", rows, header="SMILES ID")
    smi = scored(reference, tmp_path / "h.smi", tmp_path)
    assert list(smi.columns[:2]) == ["SMILES", "ID"]
    check_against_reference(smi.rename(columns={"ID": "name"}), rows, reference, "name")

    frame = pd.DataFrame({"compound_id": [c for c, _ in rows], "vendor": "acme", "canonical_smiles": [s for _, s in rows]})
    frame.to_csv(tmp_path / "lib.csv", index=False)
    table = scored(reference, tmp_path / "lib.csv", tmp_path, chunk_size=6)
    assert list(table.columns) == ["compound_id", "vendor", "canonical_smiles", *SCORE_COLUMNS]
    assert (table["vendor"] == "acme").all()
    check_against_reference(table, rows, reference, "compound_id")

    with gzip.open(tmp_path / "lib.tsv.gz", "wt") as handle:
        frame.to_csv(handle, sep="\t", index=False)
    check_against_reference(scored(reference, tmp_path / "lib.tsv.gz", tmp_path), rows, reference, "compound_id")

    text = []
    for cid, smi in rows:
        mol = Chem.MolFromSmiles(smi) if smi else None
        # an invalid row: a counts line promising an atom that is not there
        block = Chem.MolToMolBlock(mol) if mol is not None else "x\n\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n"
        text.append(f"{cid}\n{block.split(chr(10), 1)[1]}> <compound_id>\n{cid}\n\n> <supplier>\nacme\n\n$$$$\n")
    (tmp_path / "lib.sdf").write_text("".join(text))
    with gzip.open(tmp_path / "lib.sdf.gz", "wt") as handle:
        handle.write("".join(text))
    for name in ("lib.sdf", "lib.sdf.gz"):
        table = scored(reference, tmp_path / name, tmp_path, chunk_size=7)
        assert list(table.columns) == ["name", "smiles", "compound_id", "supplier", *SCORE_COLUMNS]
        assert (table["supplier"] == "acme").all()
        bad = table["compound_id"].str.startswith("bad")
        assert table.loc[bad, "status"].str.startswith("invalid structure").all()
        good = table[~bad]
        want = reference.table.set_index("compound_id").loc[good["compound_id"]]
        np.testing.assert_allclose(good["prediction"], want["prediction"], rtol=0, atol=1e-6)


def test_library_columns_named_like_scores_are_replaced(reference, assay, tmp_path):
    rows = library_rows(assay)[:6]
    pd.DataFrame({"smiles": [s for _, s in rows], "prediction": 99.0, "note": "x"}).to_csv(tmp_path / "l.csv",
                                                                                           index=False)
    out = tmp_path / "scored.csv"
    summary = score_library(reference.adaptation, open_library(tmp_path / "l.csv"), out, n_jobs=1)
    assert summary.replaced_columns == ["prediction"]
    table = pd.read_csv(out)
    assert list(table.columns) == ["smiles", "note", *SCORE_COLUMNS] and (table["prediction"] != 99.0).all()


def test_a_bad_row_mid_file_leaves_an_existing_output_untouched(reference, tmp_path):
    lines = ["smiles,id"] + [f"CCO,{i}" for i in range(20)] + ["CCN,20,extra"] + ["CCC,21"]
    (tmp_path / "l.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "scored.csv"
    out.write_text("previous results\n")
    with pytest.raises(InputError, match=r"l\.csv, line 22: 3 fields but the header has 2"):
        score_library(reference.adaptation, open_library(tmp_path / "l.csv"), out, n_jobs=1, chunk_size=4)
    assert out.read_text() == "previous results\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_smi_without_header_and_cxsmiles(reference, tmp_path):
    (tmp_path / "l.smi").write_text("CCO first compound\nCC(C)O |$;;$| second\n\n  no_smiles_here\nc1ccccc1\n")
    table = scored(reference, tmp_path / "l.smi", tmp_path)
    assert list(table["smiles"].fillna("")) == ["CCO", "CC(C)O |$;;$|", "", "c1ccccc1"]
    assert list(table["name"].fillna("")) == ["first compound", "second", "no_smiles_here", ""]
    assert list(table["status"]) == ["ok", "ok", "invalid SMILES: empty SMILES", "ok"]


def test_smi_rows_read_in_blocks(tmp_path):
    """Rows read a block of lines at a time: BOM, blank and whitespace-only lines, tabs, trailing spaces, names
    with spaces, short rows; an encoding error names its line across block boundaries."""
    text = "\ufeffCCO\ta\n\n   \nCCN  b c  \r\nCCC\n" + "".join(f"C{'C' * (i % 3)} n{i}\n" for i in range(50))
    (tmp_path / "l.smi").write_bytes(text.encode("utf-8"))
    library = open_library(tmp_path / "l.smi")
    rows = [fields for chunk in library.chunks(7) for fields in chunk.rows]
    assert rows[:3] == [["CCO", "a"], ["CCN", "b c"], ["CCC", ""]]
    assert rows[3:] == [[f"C{'C' * (i % 3)}", f"n{i}"] for i in range(50)]
    assert [len(b) for _, b in library._line_blocks(hint=40)][0] < 50  # several blocks
    (tmp_path / "bad.smi").write_bytes(b"".join(b"CC x\n" for _ in range(30)) + b"C\xff y\nCC z\n")
    with pytest.raises(InputError, match=r"bad\.smi, line 31: not a UTF-8 text file"):
        [row for chunk in open_library(tmp_path / "bad.smi").chunks(7) for row in chunk.rows]
    blocks = open_library(tmp_path / "l.smi")._line_blocks
    with pytest.raises(InputError, match=r"l\.smi, line 31: not a UTF-8 text file"):  # in a later block
        (tmp_path / "l.smi").write_bytes(b"".join(b"CC x\n" for _ in range(30)) + b"C\xff y\n")
        [line for _, block in blocks(hint=40) for line in block]


def test_rows_are_written_as_csv_writer_writes_them():
    """Chunks without special characters take one join; fields with a comma, quote or line break are quoted."""
    import csv
    import io

    from assayfew.screen import _csv_lines, _csv_row

    for rows in ([["CCO", "a"], ["c1ccccc1", ""]], [["CCO", 'say "hi"'], ["C,C", "x\ny"], ["N", "r\r"]], [["C"], [""]]):
        statuses = ["ok", "sanitization failed: atom 1, N, 4"]
        tails = ["6.5,0.8,0.25,False,ok", f",,,False,{_csv_row([statuses[1]])}"] + ["1.0,2.0,0.5,True,ok"] * (len(rows) - 2)
        cells = [["6.5", "0.8", "0.25", "False", "ok"], ["", "", "", "False", statuses[1]]] + \
            [["1.0", "2.0", "0.5", "True", "ok"]] * (len(rows) - 2)
        want = io.StringIO()
        csv.writer(want, lineterminator="\n").writerows([fields + c for fields, c in zip(rows, cells)])
        assert _csv_lines(rows, tails) == want.getvalue()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_featurising_workers_exit_when_the_command_is_killed(tmp_path):
    """A killed process (SIGKILL: no clean-up runs) leaves no featurising workers behind."""
    script = tmp_path / "feed.py"
    script.write_text(
        "import itertools, sys\n"
        "from assayfew.chem import featurize_chunks\n"
        "chunks = (['CCO', 'c1ccccc1O', 'CC(=O)Nc1ccc(O)cc1'] * 300 for _ in itertools.count())\n"
        "for i, _ in enumerate(featurize_chunks(chunks, n_jobs=2)):\n"
        "    if i == 2:\n"
        "        print('running', flush=True)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "running"
        workers = _children(proc.pid)
        assert len(workers) >= 2
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)]


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False
