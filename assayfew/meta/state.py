"""Learner state as plain tensors (for safetensors); no pickles."""

from __future__ import annotations

import torch
from torch import Tensor

from assayfew.meta.learners import MetaLearner

__all__ = ["learner_state", "load_learner_state"]


def learner_state(learner: MetaLearner) -> dict[str, Tensor]:
    """All meta-parameters as contiguous CPU tensors (keys as in `learner.state_dict()`)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in learner.state_dict().items()}


def load_learner_state(learner: MetaLearner, tensors: dict[str, Tensor]) -> None:
    """Load tensors saved by `learner_state` (strict: same keys and shapes, else ValueError)."""
    own = learner.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        raise ValueError(f"learner state mismatch: missing {missing}, unexpected {extra}")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"learner state {k!r}: shape {tuple(v.shape)} != expected {tuple(own[k].shape)}")
    with torch.no_grad():
        learner.load_state_dict({k: v.to(own[k].device, own[k].dtype) for k, v in tensors.items()})
