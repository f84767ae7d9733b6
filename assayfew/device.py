"""Where tensors live: one device story for training, evaluation and prediction.

Host-side work (episode sampling, fingerprint gathering, mixing plans) stays on the CPU; a finished
meta-batch is copied to the learner's device in one go (from pinned memory, without blocking, on CUDA).
"""

from __future__ import annotations

import os
import re

import torch

from assayfew.meta.batch import TaskBatch

__all__ = ["DEVICE_HELP", "resolve_device", "to_device"]

DEVICE_HELP = "cpu | cuda | cuda:N | auto (CUDA when available; under torchrun the rank's local GPU)"
_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The device named by `--device`: "auto" is CUDA when available (under torchrun, the GPU of the
    process's LOCAL_RANK, modulo the GPUs there are), else the CPU; "cuda" under torchrun likewise.
    A clear ValueError for a malformed name or a CUDA device this machine does not have."""
    if isinstance(name, torch.device):
        name = str(name)
    text = str(name).strip().lower()
    if not _PATTERN.match(text):
        raise ValueError(f"--device must be {DEVICE_HELP}; got {name!r}")
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available here (torch {torch.__version__}"
                         f"{'' if torch.version.cuda else ', a CPU-only build'}); use --device cpu")
    if text == "cuda":  # under torchrun: the local rank's GPU (ranks share GPUs when there are more of them)
        text = f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    index = int(text.split(":")[1])
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(text)


def to_device(batch: TaskBatch, device: torch.device) -> TaskBatch:
    """`batch` on `device`: unchanged on the CPU; on CUDA through pinned memory with non-blocking copies
    (the host goes on sampling the next batch while this one is copied)."""
    if device.type == "cpu":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)
