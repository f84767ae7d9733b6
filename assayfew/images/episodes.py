"""Seeded N-way K-shot episodes over an `ImageSet`, mutually exclusive or not.

- Mutually exclusive (the usual setting): each episode draws N classes and shuffles which label each gets.
- Non-mutually-exclusive (NME; Yin et al., 2020, used by MetaMix): the classes are split once (seeded)
  into N fixed label groups; an episode draws one class per group and that class always gets its group's
  label, so a model could memorise class -> label instead of adapting.
Batches are `TaskBatch`es with images flattened to (T, N, C*H*W), scaled to [0, 1], and labels 0..N-1 as
class indices (T, N) (the classification task kind one-hot encodes them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from assayfew.images.data import ImageSet
from assayfew.meta.batch import TaskBatch

__all__ = ["Episode", "EpisodeSampler", "episode_batch"]


@dataclass
class Episode:
    """Indices into the image set and labels (0..N-1) of one task's support and query images."""

    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray
    classes: np.ndarray  # class index of each label 0..N-1


class EpisodeSampler:
    """Draws N-way K-shot episodes with `query` images per class; `nme=True` for fixed label groups."""

    def __init__(self, images: ImageSet, n_way: int, k_shot: int, query: int, *, nme: bool = False,
                 seed: int = 0, group_seed: int | None = None) -> None:
        """`seed` drives the episodes; `group_seed` (default `seed`) the NME label groups, so samplers with
        different episode seeds can share one grouping."""
        if n_way < 2 or k_shot < 1 or query < 1:
            raise ValueError("episodes: need n_way >= 2, k_shot >= 1 and query >= 1")
        counts = images.class_counts()
        need = k_shot + query
        short = [images.classes[c] for c in np.flatnonzero(counts < need)]
        if short:
            raise ValueError(f"{images.source}: {len(short)} class(es) have fewer than {need} images "
                             f"({k_shot}-shot + {query} query), e.g. {short[0]!r} with "
                             f"{int(counts[images.classes.index(short[0])])}")
        if images.n_classes < n_way:
            raise ValueError(f"{images.source}: {images.n_classes} classes, fewer than {n_way}-way")
        self.images, self.n_way, self.k_shot, self.query, self.nme = images, n_way, k_shot, query, nme
        self.by_class = [np.flatnonzero(images.labels == c) for c in range(images.n_classes)]
        self.rng = np.random.default_rng(seed)
        order = np.random.default_rng([seed if group_seed is None else group_seed, 1]).permutation(images.n_classes)
        #: NME: the classes of label group g (fixed for the sampler's life)
        self.groups = [np.sort(order[g::n_way]) for g in range(n_way)]

    def label_of(self, cls: int) -> int:
        """NME: the one label class `cls` always gets."""
        return next(g for g, members in enumerate(self.groups) if cls in members)

    def episode(self) -> Episode:
        rng = self.rng
        if self.nme:
            classes = np.array([rng.choice(members) for members in self.groups])
        else:
            classes = rng.choice(self.images.n_classes, self.n_way, replace=False)
        support, query = [], []
        for c in classes:
            pick = rng.choice(self.by_class[c], self.k_shot + self.query, replace=False)
            support.append(pick[: self.k_shot])
            query.append(pick[self.k_shot:])
        labels = np.arange(self.n_way)
        return Episode(np.concatenate(support), np.repeat(labels, self.k_shot), np.concatenate(query),
                       np.repeat(labels, self.query), classes)

    def batch(self, n_tasks: int) -> TaskBatch:
        return episode_batch(self.images, [self.episode() for _ in range(n_tasks)])


def _stack(images: ImageSet, rows: list[np.ndarray]) -> torch.Tensor:
    x = images.images[np.stack(rows)]  # (T, N, H, W, C) uint8
    return torch.from_numpy(x).permute(0, 1, 4, 2, 3).reshape(*x.shape[:2], -1).float().div_(255.0)


def episode_batch(images: ImageSet, episodes: list[Episode]) -> TaskBatch:
    """Episodes (same sizes) as one `TaskBatch`: x (T, N, C*H*W) in [0, 1], y class indices (T, N)."""
    if not episodes:
        raise ValueError("episode_batch: no episodes")
    ys = torch.from_numpy(np.stack([e.support_labels for e in episodes])).float()
    yq = torch.from_numpy(np.stack([e.query_labels for e in episodes])).float()
    xs, xq = _stack(images, [e.support for e in episodes]), _stack(images, [e.query for e in episodes])
    return TaskBatch(xs, ys, torch.ones(ys.shape), xq, yq, torch.ones(yq.shape))
