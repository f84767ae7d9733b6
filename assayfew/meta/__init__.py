"""Meta-learning core: functional models, batched gradient-based learners, MetaMix-style mixers."""

from assayfew.meta.batch import TaskBatch, pad_tasks
from assayfew.meta.learners import LEARNERS, AdaptedParams, MetaLearner, build_learner
from assayfew.meta.mixing import MIXERS, Mixer, MixPlan, build_mixer
from assayfew.meta.model import MLP, FunctionalModel, masked_mse
from assayfew.meta.state import learner_config, learner_from_config, learner_state, load_learner_state

__all__ = ["TaskBatch", "pad_tasks", "LEARNERS", "AdaptedParams", "MetaLearner", "build_learner", "MIXERS",
           "Mixer", "MixPlan", "build_mixer", "MLP", "FunctionalModel", "masked_mse", "learner_state",
           "load_learner_state", "learner_config", "learner_from_config"]
