"""The pose benchmark on the core's one training loop (`assayfew.loop.fit`): PoseNet + MAML / ANIL / MetaSGD
+ a mixer on K-shot pose tasks (squared error on azimuth × 10).

`PoseTrainConfig` is the run config (config.toml); `PoseBenchmark` gives the loop its meta-batches (tasks
of the training objects, seeded by (seed, epoch)) and validates on held-out training objects (negative MSE
over fixed tasks, higher is better; the best epoch is kept in RUN_DIR/model). `evaluate_pose` scores a
learner over seeded meta-test tasks: MSE with a 95% confidence interval, tasks adapted in batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from assayfew.loop import HostBatches, Reporter, TrainResult, check_keep_epoch, fit, load_fitted, resolve_device
from assayfew.meta import LEARNERS, MIXERS
from assayfew.meta.config import CoreConfig, Part
from assayfew.meta.learners import MetaLearner
from assayfew.meta.registry import option_names
from assayfew.metrics import mean_ci95
from assayfew.pose.data import PoseSet
from assayfew.pose.episodes import LABEL_SCALE, PoseSampler
from assayfew.provenance import stamp
from assayfew.splits import held_out_indices

__all__ = ["PoseTrainConfig", "PoseBenchmark", "train_pose", "evaluate_pose", "load_pose_model", "split_objects",
           "held_out_objects", "trained_objects"]


@dataclass
class PoseTrainConfig:
    """Everything that defines a pose meta-training run. Defaults: MR-MAML's pose settings (meta-batch 10,
    5 inner steps at rate 0.01, outer rate 0.001) with a CPU-sized network."""

    k_shot: int = 10
    query: int = 10  # query views per training task
    algo: str = "maml"  # maml | anil | metasgd
    mix: str = "metamix"
    alpha: float = 0.5
    beta: float = 0.5
    layers: tuple[int, ...] | None = None  # mixing positions (default: every position below the output)
    epochs: int = 5
    iters: int = 100
    meta_batch: int = 10
    inner_steps: int = 5
    eval_steps: int = 5
    inner_lr: float = 0.01
    outer_lr: float = 0.001
    min_outer_lr: float = 0.001
    grad_clip: float = 0.0
    first_order: bool = False
    encoder: tuple[int, ...] = (8, 16, 16, 16)  # channels of the stride-2 encoder convolutions (not adapted)
    filters: int = 16  # channels of the adapted conv blocks
    blocks: int = 2
    regularizer: str = "none"  # assayfew.meta.regularizers: none|weight_decay|cavia|meta_dropout|mr_maml|taml
    regularizer_options: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.1  # training objects held out for model selection
    val_episodes: int = 100
    keep_epoch: int | None = None  # keep this epoch (0-based) and stop after it; None: the best on validation
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoseTrainConfig:
        """Validated: unknown options, and mixer options the chosen mixer does not have set to anything but
        their default, are errors."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown pose training option(s): {', '.join(unknown)}")
        values = dict(data)
        for key in ("layers", "encoder"):
            if values.get(key) is not None:
                values[key] = tuple(int(v) for v in values[key])
        cfg = cls(**values)
        check_keep_epoch(cfg.keep_epoch, cfg.epochs)
        if min(cfg.k_shot, cfg.query, cfg.epochs, cfg.iters, cfg.meta_batch, cfg.inner_steps, cfg.eval_steps,
               cfg.val_episodes) < 1:
            raise ValueError("pose training: k_shot, query, epochs, iters, meta_batch, inner_steps, eval_steps and "
                             "val_episodes must be >= 1")
        if not 0.0 < cfg.val_fraction < 1.0:
            raise ValueError("pose training: val_fraction must lie in (0, 1)")
        if not isinstance(cfg.regularizer_options, dict):
            raise ValueError("regularizer_options must be a table of the regularizer's options")
        core = cfg.core(size=128)  # validates the parts and their options
        if core.regularizer is not None:
            core.build_learner()  # and the regularizer's values, and that it suits the learner and model
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if v is not None and (k != "regularizer_options" or v)}

    def check_data(self, data: PoseSet) -> None:
        """Fail early unless the network fits `data`'s images and every object has K + query views."""
        self.core(data.size).build_model()
        PoseSampler(data, self.k_shot, self.query)

    def core(self, size: int) -> CoreConfig:
        """The regression kind + PoseNet (`size`-pixel images) + learner + mixer these options describe."""
        model = {"image_size": size, "encoder": list(self.encoder), "filters": self.filters,
                 "n_blocks": self.blocks, "n_steps": max(self.inner_steps, self.eval_steps),
                 "out_bias": LABEL_SCALE / 2}
        layers = self.layers if self.layers is not None else tuple(range(len(self.encoder) + self.blocks + 1))
        learner: dict[str, Any] = {"inner_steps": self.inner_steps, "inner_lr": self.inner_lr,
                                   "first_order_epochs": self.epochs if self.first_order else 0}
        missing = sorted(set(learner) - set(option_names(LEARNERS.get(self.algo))))
        if missing:
            raise ValueError(f"learner {self.algo!r} cannot run pose tasks (lacks {', '.join(missing)})")
        own = option_names(MIXERS.get(self.mix))
        mixer: dict[str, Any] = {"alpha": self.alpha, "beta": self.beta, "layers": list(layers)}
        for key in list(mixer):
            if key not in own:
                if key != "layers" and getattr(self, key) != getattr(PoseTrainConfig(), key):
                    raise ValueError(f"pose training option {key} = {getattr(self, key)!r} is not used by mixer "
                                     f"{self.mix!r}")
                if key == "layers" and self.layers is not None:
                    raise ValueError(f"pose training option layers is not used by mixer {self.mix!r}")
                del mixer[key]
        return CoreConfig(kind=Part("regression", {}), model=Part("pose", model), learner=Part(self.algo, learner),
                          mixer=Part(self.mix, mixer),
                          regularizer=Part(self.regularizer, dict(self.regularizer_options)))


def held_out_objects(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded `fraction` of n objects held out for validation (at least one each side)."""
    return held_out_indices(n, fraction, seed, what="objects")


def split_objects(data: PoseSet, fraction: float, seed: int) -> tuple[PoseSet, PoseSet]:
    """(training, held-out) objects of `data` (`held_out_objects`)."""
    held = held_out_objects(data.n_objects, fraction, seed)
    return data.subset(np.setdiff1d(np.arange(data.n_objects), held)), data.subset(held)


def trained_objects(data: PoseSet, model_config: dict[str, Any]) -> PoseSet:
    """The objects of `data` (the model's training data) it was meta-trained on: all but its validation ones."""
    training = model_config.get("training", {})
    n = int(training.get("n_train_objects", -1)) + int(training.get("n_val_objects", 0))
    if n != data.n_objects or "val_fraction" not in training:
        raise ValueError(f"{data.source}: {data.n_objects} objects, but the model was trained on data of {n}")
    held = held_out_objects(n, float(training["val_fraction"]), int(training["seed"]))
    return data.subset(np.setdiff1d(np.arange(n), held))


class PoseBenchmark(HostBatches):
    """The pose benchmark as the training loop sees it (`assayfew.loop.Benchmark`)."""

    metrics = ("val_neg_mse", "val_mse_ci95")

    def __init__(self, cfg: PoseTrainConfig, train: PoseSet, val: PoseSet) -> None:
        self.cfg, self.train, self.val = cfg, train, val

    def model_info(self) -> dict[str, Any]:
        c = self.cfg
        return {"pose": {"size": self.train.size, "label_scale": LABEL_SCALE},
                "episodes": {"k_shot": c.k_shot, "query": c.query, "eval_steps": c.eval_steps},
                "training": {"source": self.train.source, "n_train_objects": self.train.n_objects,
                             "n_val_objects": self.val.n_objects, "val_fraction": c.val_fraction,
                             "seed": c.seed}} | stamp()

    def sampler(self, epoch: int) -> PoseSampler:
        """The epoch's task sampler over the training objects, seeded by (seed, epoch)."""
        c = self.cfg
        return PoseSampler(self.train, c.k_shot, c.query, seed=c.seed * 1_000_003 + epoch)

    def validate(self, learner: MetaLearner, model_config: dict[str, Any]) -> dict[str, float]:
        c = self.cfg
        result = evaluate_pose(learner, self.val, k_shot=c.k_shot, query=c.query, episodes=c.val_episodes,
                               steps=c.eval_steps, seed=c.seed, device=c.device)
        return {"val_neg_mse": -result["mse"], "val_mse_ci95": result["ci95"]}


def train_pose(cfg: PoseTrainConfig, data: PoseSet, run_dir: Path, *, resume: bool = False,
               reporter: Reporter | None = None) -> TrainResult:
    """Meta-train on `data` minus the held-out validation objects; RUN_DIR as `assayfew.loop.fit` writes it."""
    cfg.check_data(data)
    train, val = split_objects(data, cfg.val_fraction, cfg.seed)
    return fit(cfg.core(data.size), PoseBenchmark(cfg, train, val), cfg, run_dir, run_config=cfg.to_dict(),
               resume=resume, reporter=reporter)


def load_pose_model(model_dir: Path) -> tuple[MetaLearner, dict]:
    """A trained pose learner and its model config (safetensors + JSON; no pickles)."""
    return load_fitted(model_dir, "pose", "pose", "a pose model")


def evaluate_pose(learner: MetaLearner, data: PoseSet, *, k_shot: int, query: int = 10, episodes: int = 1000,
                  steps: int | None = None, seed: int = 0, device: str = "cpu", chunk: int = 50,
                  progress: Reporter | None = None) -> dict:
    """Mean squared error (labels × 10) ± 95% CI over seeded K-shot tasks of `data`: adapt on each support set
    (`steps` inner steps; tasks adapted `chunk` at a time), predict its query views."""
    if episodes < 1:
        raise ValueError("evaluation: episodes must be >= 1")
    size = getattr(learner.model, "image_size", data.size)
    if data.size != size:
        raise ValueError(f"{data.source}: {data.size}×{data.size} images, the model takes {size}×{size}")
    dev = resolve_device(device)
    was_training = learner.training
    learner = learner.to(dev).eval()
    progress = progress or Reporter()
    progress.start(episodes, 0)
    sampler = PoseSampler(data, k_shot, query, seed=seed)
    errors: list[np.ndarray] = []
    for start in range(0, episodes, chunk):
        b = sampler.batch(min(chunk, episodes - start)).to(dev)
        pred = learner.predict(learner.adapt(b.xs, b.ys, steps=steps), b.xq)
        errors.append((pred - b.yq).square().mean(1).double().cpu().numpy())
        progress.iteration(0, float("nan"), len(errors[-1]))
    learner.train(was_training)
    mse, half = mean_ci95(np.concatenate(errors))
    return {"mse": mse, "ci95": half, "episodes": episodes, "k_shot": k_shot, "query": query,
            "steps": learner.inner_steps if steps is None else steps, "seed": seed, "source": data.source,
            "label_scale": LABEL_SCALE}
