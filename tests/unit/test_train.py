"""Training loop, run directory contents, checkpoint round trip, resume."""

import csv
import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from assayfew.checkpoint import load_model
from assayfew.chem import FingerprintSpec, OnBits, featurize_smiles, max_tanimoto
from assayfew.predict import PredictOptions, adapt_and_predict, example_assay
from assayfew.evaluate import evaluate_episodes, evaluation_episodes
from assayfew.io import read_json, read_toml
from assayfew.train import TrainConfig, train
from tests.conftest import TINY_CONFIG, make_synthetic_taskset


def _data():
    ts = make_synthetic_taskset()
    return ts.subset(ts.assay_ids[:9]), ts.subset(ts.assay_ids[9:])


def test_run_directory_has_config_metrics_and_model(tmp_path):
    tr, va = _data()
    result = train(TrainConfig(**TINY_CONFIG), tr, va, tmp_path)
    assert read_toml(tmp_path / "config.toml")["algo"] == "anil++"
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert read_json(tmp_path / "val_assays.json")["val"] == va.assay_ids
    cfg = read_json(tmp_path / "model" / "config.json")
    assert cfg["fingerprint"]["bits"] == 256 and cfg["training"]["epoch"] == result.best_epoch
    assert cfg["core"]["learner"]["name"] == "anil++" and cfg["core"]["mixer"]["name"] == "metamix"


def test_feature_bits_spec_goes_from_task_cache_to_model_and_prediction(tmp_path):
    """A model trained on ECFP + FCFP columns records them, and featurizes SMILES the same way to predict."""
    spec = FingerprintSpec(radius=2, bits=256, feature_bits=128)
    tr, va = (dataclasses.replace(ts, spec=spec) for ts in _data())
    train(TrainConfig(**TINY_CONFIG | {"epochs": 1}), tr, va, tmp_path)
    assert read_json(tmp_path / "model" / "config.json")["fingerprint"] == spec.to_dict()
    model = load_model(tmp_path / "model")
    assert model.spec == spec
    table, _ = example_assay(n_measured=12, seed=0)
    table = table[table["pIC50"].notna() | (table.index < 30)].reset_index(drop=True)
    result = adapt_and_predict(table, model, options=PredictOptions(cv_folds=3))
    out = result.table
    x = featurize_smiles(table["smiles"].tolist(), spec, standardize=True).fingerprints.astype(np.float32)
    measured = table["pIC50"].notna().to_numpy()
    expected = model.adapt_predict(x[measured], table["pIC50"].to_numpy()[measured], x)
    np.testing.assert_allclose(out["prediction"].to_numpy(float), expected, rtol=1e-5, atol=1e-5)
    # similarity to the measured compounds is the ECFP Tanimoto, whatever the feature bits hold
    ecfp = x[:, :spec.structure_bits]
    unmeasured = ~measured
    np.testing.assert_allclose(result.table["similarity_to_support"].to_numpy(float)[unmeasured],
                               np.round(max_tanimoto(ecfp[unmeasured], ecfp[measured]), 4), atol=1e-6)
    # the library scoring path (set bits) agrees with the dense one
    dense = result.adaptation.predict(x)
    sparse = result.adaptation.predict_bits(OnBits.from_dense(x.astype(np.uint8)))
    for a, b in zip(dense, sparse):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dense[2], max_tanimoto(ecfp, ecfp[measured]), atol=1e-6)


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    tr, va = _data()
    train(TrainConfig(**TINY_CONFIG | {"epochs": 1}), tr, va, tmp_path)
    a, b = load_model(tmp_path / "model"), load_model(tmp_path / "model")
    x, y, _ = va.assay(0)
    np.testing.assert_array_equal(a.adapt_predict(x[:20], y[:20], x[20:]), b.adapt_predict(x[:20], y[:20], x[20:]))


def test_resume_continues_to_the_same_weights(tmp_path):
    tr, va = _data()
    cfg = TrainConfig(**TINY_CONFIG)
    train(cfg, tr, va, tmp_path / "straight")
    one_epoch = TrainConfig(**TINY_CONFIG | {"epochs": 1})
    train(one_epoch, tr, va, tmp_path / "resumed")
    with pytest.raises(ValueError, match="config differs"):
        train(cfg, tr, va, tmp_path / "resumed", resume=True)
    # Resuming with a longer schedule is a different run; resume needs the same config, so re-run epoch 0 of the
    # 2-epoch config, stop, and resume it.
    import assayfew.train as tr_mod

    class Stop(Exception):
        pass

    class StopAfterFirstEpoch(tr_mod.Reporter):
        def epoch(self, row):
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tr, va, tmp_path / "interrupted", reporter=StopAfterFirstEpoch())
    train(cfg, tr, va, tmp_path / "interrupted", resume=True)
    w1 = load_file(str(tmp_path / "straight" / "state" / "learner.safetensors"))
    w2 = load_file(str(tmp_path / "interrupted" / "state" / "learner.safetensors"))
    assert w1.keys() == w2.keys()
    for k in w1:
        np.testing.assert_allclose(w1[k].numpy(), w2[k].numpy(), atol=1e-6, err_msg=k)
    assert len(list(csv.DictReader(open(tmp_path / "interrupted" / "metrics.csv")))) == 2


def test_training_improves_validation_r2_over_the_untrained_model(tmp_path):
    tr, va = _data()
    cfg = TrainConfig(**TINY_CONFIG | {"epochs": 3, "iters": 25})
    result = train(cfg, tr, va, tmp_path)
    train(TrainConfig(**TINY_CONFIG | {"epochs": 1, "iters": 1, "outer_lr": 0.0}), tr, va,
          tmp_path / "untrained")
    episodes = evaluation_episodes(va, seed=0)
    trained_r2 = evaluate_episodes(episodes, load_model(tmp_path / "model").adapt_predict).summary["mean"]
    base_r2 = evaluate_episodes(episodes, load_model(tmp_path / "untrained" / "model").adapt_predict).summary["mean"]
    assert trained_r2 > base_r2
    assert result.best_val == pytest.approx(max(r["val_mean_r2"] for r in result.history))


def test_ensemble_directory_averages_its_members(tmp_path):
    import json
    import shutil

    tr, va = _data()
    for seed in (0, 1):
        train(TrainConfig(**TINY_CONFIG | {"epochs": 1, "seed": seed}), tr, va, tmp_path / f"run{seed}")
    ens = tmp_path / "ensemble"
    for seed in (0, 1):
        shutil.copytree(tmp_path / f"run{seed}" / "model", ens / f"m{seed}")
    config = json.loads((ens / "m0" / "config.json").read_text()) | {"members": ["m0", "m1"]}
    (ens / "config.json").write_text(json.dumps(config))
    x, y, _ = va.assay(0)
    members = [load_model(ens / f"m{s}").adapt_predict(x[:20], y[:20], x[20:]) for s in (0, 1)]
    np.testing.assert_allclose(load_model(ens).adapt_predict(x[:20], y[:20], x[20:]), np.mean(members, axis=0),
                               atol=1e-5)
    config["label_scaling"] = {"mode": "none"}
    (ens / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="differs from the ensemble"):
        load_model(ens)


@pytest.mark.parametrize("mode,with_split", [("center", True), ("standardize", False)])
def test_episode_batch_equals_padded_scaled_tasks(mode, with_split):
    """The fast batch path (rows gathered from the table, sparse form from stored bits) gives exactly the
    padded batch of the materialised, label-scaled Tasks, including its sparse input form."""
    from assayfew.meta import pad_tasks
    from assayfew.scaling import fit_scaling
    from assayfew.tasks import EpisodeSampler
    from assayfew.train import episode_batch

    taskset = make_synthetic_taskset(n_assays=10, bits=64, seed=3, with_split=with_split)
    fast = EpisodeSampler(taskset, support_range=(4, 20), query_range=(4, 20), max_support=20, seed=5)
    slow = EpisodeSampler(taskset, support_range=(4, 20), query_range=(4, 20), max_support=20, seed=5)
    for _ in range(5):
        batch = episode_batch(taskset, fast.sample_rows(4), mode, 0.5)
        items = []
        for t in slow.sample(4):
            s = fit_scaling(t.support_y, mode, 0.5)
            items.append((t.support_x, s.forward(t.support_y), t.query_x, s.forward(t.query_y)))
        ref = pad_tasks(items)
        for name in ("xs", "ys", "ms", "xq", "yq", "mq"):
            assert torch.equal(getattr(batch, name), getattr(ref, name)), name
        for which in "sq":
            got, want = batch.sparse_rows(which), ref.sparse_rows(which)
            for form in ("by_row", "by_col"):
                assert torch.equal(getattr(got, form).indices, getattr(want, form).indices)
                assert torch.equal(getattr(got, form).offsets, getattr(want, form).offsets)
            assert batch.input_nnz(which) == ref.input_nnz(which)


def test_set_sparse_rows_rejects_wrong_shape():
    from assayfew.meta.batch import TaskBatch
    from assayfew.meta.sparse import SparseRows

    batch = TaskBatch(torch.zeros(2, 3, 8), torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 2, 8),
                      torch.zeros(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="does not match"):
        batch.set_sparse_rows("s", SparseRows.from_dense(torch.zeros(5, 8)))
    with pytest.raises(ValueError, match="sorted by row"):
        SparseRows.from_coordinates(torch.tensor([1, 0]), torch.tensor([0, 0]), 2, 8)



def test_bit_dropout_clears_bits_consistently_and_independently_of_the_share():
    """Bit dropout clears about `rate` of the set bits, the same in the dense and the sparse input form;
    a task's draws depend on its global index only (a rank building tasks 2.. drops the same bits);
    rate 0 leaves the batch as it was."""
    from assayfew.meta.sparse import SparseRows
    from assayfew.tasks import EpisodeSampler
    from assayfew.trainstep import BitDropout, episode_batch

    taskset = make_synthetic_taskset(n_assays=10, bits=64, seed=3)
    episodes = EpisodeSampler(taskset, support_range=(8, 20), query_range=(8, 20), max_support=20,
                              seed=5).sample_rows(4)
    widths = (20, 20)
    plain = episode_batch(taskset, episodes, "center", 0.5, widths=widths)
    same = episode_batch(taskset, episodes, "center", 0.5, widths=widths, dropout=BitDropout(0.0, 7))
    assert torch.equal(plain.xs, same.xs) and torch.equal(plain.xq, same.xq)
    dropped = episode_batch(taskset, episodes, "center", 0.5, widths=widths, dropout=BitDropout(0.3, 7))
    for which, before, after in (("s", plain.xs, dropped.xs), ("q", plain.xq, dropped.xq)):
        assert torch.all(after <= before)  # only clears bits
        kept = float(after.sum() / before.sum())
        assert 0.6 < kept < 0.8, kept
        rebuilt = SparseRows.from_dense(after.reshape(-1, after.shape[-1]))
        got = dropped.sparse_rows(which)
        assert torch.equal(got.by_row.indices, rebuilt.by_row.indices)
        assert torch.equal(got.by_row.offsets, rebuilt.by_row.offsets)
        assert dropped.input_nnz(which) == int(after.count_nonzero())
    assert torch.equal(dropped.ys, plain.ys) and torch.equal(dropped.ms, plain.ms)
    share = episode_batch(taskset, episodes[2:], "center", 0.5, widths=widths, dropout=BitDropout(0.3, 7, 2))
    assert torch.equal(share.xs, dropped.xs[2:]) and torch.equal(share.xq, dropped.xq[2:])
    other = episode_batch(taskset, episodes, "center", 0.5, widths=widths, dropout=BitDropout(0.3, 8))
    assert not torch.equal(other.xs, dropped.xs)


def test_bit_dropout_is_a_checked_training_option(tmp_path):
    with pytest.raises(ValueError, match="bit_dropout"):
        TrainConfig(**(TINY_CONFIG | {"bit_dropout": 1.5}))
    _check_augmentation(tmp_path, "bit_dropout", 0.2)


def _check_augmentation(tmp_path, option: str, value: float) -> None:
    """Training with `option` = value is reproducible from the seed, differs from training without it, and the
    option is written into the run's config."""
    tr, va = _data()
    cfg = TrainConfig(**(TINY_CONFIG | {option: value}))
    result = train(cfg, tr, va, tmp_path / "a")
    again = train(cfg, tr, va, tmp_path / "b")
    assert result.best_epoch == again.best_epoch
    a = load_file(tmp_path / "a" / "model" / "weights.safetensors")
    b = load_file(tmp_path / "b" / "model" / "weights.safetensors")
    train(TrainConfig(**TINY_CONFIG), tr, va, tmp_path / "c")
    c = load_file(tmp_path / "c" / "model" / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # reproducible from the seed
    assert any(not torch.equal(a[k], c[k]) for k in a)  # and it changes training
    assert read_toml(tmp_path / "a" / "config.toml")[option] == value


def test_task_interpolation_mixes_inputs_and_labels_of_paired_tasks():
    """Each interpolated task is λ·itself + (1 − λ)·its partner, row by row, in the dense inputs, the sparse
    form (forward and backward) and the labels (each scaled by its own support); masks are unchanged; the
    draws depend only on the seed and the global batch, so a rank's share matches; rate 0 changes nothing."""
    from assayfew.meta.sparse import spmm
    from assayfew.scaling import fit_scaling
    from assayfew.tasks import EpisodeSampler
    from assayfew.trainstep import TaskInterpolation, episode_batch

    taskset = make_synthetic_taskset(n_assays=10, bits=64, seed=3)
    episodes = EpisodeSampler(taskset, support_range=(8, 20), query_range=(8, 20), max_support=20,
                              seed=5).sample_rows(4)
    widths = (20, 20)
    plain = episode_batch(taskset, episodes, "center", 0.5, widths=widths)
    assert TaskInterpolation(0.0, 0.5, 1).draw(episodes) == [None] * 4
    partners = TaskInterpolation(1.0, 0.5, 1).draw(episodes)
    assert all(p is not None for p in partners)
    mixed = episode_batch(taskset, episodes, "center", 0.5, widths=widths, partners=partners)
    assert torch.equal(mixed.ms, plain.ms) and torch.equal(mixed.mq, plain.mq)
    w = torch.randn(64, 3, dtype=torch.float64, requires_grad=True)
    for t, p in enumerate(partners):
        assert p is not None and 0.0 <= p.lam <= 1.0
        scale = fit_scaling(taskset.values[p.support], "center", 0.5)
        for which, paired, x, y, ref_x, ref_y in (("s", p.paired_support, mixed.xs, mixed.ys, plain.xs, plain.ys),
                                                  ("q", p.paired_query, mixed.xq, mixed.yq, plain.xq, plain.yq)):
            n = len(paired)
            fp = torch.from_numpy(taskset.fingerprints[taskset.fp_rows[paired]]).float()
            assert torch.allclose(x[t, :n], p.lam * ref_x[t, :n] + (1 - p.lam) * fp)
            want_y = p.lam * ref_y[t, :n] + (1 - p.lam) * torch.from_numpy(scale.forward(taskset.values[paired]))
            assert torch.allclose(y[t, :n], want_y.float(), atol=1e-6)
    for which, x in (("s", mixed.xs), ("q", mixed.xq)):
        dense = x.reshape(-1, 64).double()
        got = spmm(mixed.sparse_rows(which), w)
        assert torch.allclose(got, dense @ w)
        g = torch.autograd.grad(got.sin().sum(), w)[0]
        assert torch.allclose(g, torch.autograd.grad((dense @ w).sin().sum(), w)[0])
    assert not torch.equal(mixed.xs, plain.xs)
    share = episode_batch(taskset, episodes[2:], "center", 0.5, widths=widths, partners=partners[2:])
    assert torch.equal(share.xs, mixed.xs[2:]) and torch.equal(share.yq, mixed.yq[2:])
    again = TaskInterpolation(1.0, 0.5, 1).draw(episodes)
    assert [p.lam for p in again] == [p.lam for p in partners]  # type: ignore[union-attr]
    half = TaskInterpolation(0.5, 0.5, 1).draw(EpisodeSampler(taskset, support_range=(8, 20),
                                                              query_range=(8, 20), seed=6).sample_rows(200))
    assert 60 < sum(p is not None for p in half) < 140


def test_task_mix_is_a_checked_training_option(tmp_path):
    with pytest.raises(ValueError, match="task_mix"):
        TrainConfig(**(TINY_CONFIG | {"task_mix": 1.5}))
    with pytest.raises(ValueError, match="task_mix_alpha"):
        TrainConfig(**(TINY_CONFIG | {"task_mix": 0.5, "task_mix_alpha": 0.0}))
    with pytest.raises(ValueError, match="do not combine"):
        TrainConfig(**(TINY_CONFIG | {"task_mix": 0.5, "bit_dropout": 0.1}))
    _check_augmentation(tmp_path, "task_mix", 0.5)


def test_local_pool_is_a_checked_training_option_that_reaches_the_sampler():
    with pytest.raises(ValueError, match="local_pool"):
        TrainConfig(**(TINY_CONFIG | {"local_pool": -5}))
    tr, va = _data()
    from assayfew.train import DrugBenchmark

    plain = next(iter(DrugBenchmark(TrainConfig(**TINY_CONFIG), tr, va).train_items(0)))
    local = next(iter(DrugBenchmark(TrainConfig(**(TINY_CONFIG | {"local_pool": 30})), tr, va).train_items(0)))
    assert [e[0] for e in plain] == [e[0] for e in local]  # the same assays, other rows
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(plain, local))
    assert all(len(np.union1d(e[1], e[2])) <= 30 for e in local)


def test_assay_weights_balance_corpora_and_apply_named_factors():
    from assayfew.train import assay_weights

    sources = ["a"] * 4 + ["b"]
    assert assay_weights(sources, 0.0, {}) is None
    balanced = np.array(assay_weights(sources, 1.0, {}))
    assert balanced[:4].sum() == pytest.approx(balanced[4:].sum())
    weighted = np.array(assay_weights(sources, 1.0, {"b": 3.0}))
    assert weighted[4:].sum() == pytest.approx(3 * weighted[:4].sum())
    assert assay_weights(sources, 0.0, {"a": 2.0}) == [2.0] * 4 + [1.0]
    with pytest.raises(ValueError, match="not in the training set: c"):
        assay_weights(sources, 1.0, {"c": 2.0})


def test_source_weights_are_a_checked_training_option():
    from assayfew.train import DrugBenchmark

    with pytest.raises(ValueError, match="source_weights.x"):
        TrainConfig.from_dict(TINY_CONFIG | {"source_weights": {"x": 0}})
    with pytest.raises(ValueError, match="table"):
        TrainConfig.from_dict(TINY_CONFIG | {"source_weights": [1]})
    tr, va = _data()
    corpus = tr.sources[0]
    favoured = DrugBenchmark(TrainConfig(**(TINY_CONFIG | {"source_weights": {corpus: 1000.0}})), tr, va)
    assert favoured.weights == [1000.0] * len(tr)
    with pytest.raises(ValueError, match="not in the training set"):
        DrugBenchmark(TrainConfig(**(TINY_CONFIG | {"source_weights": {"nope": 2.0}})), tr, va)


def test_ridge_alpha_reaches_the_r2d2_learner_only():
    cfg = TrainConfig.from_dict(TINY_CONFIG | {"algo": "r2d2", "ridge_alpha": 7.5})
    assert cfg.core(in_dim=8).build_learner().ridge_alpha == 7.5
    assert TrainConfig.from_dict(TINY_CONFIG | {"algo": "r2d2"}).core(in_dim=8).build_learner().ridge_alpha == 1.0
    with pytest.raises(ValueError, match="ridge_alpha = 7.5 is not used by learner 'anil\\+\\+'"):
        TrainConfig.from_dict(TINY_CONFIG | {"algo": "anil++", "ridge_alpha": 7.5})
    with pytest.raises(ValueError, match="ridge_alpha must be > 0"):
        TrainConfig.from_dict(TINY_CONFIG | {"algo": "r2d2", "ridge_alpha": 0.0})


def test_split_sizes_is_a_checked_training_option():
    with pytest.raises(ValueError, match="split_sizes"):
        TrainConfig.from_dict(TINY_CONFIG | {"split_sizes": "everything"})
    assert TrainConfig.from_dict(TINY_CONFIG | {"split_sizes": "range"}).split_sizes == "range"


def test_keep_epoch_stops_there_on_the_full_schedule_and_keeps_that_epoch(tmp_path):
    tr, va = _data()
    full = train(TrainConfig(**TINY_CONFIG | {"epochs": 3}), tr, va, tmp_path / "full")
    kept = train(TrainConfig(**TINY_CONFIG | {"epochs": 3, "keep_epoch": 1}), tr, va, tmp_path / "kept")
    assert [row["epoch"] for row in kept.history] == [0, 1] and kept.best_epoch == 1
    for a, b in zip(full.history[:2], kept.history):  # the same trajectory: the rate anneals over 3 epochs
        assert a["lr"] == b["lr"] and a["train_loss"] == b["train_loss"]
    model = load_file(str(tmp_path / "kept" / "model" / "weights.safetensors"))
    state = load_file(str(tmp_path / "kept" / "state" / "learner.safetensors"))
    assert all(torch.equal(model[k], state[k]) for k in model)
    training = read_json(tmp_path / "kept" / "model" / "config.json")["training"]
    assert training["epoch"] == 1 and training["kept"] == "keep_epoch"
    assert read_json(tmp_path / "full" / "model" / "config.json")["training"]["kept"] == "best validation"


def test_training_without_validation_assays_needs_keep_epoch(tmp_path):
    tr, va = _data()
    none = va.subset([])
    with pytest.raises(ValueError, match="no validation assays.*keep_epoch"):
        train(TrainConfig(**TINY_CONFIG), tr, none, tmp_path / "a")
    result = train(TrainConfig(**TINY_CONFIG | {"keep_epoch": 1}), tr, none, tmp_path / "b")
    assert result.best_epoch == 1 and all(np.isnan(row["val_mean_r2"]) for row in result.history)
    training = read_json(tmp_path / "b" / "model" / "config.json")["training"]
    assert training["epoch"] == 1 and "val_mean_r2" not in training and training["n_train_assays"] == len(tr)


@pytest.mark.parametrize("value", [-1, 2, 1.5, True])
def test_keep_epoch_must_be_an_epoch_of_the_run(value):
    with pytest.raises(ValueError, match="keep_epoch"):
        TrainConfig(**TINY_CONFIG | {"keep_epoch": value})


def test_pose_and_image_configs_check_keep_epoch_too():
    from assayfew.images.train import ImageTrainConfig
    from assayfew.pose.train import PoseTrainConfig

    for config in (PoseTrainConfig, ImageTrainConfig):
        assert config.from_dict({"epochs": 3, "keep_epoch": 2}).keep_epoch == 2
        with pytest.raises(ValueError, match="keep_epoch"):
            config.from_dict({"epochs": 3, "keep_epoch": 3})


def test_ridge_share_turns_query_labels_into_the_blend_residual():
    """With ridge share w, each query label becomes (y - w·r) / (1 - w), r = `ridge_fit` on the episode's scaled
    support; so (1 - w)·f + w·r - y = (1 - w)·(f - label) for any prediction f. Supports and inputs are unchanged."""
    from assayfew.baselines import ridge_fit
    from assayfew.scaling import fit_scaling
    from assayfew.tasks import EpisodeSampler
    from assayfew.trainstep import episode_batch, ridge_residual_labels

    taskset = make_synthetic_taskset(n_assays=10, bits=64, seed=3)
    episodes = EpisodeSampler(taskset, support_range=(8, 20), query_range=(8, 20), max_support=20,
                              seed=5).sample_rows(4)
    widths = (20, 20)
    plain = episode_batch(taskset, episodes, "center", 0.5, widths=widths)
    w = 0.3
    blended = episode_batch(taskset, episodes, "center", 0.5, widths=widths, ridge_share=w)
    assert torch.equal(blended.xs, plain.xs) and torch.equal(blended.ys, plain.ys)
    assert torch.equal(blended.xq, plain.xq) and torch.equal(blended.mq, plain.mq)
    rng = np.random.default_rng(0)
    for t, (_, support, query) in enumerate(episodes):
        sc = fit_scaling(taskset.values[support], "center", 0.5)
        r = ridge_fit(taskset.fingerprints[taskset.fp_rows[support]], sc.forward(taskset.values[support])
                      ).predict(taskset.fingerprints[taskset.fp_rows[query]])
        y = plain.yq[t, : len(query)].double().numpy()
        label = blended.yq[t, : len(query)].double().numpy()
        f = rng.normal(size=len(query))
        np.testing.assert_allclose((1 - w) * f + w * r - y, (1 - w) * (f - label), atol=1e-5)
        assert not np.allclose(label, y)
        assert torch.all(blended.yq[t, len(query):] == 0)
    with pytest.raises(ValueError, match="ridge share"):
        ridge_residual_labels(taskset, episodes, [], plain.yq.numpy(), 1.0)


def test_ridge_share_is_a_checked_training_option(tmp_path):
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="ridge_share"):
            TrainConfig(**(TINY_CONFIG | {"ridge_share": bad}))
    with pytest.raises(ValueError, match="ridge_share and task_mix"):
        TrainConfig(**(TINY_CONFIG | {"ridge_share": 0.3, "task_mix": 0.5}))
    _check_augmentation(tmp_path, "ridge_share", 0.3)
