"""Synthetic few-shot regression tasks (random binary fingerprints) for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["random_fingerprint_tasks"]


def random_fingerprint_tasks(sizes: Sequence[tuple[int, int]], dim: int = 1024, *, seed: int = 0,
                             density: float = 0.3, offset: float = 6.5, noise: float = 0.1,
                             ) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Tasks [(xs, ys, xq, yq)] with sizes [(n_support, n_query)]: binary inputs with bit probability
    `density`, labels = a shared random linear function (scaled to unit-ish spread) + offset + noise."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g) / (density * dim) ** 0.5
    tasks = []
    for ns, nq in sizes:
        xs = (torch.rand(ns, dim, generator=g) < density).float()
        xq = (torch.rand(nq, dim, generator=g) < density).float()
        ys = xs @ w + offset + noise * torch.randn(ns, generator=g)
        yq = xq @ w + offset + noise * torch.randn(nq, generator=g)
        tasks.append((xs, ys, xq, yq))
    return tasks
