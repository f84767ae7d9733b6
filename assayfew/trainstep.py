"""One meta-iteration's host and device work: episodes → padded batch and mixing plan (host) → meta-gradient
(device), shared out over the ranks of a distributed job (see `assayfew.distributed`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from assayfew.baselines import ridge_fit
from assayfew.device import to_device
from assayfew.distributed import DistContext
from assayfew.meta.batch import TaskBatch
from assayfew.meta.mixing import Mixer
from assayfew.meta.sparse import SparseRows
from assayfew.scaling import fit_scaling
from assayfew.tasks import TaskSet

#: (assay index, support rows, query rows), as `EpisodeSampler.sample_rows` gives them
Episode = tuple[int, np.ndarray, np.ndarray]


def episode_batch(taskset: TaskSet, episodes: Sequence[Episode], mode: str, min_std: float, *,
                  widths: tuple[int, int] | None = None, dropout: BitDropout | None = None,
                  partners: Sequence[Partner | None] | None = None, ridge_share: float = 0.0) -> TaskBatch:
    """Padded meta-batch of episodes (assay, support rows, query rows) from `EpisodeSampler.sample_rows`,
    each task's labels mapped with its own support statistics. Inputs are gathered straight from the task
    set's fingerprint table and their sparse form from its stored on-bits (no dense-to-sparse pass);
    the result equals `pad_tasks` of the materialised, scaled Tasks (padded to `widths` = (support, query)
    when given, else to the longest episode). Valid-row indices are attached (no device sync later).
    `dropout`: clear a random share of each compound's set bits (training augmentation; see `BitDropout`).
    `partners`: one entry per episode, None or the task it is interpolated with (see `TaskInterpolation`).
    `ridge_share` w > 0: query labels become (y - w·r) / (1 - w), r = fingerprint ridge fitted on the episode's
    support (see `ridge_residual_labels`), before any interpolation or dropout."""
    if not episodes:
        raise ValueError("episode_batch: no episodes")
    if partners is not None and len(partners) != len(episodes):
        raise ValueError("episode_batch: one partner entry per episode")
    mixed = partners is not None and any(p is not None for p in partners)
    if mixed and dropout is not None and dropout.rate > 0:
        raise ValueError("episode_batch: bit dropout and task interpolation do not combine")
    indptr, bit_ids = taskset.bit_index()
    n_tasks, bits = len(episodes), taskset.spec.bits
    out: dict[str, tuple] = {}
    scalings = [fit_scaling(taskset.values[s], mode, min_std) for _, s, _ in episodes]
    for which, pick in (("s", 1), ("q", 2)):
        parts = [ep[pick] for ep in episodes]
        width = max(len(p) for p in parts) if widths is None else widths[pick - 1]
        if width == 0:
            raise ValueError("episode_batch: an episode has an empty support or query")
        y = np.zeros((n_tasks, width), dtype=np.float32)
        mask = np.zeros((n_tasks, width), dtype=np.float32)
        for t, (p, sc) in enumerate(zip(parts, scalings)):
            y[t, : len(p)] = sc.forward(taskset.values[p])
            mask[t, : len(p)] = 1.0
        flat = np.concatenate([t * width + np.arange(len(p)) for t, p in enumerate(parts)])
        fp = taskset.fp_rows[np.concatenate(parts)]
        x = np.zeros((n_tasks * width, bits), dtype=np.float32)
        x[flat] = taskset.fingerprints[fp]
        if which == "q" and ridge_share > 0:
            y = ridge_residual_labels(taskset, episodes, scalings, y, ridge_share)
        lens, cols = _set_bits(indptr, bit_ids, fp)
        rows = np.repeat(flat, lens)
        vals = None
        if mixed:
            assert partners is not None
            x, y, rows, cols, vals = _interpolate(taskset, partners, pick, width, mode, min_std, x, y,
                                                  rows, cols)
        if dropout is not None and dropout.rate > 0:
            task_bits = np.bincount(np.repeat(np.arange(n_tasks), [len(p) for p in parts]), weights=lens,
                                    minlength=n_tasks).astype(np.int64)
            keep = dropout.keep(task_bits, pick)
            x[rows[~keep], cols[~keep]] = 0.0
            rows, cols = rows[keep], cols[keep]
        sparse = SparseRows.from_coordinates(torch.from_numpy(rows), torch.from_numpy(cols), n_tasks * width, bits,
                                             None if vals is None else torch.from_numpy(vals))
        out[which] = (torch.from_numpy(x).view(n_tasks, width, bits), torch.from_numpy(y),
                      torch.from_numpy(mask), sparse, torch.from_numpy(flat))
    batch = TaskBatch(out["s"][0], out["s"][1], out["s"][2], out["q"][0], out["q"][1], out["q"][2])
    for which in ("s", "q"):
        batch.set_sparse_rows(which, out[which][3])
        batch.set_valid_rows(which, out[which][4])
    return batch


def ridge_residual_labels(taskset: TaskSet, episodes: Sequence[Episode], scalings: Sequence, query_y: np.ndarray,
                          share: float, alpha: float = 10.0) -> np.ndarray:
    """Query labels for training a meta-model that will be blended with fingerprint ridge at share `share`:
    (y - share·r) / (1 - share), r = ridge (penalty `alpha`, as the blend's) fitted on the episode's scaled
    support labels. Its squared error is that of the blend (1 - share)·f + share·r, divided by (1 - share)²."""
    if not 0 < share < 1:
        raise ValueError(f"ridge share must lie in (0, 1), got {share}")
    out = query_y.copy()
    for t, ((_, support, query), sc) in enumerate(zip(episodes, scalings)):
        fit = ridge_fit(taskset.fingerprints[taskset.fp_rows[support]], sc.forward(taskset.values[support]),
                        alpha=alpha)
        r = fit.predict(taskset.fingerprints[taskset.fp_rows[query]])
        out[t, : len(query)] = (query_y[t, : len(query)] - share * r) / (1.0 - share)
    return out


def _set_bits(indptr: np.ndarray, bit_ids: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number of set bits of each fingerprint row in `fp`, and their column ids, row after row."""
    lens = indptr[fp + 1] - indptr[fp]
    starts = np.repeat(indptr[fp] - (np.cumsum(lens) - lens), lens)
    return lens, bit_ids[starts + np.arange(int(lens.sum()))]


@dataclass(frozen=True)
class Partner:
    """The task an episode is interpolated with: its assay and support rows (for its label scaling), the
    partner rows paired with the episode's support and query rows (same lengths), and the episode's share λ."""

    assay: int
    support: np.ndarray
    paired_support: np.ndarray
    paired_query: np.ndarray
    lam: float


@dataclass(frozen=True)
class TaskInterpolation:
    """Task interpolation for training episodes (MLTI; Yao et al., ICLR 2022): with probability `rate`, a task
    of the meta-batch becomes λ·itself + (1 − λ)·another task of the batch, λ ~ Beta(`alpha`, `alpha`) per
    task. Row i of its support (query) is mixed with a random support (query) row of the partner, inputs and
    labels alike (each task's labels scaled by its own support). New tasks for a meta-learner that has few:
    MetaMix mixes within a task, this across tasks. Draws depend only on `seed` and the global batch."""

    rate: float
    alpha: float
    seed: int

    def draw(self, episodes: Sequence[Episode]) -> list[Partner | None]:
        """One entry per episode of the global meta-batch (None: left as it is). Needs two episodes or more."""
        rng = np.random.default_rng(self.seed)
        out: list[Partner | None] = []
        n = len(episodes)
        for t, (_, support, query) in enumerate(episodes):
            if n < 2 or rng.random() >= self.rate:
                out.append(None)
                continue
            j = int(rng.integers(n - 1))
            j += j >= t
            assay, p_support, p_query = episodes[j]
            out.append(Partner(int(assay), p_support, _pair(rng, p_support, len(support)),
                               _pair(rng, p_query, len(query)), float(rng.beta(self.alpha, self.alpha))))
        return out


def _pair(rng: np.random.Generator, rows: np.ndarray, n: int) -> np.ndarray:
    """n of `rows` in random order: without repeats when there are enough, else drawn with replacement."""
    if len(rows) >= n:
        return rows[rng.permutation(len(rows))[:n]]
    return rows[rng.integers(len(rows), size=n)]


def _interpolate(taskset: TaskSet, partners: Sequence[Partner | None], pick: int, width: int, mode: str,
                 min_std: float, x: np.ndarray, y: np.ndarray, rows: np.ndarray, cols: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mix the partners' rows into one part (pick 1 = support, 2 = query) of a padded batch: dense inputs x
    (T*width, D), scaled labels y (T, width), and the sparse coordinates (rows, cols) of x, which gain values
    (λ for own bits, 1 − λ for the partner's; a bit set in both appears twice and sums to 1)."""
    indptr, bit_ids = taskset.bit_index()
    share = np.ones(x.shape[0], dtype=np.float32)  # λ of each padded row
    extra_rows, extra_cols, extra_vals = [], [], []
    for t, p in enumerate(partners):
        if p is None:
            continue
        paired = p.paired_support if pick == 1 else p.paired_query
        n = len(paired)
        flat = t * width + np.arange(n)
        share[flat] = p.lam
        fp = taskset.fp_rows[paired]
        x[flat] = p.lam * x[flat] + (1.0 - p.lam) * taskset.fingerprints[fp]
        scaling = fit_scaling(taskset.values[p.support], mode, min_std)
        y[t, :n] = p.lam * y[t, :n] + (1.0 - p.lam) * scaling.forward(taskset.values[paired])
        lens, c = _set_bits(indptr, bit_ids, fp)
        extra_rows.append(np.repeat(flat, lens))
        extra_cols.append(c)
        extra_vals.append(np.full(len(c), 1.0 - p.lam, dtype=np.float32))
    all_rows = np.concatenate([rows, *extra_rows])
    order = np.argsort(all_rows, kind="stable")
    vals = np.concatenate([share[rows], *extra_vals]).astype(np.float32)
    return x, y, all_rows[order], np.concatenate([cols, *extra_cols])[order], vals[order]


@dataclass(frozen=True)
class BitDropout:
    """Input-bit dropout for training episodes: each set fingerprint bit of each support and query compound
    is cleared with probability `rate` (no rescaling: the input stays binary, like a fingerprint missing
    some substructures). Draws depend only on (`seed`, the task's index in the global meta-batch, support or
    query), so a distributed job drops the same bits as a single process."""

    rate: float
    seed: int
    first_task: int = 0

    def keep(self, bits_per_task: np.ndarray, part: int) -> np.ndarray:
        """Boolean keep-mask over the set bits of consecutive tasks (`bits_per_task[t]` bits for task t; at
        least one task)."""
        return np.concatenate([np.random.default_rng([self.seed, self.first_task + t, part]).random(int(n))
                               >= self.rate for t, n in enumerate(bits_per_task)])


def episode_masks(episodes: Sequence[Episode], widths: tuple[int, int]) -> TaskBatch:
    """A batch holding only the masks of `episodes` (features of width 0, labels 0): what mixers draw their
    plans from, built on the host without gathering any fingerprints."""
    n = len(episodes)
    masks = []
    for pick, width in ((1, widths[0]), (2, widths[1])):
        lens = np.array([len(ep[pick]) for ep in episodes])
        masks.append(torch.from_numpy((np.arange(width)[None, :] < lens[:, None]).astype(np.float32)))
    ms, mq = masks
    return TaskBatch(ms.new_zeros(n, widths[0], 0), torch.zeros_like(ms), ms,
                     mq.new_zeros(n, widths[1], 0), torch.zeros_like(mq), mq)


def meta_step(learner: torch.nn.Module, mixer: Mixer, taskset: TaskSet, episodes: Sequence[Episode], *,
              label_scaling: str, min_std: float, generator: torch.Generator, epoch: int, device: torch.device,
              dist: DistContext, bit_dropout: float = 0.0, task_mix: float = 0.0,
              task_mix_alpha: float = 0.5, ridge_share: float = 0.0) -> torch.Tensor:
    """Accumulate the meta-gradient of the global meta-batch `episodes` into the learner's `.grad` and
    return this rank's share of the loss (detached, on `device`; sum over ranks = the batch's loss).

    The mixing plan is drawn on the host from the global batch's masks (so it is the same on every rank
    and needs no device sync); each rank builds and moves only its share of the tasks, padded to the
    global widths, and the gradients are summed over the ranks. `bit_dropout`: see `BitDropout`; `task_mix`,
    `task_mix_alpha`: see `TaskInterpolation` (their seeds are drawn from `generator` only when the rate is
    positive, so runs without them draw as before); `ridge_share`: see `ridge_residual_labels`."""
    widths = (max(len(ep[1]) for ep in episodes), max(len(ep[2]) for ep in episodes))
    plan = mixer.sample(episode_masks(episodes, widths), learner.model.n_layers, generator)
    start, stop = dist.share(len(episodes))
    dropout = (BitDropout(bit_dropout, int(torch.randint(0, 2**62, (1,), generator=generator)), start)
               if bit_dropout > 0 else None)
    partners = None
    if task_mix > 0:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        partners = TaskInterpolation(task_mix, task_mix_alpha, seed).draw(episodes)[start:stop]
    host = episode_batch(taskset, episodes[start:stop], label_scaling, min_std, widths=widths, dropout=dropout,
                         partners=partners, ridge_share=ridge_share)
    batch = to_device(host, device)
    plan = plan.tasks(start, stop).to(device, non_blocking=device.type == "cuda")
    loss, _ = learner.meta_loss(batch, mixer, generator=generator, epoch=epoch, plan=plan)
    if dist.active:
        loss = loss * ((stop - start) / len(episodes))
    loss.backward()
    dist.all_reduce_grads(learner.parameters())
    return loss.detach()
