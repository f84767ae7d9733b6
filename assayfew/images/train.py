"""The image benchmark on the core's one training loop (`assayfew.loop.fit`) and evaluator
(`assayfew.evaluate.evaluate_episodes`): Conv-4 + MAML / ANIL / MetaSGD + a mixer on N-way K-shot episodes.

`ImageTrainConfig` is the run config (config.toml); `ImageBenchmark` gives the loop its meta-batches
(episodes of the training classes, seeded by (seed, epoch)) and validates on held-out classes (accuracy
over fixed episodes; the best epoch is kept in RUN_DIR/model). `evaluate_images` scores a learner over
seeded meta-test episodes: accuracy with a 95% confidence interval.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assayfew.evaluate import evaluate_episodes
from assayfew.images.data import ImageSet, OneShotRun
from assayfew.images.episodes import EpisodeSampler
from assayfew.loop import HostBatches, Reporter, TrainResult, check_keep_epoch, fit, load_fitted, resolve_device
from assayfew.meta import LEARNERS, MIXERS
from assayfew.meta.config import CoreConfig, Part
from assayfew.meta.learners import MetaLearner
from assayfew.meta.registry import option_names
from assayfew.metrics import mean_ci95
from assayfew.provenance import stamp
from assayfew.splits import held_out_indices
from assayfew.tasks import Task

__all__ = ["ImageTrainConfig", "ImageBenchmark", "train_images", "evaluate_images", "evaluate_runs", "load_image_model",
           "accuracy_summary", "split_classes"]


@dataclass
class ImageTrainConfig:
    """Everything that defines an image meta-training run. Defaults: MAML's Omniglot settings (inner rate
    0.4, outer rate 0.001 constant, no gradient clipping) at a CPU-sized meta-batch."""

    n_way: int = 5
    k_shot: int = 1
    query: int = 15  # query images per class in training episodes
    nme: bool = True  # non-mutually-exclusive training episodes (fixed label groups)
    algo: str = "maml"  # maml | anil | metasgd
    mix: str = "metamix"
    alpha: float = 2.0
    beta: float = 2.0
    layers: tuple[int, ...] = (0, 1, 2, 3, 4)
    shuffle: bool = False  # MetaMix's Channel Shuffle (the official code's --shuffle)
    epochs: int = 5
    iters: int = 100
    meta_batch: int = 4
    inner_steps: int = 5
    eval_steps: int = 10
    inner_lr: float = 0.4
    outer_lr: float = 0.001
    min_outer_lr: float = 0.001
    grad_clip: float = 0.0
    first_order: bool = False
    filters: int = 64
    image_size: int | None = None  # resize images to this (default: 28 for Omniglot, 84 for MiniImagenet)
    batching: str = "loop"
    val_fraction: float = 0.15  # training classes held out for model selection
    val_episodes: int = 100
    keep_epoch: int | None = None  # keep this epoch (0-based) and stop after it; None: the best on validation
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageTrainConfig:
        """Validated: unknown options, and learner/mixer options the chosen part does not have set to
        anything but their default, are errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown image training option(s): {', '.join(unknown)}")
        values = dict(data)
        if "layers" in values:
            values["layers"] = tuple(int(v) for v in values["layers"])
        cfg = cls(**values)
        check_keep_epoch(cfg.keep_epoch, cfg.epochs)
        if min(cfg.epochs, cfg.iters, cfg.meta_batch, cfg.inner_steps, cfg.eval_steps, cfg.val_episodes) < 1:
            raise ValueError("image training: epochs, iters, meta_batch, inner_steps, eval_steps and val_episodes "
                             "must be >= 1")
        if not 0.0 < cfg.val_fraction < 1.0:
            raise ValueError("image training: val_fraction must lie in (0, 1)")
        cfg.core(channels=1, size=28)  # validates the parts and their options
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def core(self, channels: int, size: int) -> CoreConfig:
        """The task kind + Conv-4 + learner + mixer these options describe."""
        learner: dict[str, Any] = {"inner_steps": self.inner_steps, "inner_lr": self.inner_lr,
                                   "first_order_epochs": self.epochs if self.first_order else 0}
        mixer: dict[str, Any] = {}
        own = option_names(MIXERS.get(self.mix))
        for key in ("alpha", "beta", "layers", "shuffle"):
            value = getattr(self, key)
            if key in own:
                mixer[key] = list(value) if isinstance(value, tuple) else value
            elif value != getattr(ImageTrainConfig(), key):
                raise ValueError(f"image training option {key} = {value!r} is not used by mixer {self.mix!r}")
        missing = sorted(set(learner) - set(option_names(LEARNERS.get(self.algo))))
        if missing:
            raise ValueError(f"learner {self.algo!r} cannot run images (lacks {', '.join(missing)})")
        model = {"in_channels": channels, "image_size": size, "filters": self.filters,
                 "n_steps": max(self.inner_steps, self.eval_steps), "batching": self.batching}
        return CoreConfig(kind=Part("classification", {"n_classes": self.n_way}), model=Part("conv4", model),
                          learner=Part(self.algo, learner), mixer=Part(self.mix, mixer))


def split_classes(images: ImageSet, fraction: float, seed: int, minimum: int = 1) -> tuple[ImageSet, ImageSet]:
    """(training, held-out) image sets: a seeded `fraction` of the classes held out (at least `minimum`
    on each side, else ValueError)."""
    n = images.n_classes
    try:
        held = held_out_indices(n, fraction, seed, minimum=minimum, what="classes")
    except ValueError as exc:
        raise ValueError(f"{images.source}: {exc}") from None
    keep = np.setdiff1d(np.arange(n), held)
    return images.subset(keep), images.subset(held)


class ImageBenchmark(HostBatches):
    """The image benchmark as the training loop sees it (`assayfew.loop.Benchmark`)."""

    metrics = ("val_accuracy", "val_ci95")

    def __init__(self, cfg: ImageTrainConfig, train: ImageSet, val: ImageSet) -> None:
        self.cfg, self.train, self.val = cfg, train, val

    def model_info(self) -> dict[str, Any]:
        c = self.cfg
        return {"images": {"channels": self.train.channels, "size": self.train.size},
                "episodes": {"n_way": c.n_way, "k_shot": c.k_shot, "eval_steps": c.eval_steps},
                "training": {"source": self.train.source, "n_train_classes": self.train.n_classes,
                             "n_val_classes": self.val.n_classes, "nme": c.nme, "seed": c.seed}} | stamp()

    def sampler(self, epoch: int) -> EpisodeSampler:
        """The epoch's episode sampler (host tensors), seeded by (seed, epoch); NME label groups fixed by the
        seed alone."""
        c = self.cfg
        return EpisodeSampler(self.train, c.n_way, c.k_shot, c.query, nme=c.nme, seed=c.seed * 1_000_003 + epoch,
                              group_seed=c.seed)

    def validate(self, learner: MetaLearner, model_config: dict[str, Any]) -> dict[str, float]:
        c = self.cfg
        result = evaluate_images(learner, self.val, k_shot=c.k_shot, query=c.query, episodes=c.val_episodes,
                                 steps=c.eval_steps, seed=c.seed, device=c.device)
        return {"val_accuracy": result["accuracy"], "val_ci95": result["ci95"]}


def train_images(cfg: ImageTrainConfig, images: ImageSet, run_dir: Path, *, resume: bool = False,
                 reporter: Reporter | None = None) -> TrainResult:
    """Meta-train on `images` minus the held-out validation classes; RUN_DIR as `assayfew.loop.fit` writes
    it (the model of the epoch with the best validation accuracy)."""
    EpisodeSampler(images, cfg.n_way, cfg.k_shot, cfg.query)  # every class has enough images: fail early
    train, val = split_classes(images, cfg.val_fraction, cfg.seed, minimum=cfg.n_way)
    return fit(cfg.core(images.channels, images.size), ImageBenchmark(cfg, train, val), cfg, run_dir,
               run_config=cfg.to_dict(), resume=resume, reporter=reporter)


def load_image_model(model_dir: Path) -> tuple[MetaLearner, dict]:
    """A trained image learner and its model config (safetensors + JSON; no pickles)."""
    return load_fitted(model_dir, "conv4", "images", "an image model")


def accuracy_summary(acc: np.ndarray) -> dict:
    """Mean episode accuracy with its 95% confidence half-width (1.96 standard errors over episodes)."""
    mean, half = mean_ci95(acc)
    return {"accuracy": mean, "ci95": half, "episodes": int(np.size(acc))}


class _Episodes:
    """Seeded test episodes as `Task`s, made one at a time (600 20-way episodes would not fit in memory)."""

    def __init__(self, sampler: EpisodeSampler, n: int) -> None:
        self.sampler, self.n = sampler, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Task]:
        for i in range(self.n):
            b = self.sampler.batch(1)
            yield Task(f"episode{i}", b.xs[0].numpy(), b.ys[0].numpy(), b.xq[0].numpy(), b.yq[0].numpy())


def _accuracy(y: np.ndarray, logits: np.ndarray) -> float:
    return float(np.mean(np.asarray(logits).argmax(-1) == np.asarray(y)))


def _flat(images: np.ndarray) -> np.ndarray:
    """(n, H, W, C) uint8 -> (n, C*H*W) float32 in [0, 1], as `episodes.episode_batch` lays images out."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1), dtype=np.float32) / 255.0


def _predictor(learner: MetaLearner, steps: int | None, dev: torch.device, progress: Reporter):
    def predict(xs: np.ndarray, ys: np.ndarray, xq: np.ndarray) -> np.ndarray:
        adapted = learner.adapt(torch.from_numpy(xs).to(dev), torch.from_numpy(ys).to(dev), steps=steps)
        logits = learner.predict(adapted, torch.from_numpy(xq).to(dev)).cpu().numpy()
        progress.iteration(0, float("nan"))  # the predictor never sees the query labels
        return logits

    return predict


def evaluate_runs(learner: MetaLearner, runs: list[OneShotRun], *, steps: int | None = None, device: str = "cpu",
                  progress: Reporter | None = None) -> dict:
    """Accuracy (± 95% CI over runs) on one-shot runs (all_runs.zip: 20 runs of 20-way within-alphabet
    one-shot classification): adapt on each run's training images, classify its test images."""
    ways = {len(r.support) for r in runs}
    if ways != {learner.kind.out_dim}:
        raise ValueError(f"the runs are {sorted(ways)}-way; this model classifies {learner.kind.out_dim} ways")
    dev = resolve_device(device)
    learner = learner.to(dev).eval()
    progress = progress or Reporter()
    progress.start(len(runs), 0)
    tasks = [Task(r.name, _flat(r.support), np.arange(len(r.support), dtype=np.float32), _flat(r.query),
                  r.query_labels.astype(np.float32)) for r in runs]
    result = evaluate_episodes(tasks, _predictor(learner, steps, dev, progress), scores={"accuracy": _accuracy},
                               n_boot=0)
    return accuracy_summary(result.per_assay["accuracy"].to_numpy()) | {
        "n_way": learner.kind.out_dim, "k_shot": 1, "runs": [r.name for r in runs],
        "steps": learner.inner_steps if steps is None else steps}


def evaluate_images(learner: MetaLearner, images: ImageSet, *, k_shot: int, query: int = 15, episodes: int = 600,
                    steps: int | None = None, nme: bool = False, seed: int = 0, device: str = "cpu",
                    progress: Reporter | None = None) -> dict:
    """Accuracy (± 95% CI) over seeded N-way K-shot episodes of `images` (N = the learner's classes; mutually
    exclusive unless `nme`): adapt on each support set (`steps` inner steps), classify its query images."""
    if episodes < 1:
        raise ValueError("evaluation: episodes must be >= 1")
    n_way = learner.kind.out_dim
    dev = resolve_device(device)
    was_training = learner.training
    learner = learner.to(dev).eval()
    progress = progress or Reporter()
    progress.start(episodes, 0)
    sampler = EpisodeSampler(images, n_way, k_shot, query, nme=nme, seed=seed)
    result = evaluate_episodes(_Episodes(sampler, episodes), _predictor(learner, steps, dev, progress),
                               scores={"accuracy": _accuracy}, n_boot=0)
    learner.train(was_training)
    return accuracy_summary(result.per_assay["accuracy"].to_numpy()) | {
        "n_way": n_way, "k_shot": k_shot, "query": query, "nme": nme,
        "steps": learner.inner_steps if steps is None else steps,
        "seed": seed, "source": images.source}
