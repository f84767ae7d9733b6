"""Seeded K-shot pose tasks: one object per task, K support views and `query` query views with their angles.

Tasks are non-mutually-exclusive by construction: an object keeps its canonical frame in every task it
appears in, so a model could memorise the training objects instead of adapting. Batches are `TaskBatch`es
with images flattened to (T, N, size²) in [0, 1] and labels = normalised azimuth × `LABEL_SCALE` (10, as
MR-MAML's code scales them).
"""

from __future__ import annotations

import numpy as np
import torch

from assayfew.data import DataFormatError
from assayfew.meta.batch import TaskBatch
from assayfew.pose.data import PoseSet

__all__ = ["LABEL_SCALE", "PoseSampler"]

LABEL_SCALE = 10.0


class PoseSampler:
    """Draws tasks from `data`: a uniformly drawn object, K + query distinct views of it."""

    def __init__(self, data: PoseSet, k_shot: int, query: int, *, seed: int = 0) -> None:
        if k_shot < 1 or query < 1:
            raise ValueError("pose tasks: need k_shot >= 1 and query >= 1")
        if data.n_views < k_shot + query:
            raise DataFormatError(data.source, None, None, f"{data.n_views} views per object, fewer than "
                                  f"{k_shot}-shot + {query} query views")
        self.data, self.k_shot, self.query = data, k_shot, query
        self.rng = np.random.default_rng(seed)

    def batch(self, n_tasks: int) -> TaskBatch:
        d, k = self.data, self.k_shot
        objects = self.rng.integers(0, d.n_objects, n_tasks)
        views = np.stack([self.rng.choice(d.n_views, k + self.query, replace=False) for _ in range(n_tasks)])
        x = torch.from_numpy(d.images[objects[:, None], views]).float().div_(255.0)
        y = torch.from_numpy(d.angles[objects[:, None], views]).float().mul_(LABEL_SCALE)
        xs, xq, ys, yq = x[:, :k], x[:, k:], y[:, :k], y[:, k:]
        return TaskBatch(xs, ys, torch.ones(ys.shape), xq, yq, torch.ones(yq.shape))
