"""One meta-iteration's host and device work: episodes → padded batch and mixing plan (host) → meta-gradient
(device), shared out over the ranks of a distributed job (see `assayfew.distributed`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

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
                  widths: tuple[int, int] | None = None, dropout: BitDropout | None = None) -> TaskBatch:
    """Padded meta-batch of episodes (assay, support rows, query rows) from `EpisodeSampler.sample_rows`,
    each task's labels mapped with its own support statistics. Inputs are gathered straight from the task
    set's fingerprint table and their sparse form from its stored on-bits (no dense-to-sparse pass);
    the result equals `pad_tasks` of the materialised, scaled Tasks (padded to `widths` = (support, query)
    when given, else to the longest episode). Valid-row indices are attached (no device sync later).
    `dropout`: clear a random share of each compound's set bits (training augmentation; see `BitDropout`)."""
    if not episodes:
        raise ValueError("episode_batch: no episodes")
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
        lens = indptr[fp + 1] - indptr[fp]
        starts = np.repeat(indptr[fp] - (np.cumsum(lens) - lens), lens)
        cols = bit_ids[starts + np.arange(int(lens.sum()))]
        rows = np.repeat(flat, lens)
        if dropout is not None and dropout.rate > 0:
            task_bits = np.bincount(np.repeat(np.arange(n_tasks), [len(p) for p in parts]), weights=lens,
                                    minlength=n_tasks).astype(np.int64)
            keep = dropout.keep(task_bits, pick)
            x[rows[~keep], cols[~keep]] = 0.0
            rows, cols = rows[keep], cols[keep]
        sparse = SparseRows.from_coordinates(torch.from_numpy(rows), torch.from_numpy(cols), n_tasks * width, bits)
        out[which] = (torch.from_numpy(x).view(n_tasks, width, bits), torch.from_numpy(y),
                      torch.from_numpy(mask), sparse, torch.from_numpy(flat))
    batch = TaskBatch(out["s"][0], out["s"][1], out["s"][2], out["q"][0], out["q"][1], out["q"][2])
    for which in ("s", "q"):
        batch.set_sparse_rows(which, out[which][3])
        batch.set_valid_rows(which, out[which][4])
    return batch


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
              dist: DistContext, bit_dropout: float = 0.0) -> torch.Tensor:
    """Accumulate the meta-gradient of the global meta-batch `episodes` into the learner's `.grad` and
    return this rank's share of the loss (detached, on `device`; sum over ranks = the batch's loss).

    The mixing plan is drawn on the host from the global batch's masks (so it is the same on every rank
    and needs no device sync); each rank builds and moves only its share of the tasks, padded to the
    global widths, and the gradients are summed over the ranks. `bit_dropout`: see `BitDropout` (its seed is
    drawn from `generator` only when the rate is positive, so runs without it draw as before)."""
    widths = (max(len(ep[1]) for ep in episodes), max(len(ep[2]) for ep in episodes))
    plan = mixer.sample(episode_masks(episodes, widths), learner.model.n_layers, generator)
    start, stop = dist.share(len(episodes))
    dropout = (BitDropout(bit_dropout, int(torch.randint(0, 2**62, (1,), generator=generator)), start)
               if bit_dropout > 0 else None)
    host = episode_batch(taskset, episodes[start:stop], label_scaling, min_std, widths=widths, dropout=dropout)
    batch = to_device(host, device)
    plan = plan.tasks(start, stop).to(device, non_blocking=device.type == "cuda")
    loss, _ = learner.meta_loss(batch, mixer, generator=generator, epoch=epoch, plan=plan)
    if dist.active:
        loss = loss * ((stop - start) / len(episodes))
    loss.backward()
    dist.all_reduce_grads(learner.parameters())
    return loss.detach()
