"""Meta-training and evaluation of few-shot image classifiers (Conv-4 + MAML/ANIL/MetaSGD + a mixer).

A run directory holds `config.toml`, `metrics.csv` (one row per chunk of `checkpoint_every` iterations),
`model/` (`weights.safetensors` + `config.json`), `state/` (learner + optimizer tensors and progress, for
`resume`) and, when evaluated, `evaluation.json`. Each chunk's episodes and mixing draws come from
generators seeded by (seed, chunk), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from assayfew.images.conv import Conv4
from assayfew.images.data import ImageSet
from assayfew.images.episodes import EpisodeSampler
from assayfew.io import atomic_write, read_json, write_json, write_toml
from assayfew.meta import build_learner, build_mixer
from assayfew.meta.learners import MetaLearner
from assayfew.meta.state import learner_state, load_learner_state
from assayfew.provenance import stamp
from assayfew.train import Reporter, _load_optimizer, _optimizer_tensors, resolve_device

__all__ = ["ImageTrainConfig", "train_images", "evaluate_images", "load_image_model", "accuracy_summary"]

MODEL_FORMAT = "assayfew-image-model/1"


@dataclass
class ImageTrainConfig:
    """Everything that defines an image meta-training run (episodes, model, learner, mixer, schedule)."""

    n_way: int = 5
    k_shot: int = 1
    query: int = 15  # query images per class in training episodes
    nme: bool = True  # non-mutually-exclusive training episodes (fixed label groups)
    algo: str = "maml"  # maml | anil | metasgd
    mix: str = "metamix"  # none | metamix | mixup_ss | mixup_qq | cob
    alpha: float = 2.0
    beta: float = 2.0
    layers: tuple[int, ...] = (0, 1, 2, 3, 4)
    iters: int = 500
    meta_batch: int = 4
    inner_steps: int = 5
    eval_steps: int = 10
    inner_lr: float = 0.4
    outer_lr: float = 0.001
    second_order: bool = True
    filters: int = 64
    checkpoint_every: int = 50
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageTrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown image training option(s): {', '.join(unknown)}")
        values = dict(data)
        if "layers" in values:
            values["layers"] = tuple(int(v) for v in values["layers"])
        cfg = cls(**values)
        if cfg.algo not in ("maml", "anil", "metasgd"):
            raise ValueError(f"image training: algo must be maml, anil or metasgd, not {cfg.algo!r}")
        if min(cfg.iters, cfg.meta_batch, cfg.inner_steps, cfg.eval_steps, cfg.checkpoint_every) < 1:
            raise ValueError("image training: iters, meta_batch, inner_steps, eval_steps, checkpoint_every must be >= 1")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def model_config(cfg: ImageTrainConfig, images: ImageSet, extra: dict | None = None) -> dict:
    """The `model/config.json` content: how to rebuild the learner, and where it came from."""
    model = Conv4(cfg.n_way, in_channels=images.channels, image_size=images.size, filters=cfg.filters,
                  n_steps=max(cfg.inner_steps, cfg.eval_steps))
    return {"format": MODEL_FORMAT, "model": {"type": "conv4", **model.config()},
            "learner": {"name": cfg.algo, "inner_steps": cfg.inner_steps, "inner_lr": cfg.inner_lr,
                        "eval_steps": cfg.eval_steps},
            "mixing": {"name": cfg.mix, "alpha": cfg.alpha, "beta": cfg.beta, "layers": list(cfg.layers)},
            "training": {"source": images.source, "n_classes": images.n_classes, "seed": cfg.seed,
                         "nme": cfg.nme} | (extra or {})} | stamp()


def learner_from_model_config(config: dict) -> MetaLearner:
    if config.get("format") != MODEL_FORMAT:
        raise ValueError(f"not an image model (format {config.get('format')!r}, expected {MODEL_FORMAT!r})")
    arch = dict(config["model"])
    arch.pop("type", None)
    lcfg = config["learner"]
    return build_learner(lcfg["name"], Conv4(**arch), inner_steps=int(lcfg["inner_steps"]),
                         inner_lr=float(lcfg["inner_lr"]))


def save_image_model(model_dir: Path, learner: MetaLearner, config: dict) -> None:
    tensors = learner_state(learner)
    atomic_write(Path(model_dir) / "weights.safetensors", lambda p: save_file(tensors, str(p)))
    write_json(Path(model_dir) / "config.json", config)


def load_image_model(model_dir: Path) -> tuple[MetaLearner, dict]:
    """A trained image learner and its config from a model directory (safetensors + JSON; no pickles)."""
    model_dir = Path(model_dir)
    missing = [n for n in ("weights.safetensors", "config.json") if not (model_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{model_dir} is not an image model directory: missing {', '.join(missing)}")
    config = read_json(model_dir / "config.json")
    learner = learner_from_model_config(config)
    load_learner_state(learner, load_file(str(model_dir / "weights.safetensors")))
    learner.eval()
    return learner, config


METRICS_FIELDS = ["iteration", "train_loss", "support_loss", "lr", "seconds"]


def train_images(cfg: ImageTrainConfig, images: ImageSet, run_dir: Path, *, resume: bool = False,
                 reporter: Reporter | None = None) -> MetaLearner:
    """Meta-train on episodes of `images`; the final model is written to RUN_DIR/model (no selection).
    `resume` continues from the last checkpoint (the config may differ only in iters and device).
    checkpoint_every)."""
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    mconf = model_config(cfg, images)
    learner = learner_from_model_config(mconf).to(device)
    mixer = build_mixer(cfg.mix, alpha=cfg.alpha, beta=cfg.beta, layers=cfg.layers)
    opt = torch.optim.Adam(learner.parameters(), lr=cfg.outer_lr)
    state_dir = run_dir / "state"
    done, history = 0, []
    if resume and (state_dir / "state.json").is_file():
        st = read_json(state_dir / "state.json")
        free = ("iters", "device")  # a resumed run may run longer, elsewhere
        changed = sorted(k for k in set(st["config"]) | set(cfg.to_dict())
                         if k not in free and st["config"].get(k) != cfg.to_dict().get(k))
        if changed:
            raise ValueError(f"cannot resume {run_dir}: its config differs in {', '.join(changed)}")
        load_learner_state(learner, load_file(str(state_dir / "learner.safetensors"), device=str(device)))
        _load_optimizer(opt, load_file(str(state_dir / "optimizer.safetensors"), device=str(device)), st["optimizer"])
        done, history = int(st["iteration"]), st["history"]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_toml(run_dir / "config.toml", cfg.to_dict())
    reporter.start(cfg.iters, done)
    while done < cfg.iters:
        chunk = done // cfg.checkpoint_every
        sampler = EpisodeSampler(images, cfg.n_way, cfg.k_shot, cfg.query, nme=cfg.nme,
                                 seed=cfg.seed * 1_000_003 + chunk, group_seed=cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + chunk)
        t0, losses, support = time.perf_counter(), [], []
        learner.train()
        for _ in range(min(cfg.checkpoint_every, cfg.iters - done)):
            batch = sampler.batch(cfg.meta_batch).to(device)
            loss, info = learner.meta_loss(batch, mixer, generator=gen, second_order=cfg.second_order)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            support.append(float(info["support_loss"]))
            if not math.isfinite(losses[-1]):
                raise ValueError(f"training diverged at iteration {done + 1} (loss {losses[-1]}); "
                                 f"lower --inner-lr or --outer-lr")
            done += 1
            reporter.iteration(chunk, losses[-1])
        row = {"iteration": done, "train_loss": float(np.mean(losses)), "support_loss": float(np.mean(support)),
               "lr": cfg.outer_lr, "seconds": time.perf_counter() - t0}
        history.append(row)
        save_image_model(run_dir / "model", learner, mconf | {"training": mconf["training"] | {"iterations": done}})
        _write_metrics(run_dir / "metrics.csv", history)
        tensors, opt_meta = _optimizer_tensors(opt)
        state = learner_state(learner)
        atomic_write(state_dir / "learner.safetensors", lambda p: save_file(state, str(p)))
        atomic_write(state_dir / "optimizer.safetensors", lambda p: save_file(tensors, str(p)))
        write_json(state_dir / "state.json", {"iteration": done, "history": history, "optimizer": opt_meta,
                                              "config": cfg.to_dict()})
        reporter.epoch(row)
    return learner


def accuracy_summary(acc: np.ndarray) -> dict:
    """Mean episode accuracy with its 95% confidence half-width (1.96 standard errors)."""
    acc = np.asarray(acc, dtype=np.float64)
    half = 1.96 * acc.std(ddof=1) / math.sqrt(acc.size) if acc.size > 1 else float("nan")
    return {"accuracy": float(acc.mean()), "ci95": float(half), "episodes": int(acc.size)}


def evaluate_images(learner: MetaLearner, images: ImageSet, *, n_way: int, k_shot: int, query: int = 15,
                    episodes: int = 600, steps: int | None = None, nme: bool = False, seed: int = 0,
                    device: str = "cpu", batch: int = 20, progress: Reporter | None = None) -> dict:
    """Accuracy (± 95% CI) over seeded N-way K-shot test episodes (mutually exclusive unless `nme`): adapt
    on each support set (`steps` inner steps), classify its query images."""
    if episodes < 1:
        raise ValueError("evaluation: episodes must be >= 1")
    model = learner.model
    if getattr(model, "n_way", n_way) != n_way:
        raise ValueError(f"the model classifies {model.n_way} ways, not {n_way}")  # type: ignore[attr-defined]
    dev = resolve_device(device)
    learner = learner.to(dev).eval()
    sampler = EpisodeSampler(images, n_way, k_shot, query, nme=nme, seed=seed)
    progress = progress or Reporter()
    progress.start(episodes, 0)
    acc: list[float] = []
    while len(acc) < episodes:  # `batch` episodes adapt at once (each on its own support set)
        b = sampler.batch(min(batch, episodes - len(acc))).to(dev)
        adapted = learner.adapt(b.xs, b.ys, b.ms, steps=steps)
        hit = (learner.predict(adapted, b.xq).argmax(-1) == b.yq.argmax(-1)).float().mean(1)
        acc.extend(hit.tolist())
        for a in hit.tolist():
            progress.iteration(0, a)
    return accuracy_summary(np.asarray(acc)) | {"n_way": n_way, "k_shot": k_shot, "query": query, "nme": nme,
                                    "steps": steps or learner.inner_steps, "seed": seed, "source": images.source}


def _write_metrics(path: Path, history: list[dict]) -> None:
    def write(p: Path) -> None:
        with open(p, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=METRICS_FIELDS)
            w.writeheader()
            w.writerows(history)

    atomic_write(path, write)
