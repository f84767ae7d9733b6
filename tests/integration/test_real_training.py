"""A short meta-training run on real SIMPD assays beats the untrained model on held-out targets."""

import pytest

from assayfew.checkpoint import load_model
from assayfew.evaluate import evaluate_episodes, evaluation_episodes
from assayfew.experiment import split_taskset
from assayfew.paths import assays_dir
from assayfew.splits import Split
from assayfew.tasks import build_taskset
from assayfew.train import TrainConfig, train

pytestmark = pytest.mark.shared_data


def test_short_run_raises_meta_validation_r2(shared_data, tmp_path):
    taskset, _ = build_taskset(shared_data / "simpd_chembl32_ki", "dir")
    data = split_taskset(taskset, Split.load(assays_dir() / "shared_heldout.json"))
    train_set = data.train.subset(data.train.assay_ids[:20])
    val_set = data.val.subset(data.val.assay_ids[:5])
    base = dict(hidden=(64, 64), meta_batch=4, support_max=32, query_max=32, val_max_assays=5, device="cpu", seed=0)
    untrained = train(TrainConfig(**base, epochs=1, iters=1, outer_lr=0.0), train_set, val_set, tmp_path / "u")
    trained = train(TrainConfig(**base, epochs=2, iters=40, outer_lr=3e-3), train_set, val_set, tmp_path / "t")
    episodes = evaluation_episodes(val_set, support_k=32, seed=0)
    r2_untrained = evaluate_episodes(episodes, load_model(tmp_path / "u" / "model").adapt_predict).summary["mean"]
    r2_trained = evaluate_episodes(episodes, load_model(tmp_path / "t" / "model").adapt_predict).summary["mean"]
    assert trained.best_val > untrained.best_val
    assert r2_trained > r2_untrained
