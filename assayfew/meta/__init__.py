"""Meta-learning core: task kinds, functional models, learners, mixers, registries and the config schema."""

from assayfew.meta.batch import TaskBatch, pad_tasks
from assayfew.meta.config import CoreConfig, Part
from assayfew.meta.kinds import KINDS, Classification, Regression, TaskKind, build_kind, masked_mse
from assayfew.meta.learners import LEARNERS, AdaptedParams, MetaLearner, build_learner
from assayfew.meta.memo import Memo
from assayfew.meta.mixing import MIXERS, Mixer, MixPlan, build_mixer
from assayfew.meta.model import MLP, MODELS, FunctionalModel, HeadFastPath, ModelBase, build_model
from assayfew.meta.regularizers import REGULARIZERS, Regularizer, build_regularizer
from assayfew.meta.conv4 import Conv4  # registers model "conv4"
from assayfew.meta.state import learner_config, learner_from_config, learner_state, load_learner_state

__all__ = ["TaskBatch", "pad_tasks", "CoreConfig", "Part", "KINDS", "Classification", "Regression", "TaskKind", "build_kind",
           "masked_mse", "LEARNERS", "AdaptedParams", "MetaLearner", "build_learner", "Memo", "MIXERS", "Mixer",
           "MixPlan", "build_mixer", "MLP", "Conv4", "MODELS", "FunctionalModel", "HeadFastPath", "ModelBase",
           "build_model", "REGULARIZERS", "Regularizer", "build_regularizer", "learner_state", "load_learner_state", "learner_config", "learner_from_config"]
