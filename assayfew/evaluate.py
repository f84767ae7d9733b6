"""Meta-test evaluation: adapt on each assay's support, score its query (squared Pearson r per assay)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from assayfew.metrics import mse, r2_pearson, summarize
from assayfew.tasks import Task, TaskSet

TRN, TST = 1, 2

Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def evaluation_episodes(taskset: TaskSet, *, support_k: int | None = None, seed: int = 0,
                        default_k: int = 32, min_query: int = 5) -> list[Task]:
    """Fixed, seeded episodes for evaluation.

    Assays with a TRN/TST split: support = TRN (or K drawn from TRN), query = TST.
    Assays without: support = K random compounds (K = support_k or default_k), query = the rest.
    Assays too small to leave `min_query` query compounds are skipped.
    """
    episodes: list[Task] = []
    for i, assay_id in enumerate(taskset.assay_ids):
        x, y, split = taskset.assay(i)
        rng = np.random.default_rng([seed, i])
        trn, tst = np.flatnonzero(split == TRN), np.flatnonzero(split == TST)
        if len(trn) and len(tst):
            support = trn if support_k is None or support_k >= len(trn) else rng.choice(trn, support_k, replace=False)
            query = tst
        else:
            order = rng.permutation(len(y))
            k = min(support_k or default_k, len(y) - min_query)
            support, query = order[:k], order[k:]
        if len(support) < 2 or len(query) < min_query:
            continue
        reference = None if taskset.reference is None else taskset.assay_reference(i)[query]
        episodes.append(Task(assay_id=assay_id, support_x=x[support], support_y=y[support],
                             query_x=x[query], query_y=y[query], query_reference=reference))
    return episodes


@dataclass
class EvaluationResult:
    per_assay: pd.DataFrame
    summary: dict


Score = Callable[[np.ndarray, np.ndarray], float]
#: The drug benchmark's episode scores (the first one is summarised).
REGRESSION_SCORES: dict[str, Score] = {"r2": r2_pearson, "mse": mse}


def evaluate_episodes(episodes: Sequence[Task], predictor: Predictor, *, scores: dict[str, Score] | None = None,
                      n_boot: int = 2000, seed: int = 0) -> EvaluationResult:
    """Score a predictor (support_x, support_y, query_x) → query predictions on every episode, with each of
    `scores` (name → score(query_y, prediction); default squared Pearson r and MSE); the summary (mean,
    median, bootstrap CIs) is over the first score."""
    return evaluate_tasks(episodes, lambda t: predictor(t.support_x, t.support_y, t.query_x), scores=scores,
                          n_boot=n_boot, seed=seed)


def evaluate_tasks(episodes: Sequence[Task], predict: Callable[[Task], np.ndarray], *,
                   scores: dict[str, Score] | None = None, n_boot: int = 2000, seed: int = 0) -> EvaluationResult:
    """`evaluate_episodes` for a predictor that sees the whole episode (e.g. `reference_prediction`)."""
    scores = REGRESSION_SCORES if scores is None else scores
    if not scores:
        raise ValueError("evaluate_episodes: no scores given")
    rows = []
    for task in episodes:
        pred = predict(task)
        rows.append({"assay_id": task.assay_id, "n_support": len(task.support_y), "n_query": len(task.query_y)}
                    | {name: score(task.query_y, pred) for name, score in scores.items()})
    per_assay = pd.DataFrame(rows, columns=["assay_id", "n_support", "n_query", *scores])
    first = next(iter(scores))
    return EvaluationResult(per_assay=per_assay, summary=summarize(per_assay[first].to_numpy(), n_boot=n_boot,
                                                                   seed=seed))


def with_reference(episodes: Sequence[Task]) -> list[Task]:
    """The episodes whose every query compound has a reference prediction (e.g. pQSAR's, from the SI)."""
    return [t for t in episodes if t.query_reference is not None and bool(np.isfinite(t.query_reference).all())]


def reference_prediction(task: Task) -> np.ndarray:
    """The reference model's predictions of the episode's query (for `evaluate_tasks` on `with_reference`)."""
    if task.query_reference is None:
        raise ValueError(f"assay {task.assay_id}: no reference predictions")
    return np.asarray(task.query_reference, dtype=np.float64)


def coverage(requested: Sequence[str], test_set: TaskSet, episodes: Sequence[Task]) -> dict:
    """Which meta-test assays were scored: {"evaluated": n, "skipped": ids in the corpus without an episode
    (too few compounds: fewer than 2 support or `min_query` query), "absent": requested ids not in the corpus}."""
    present = set(test_set.assay_ids)
    scored = {t.assay_id for t in episodes}
    return {"evaluated": len(scored), "skipped": [a for a in test_set.assay_ids if a not in scored],
            "absent": [a for a in dict.fromkeys(requested) if a not in present]}
