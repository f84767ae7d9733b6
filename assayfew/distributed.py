"""Data-parallel meta-training with torch.distributed (launched by torchrun): NCCL on GPUs, gloo on CPUs.

Every rank draws the same global meta-batch of episodes and the same mixing plan (same seeds), takes its
contiguous share of the tasks, and the meta-gradients are summed with one all-reduce per meta-iteration, each
rank's loss weighted by its share of the tasks. The meta-loss is a mean of independent per-task terms, so N
ranks with a global meta-batch B give the meta-gradient of one process with meta-batch B (up to float
rounding). An explicit all-reduce rather than DistributedDataParallel: the meta-loss is not a module's
`forward`, the shares may be uneven (B not a multiple of N), and one flat bucket per step is all DDP would do.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

__all__ = ["DistContext", "SINGLE", "init_from_env"]


@dataclass(frozen=True)
class DistContext:
    """This process's place in a (possibly one-process) training job."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 validates, reports and writes the run directory."""
        return self.rank == 0

    def share(self, n_tasks: int) -> tuple[int, int]:
        """This rank's contiguous slice [start, stop) of a meta-batch of `n_tasks` (sizes differ by <= 1)."""
        if n_tasks < self.world_size:
            raise ValueError(f"meta_batch {n_tasks} is smaller than the {self.world_size} ranks: every rank "
                             "needs at least one task")
        base, extra = divmod(n_tasks, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def all_reduce_grads(self, params: Iterable[torch.Tensor]) -> None:
        """Sum the gradients of `params` over the ranks (one flat all-reduce; missing gradients count as 0)."""
        if not self.active:
            return
        params = list(params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
            p.grad = g

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over the ranks (a copy; `t` itself when single-process)."""
        if not self.active:
            return t
        out = t.clone()
        dist.all_reduce(out)
        return out

    def broadcast_int(self, value: int) -> int:
        """Rank 0's `value` on every rank."""
        if not self.active:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64,
                         device=torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl"
                         else "cpu")
        dist.broadcast(t, src=0)
        return int(t.item())

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


SINGLE = DistContext()


def init_from_env(device: torch.device) -> DistContext:
    """Join the job torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT in the
    environment): NCCL when `device` is a GPU of its own, gloo on CPUs and when ranks share a GPU (NCCL
    refuses two ranks on one device). Without them (or WORLD_SIZE=1): one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if device.type == "cuda" and local_ranks <= torch.cuda.device_count():
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())
