"""Learner state as plain tensors (for safetensors) and a JSON-able config to rebuild it; no pickles."""

from __future__ import annotations

import torch
from torch import Tensor

from assayfew.meta.config import CoreConfig
from assayfew.meta.learners import MetaLearner

__all__ = ["learner_state", "load_learner_state", "learner_config", "learner_from_config"]


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


def learner_config(learner: MetaLearner) -> dict:
    """JSON-able `CoreConfig` (without mixer) of a learner made by `build_learner`; `learner_from_config`
    rebuilds it (then load the tensors)."""
    return CoreConfig.of_learner(learner).to_dict()


def learner_from_config(config: dict) -> MetaLearner:
    """Inverse of `learner_config` (fresh parameters; use `load_learner_state` afterwards)."""
    return CoreConfig.from_dict(config).build_learner()
