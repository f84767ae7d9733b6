"""Meta-training: outer loop, cosine-annealed outer LR, model selection on meta-validation, resume."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from assayfew.checkpoint import MODEL_FORMAT, MetaModel, save_model
from assayfew.chem import FingerprintSpec
from assayfew.evaluate import evaluate_episodes, evaluation_episodes
from assayfew.io import atomic_write, read_json, write_json, write_toml
from assayfew.meta import LEARNERS, MIXERS
from assayfew.meta.config import CoreConfig, Part
from assayfew.meta.registry import option_names
from assayfew.meta.batch import TaskBatch
from assayfew.meta.sparse import SparseRows
from assayfew.meta.state import learner_state, load_learner_state
from assayfew.provenance import array_digest, stamp
from assayfew.scaling import fit_scaling
from assayfew.tasks import EpisodeSampler, TaskSet


@dataclass
class TrainConfig:
    """Everything that defines a meta-training run (paper defaults)."""

    algo: str = "anil++"
    mix: str = "metamix"
    alpha: float = 0.5
    beta: float = 0.5
    layers: tuple[int, ...] = (1, 2)
    fixed_lambda: float | None = None
    epochs: int = 50
    iters: int = 500
    meta_batch: int = 8
    inner_steps: int = 5
    inner_lr: float = 0.01
    outer_lr: float = 0.001
    min_outer_lr: float = 0.0
    grad_clip: float = 10.0
    hidden: tuple[int, ...] = (500, 500)
    per_step_blocks: str = "last"
    label_scaling: str = "center"
    min_std: float = 0.5
    support_min: int = 16
    support_max: int = 64
    query_min: int = 16
    query_max: int = 64
    source_balance: float = 0.0  # assay sampling weight ∝ (assays in its corpus)^-source_balance; 1 = corpora equal
    val_support_k: int | None = None
    val_max_assays: int = 200
    msl_epochs: int = 10
    first_order_epochs: int = 0
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Validated: unknown options, and options the chosen learner or mixer does not have set to anything
        but their default (e.g. alpha with mix = "none"), are errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        values = dict(data)
        for key in ("layers", "hidden"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        cfg = cls(**values)
        cfg.core(in_dim=1)  # validates the learner/mixer options
        return cfg

    def core(self, in_dim: int) -> CoreConfig:
        """The learner + model + mixer these options describe (the one schema that builds them)."""
        defaults = TrainConfig()
        parts: dict[str, dict[str, Any]] = {"learner": {}, "mixer": {}}
        names = {"learner": self.algo, "mixer": self.mix}
        registries = {"learner": LEARNERS, "mixer": MIXERS}
        for what, keys in _PART_OPTIONS.items():
            own = option_names(registries[what].get(names[what]))
            for key in keys:
                value = getattr(self, key)
                if key in own:
                    parts[what][key] = list(value) if isinstance(value, tuple) else value
                elif value != getattr(defaults, key):
                    raise ValueError(f"training option {key} = {value!r} is not used by {what} {names[what]!r}")
        model = {"in_dim": int(in_dim), "hidden": list(self.hidden), "n_steps": self.inner_steps,
                 "negative_slope": 0.01, "per_step_blocks": self.per_step_blocks}
        return CoreConfig(model=Part("mlp", model), learner=Part(self.algo, parts["learner"]),
                          mixer=Part(self.mix, parts["mixer"]))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


#: TrainConfig fields that are options of the learner / the mixer (passed only to parts that have them).
_PART_OPTIONS = {"learner": ("inner_steps", "inner_lr", "msl_epochs", "first_order_epochs"),
                 "mixer": ("alpha", "beta", "layers", "fixed_lambda")}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_config(cfg: TrainConfig, spec: FingerprintSpec, train_set: TaskSet, extra: dict | None = None) -> dict:
    """The `model/config.json` content: what is needed to rebuild and use the model, and where it came from."""
    return {
        "format": MODEL_FORMAT,
        "core": cfg.core(spec.bits).to_dict(),
        "fingerprint": spec.to_dict(),
        "label_scaling": {"mode": cfg.label_scaling, "min_std": cfg.min_std},
        "training": {"data_fingerprint": array_digest(train_set.fp_rows, train_set.values, train_set.offsets,
                                                      train_set.fingerprints),
                     "n_train_assays": len(train_set), "seed": cfg.seed} | (extra or {}),
    } | stamp()


def episode_batch(taskset: TaskSet, episodes: Sequence[tuple[int, np.ndarray, np.ndarray]], mode: str,
                  min_std: float) -> TaskBatch:
    """Padded meta-batch of episodes (assay, support rows, query rows) from `EpisodeSampler.sample_rows`,
    each task's labels mapped with its own support statistics. Inputs are gathered straight from the task
    set's fingerprint table and their sparse form from its stored on-bits (no dense-to-sparse pass);
    the result equals `pad_tasks` of the materialised, scaled Tasks."""
    if not episodes:
        raise ValueError("episode_batch: no episodes")
    indptr, bit_ids = taskset.bit_index()
    n_tasks, bits = len(episodes), taskset.spec.bits
    out: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, SparseRows]] = {}
    scalings = [fit_scaling(taskset.values[s], mode, min_std) for _, s, _ in episodes]
    for which, pick in (("s", 1), ("q", 2)):
        parts = [ep[pick] for ep in episodes]
        width = max(len(p) for p in parts)
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
        sparse = SparseRows.from_coordinates(torch.from_numpy(np.repeat(flat, lens)), torch.from_numpy(cols),
                                             n_tasks * width, bits)
        out[which] = (torch.from_numpy(x).view(n_tasks, width, bits), torch.from_numpy(y),
                      torch.from_numpy(mask), sparse)
    batch = TaskBatch(out["s"][0], out["s"][1], out["s"][2], out["q"][0], out["q"][1], out["q"][2])
    batch.set_sparse_rows("s", out["s"][3])
    batch.set_sparse_rows("q", out["q"][3])
    return batch


def cosine_lr(cfg: TrainConfig, step: int, total: int) -> float:
    return cfg.min_outer_lr + 0.5 * (cfg.outer_lr - cfg.min_outer_lr) * (1 + math.cos(math.pi * step / max(total, 1)))


# -- optimizer state as safetensors + JSON (no pickles) ---------------------------------------------------------
def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {f"{pid}.{k}": v.detach().cpu().contiguous() for pid, st in sd["state"].items()
               for k, v in st.items() if torch.is_tensor(v)}
    return tensors, {"param_groups": sd["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_val: float
    history: list[dict] = field(default_factory=list)
    wall_s: float = 0.0


class Reporter:
    """Progress hooks; the CLI renders them, the library stays quiet."""

    def start(self, total_iters: int, done_iters: int) -> None: ...
    def iteration(self, epoch: int, loss: float) -> None: ...
    def epoch(self, row: dict) -> None: ...


METRICS_FIELDS = ["epoch", "train_loss", "val_mean_r2", "val_median_r2", "val_gt03", "lr", "seconds"]


def train(cfg: TrainConfig, train_set: TaskSet, val_set: TaskSet, run_dir: Path, *, resume: bool = False,
          reporter: Reporter | None = None, split_info: dict | None = None) -> TrainResult:
    """Meta-train on `train_set`, select the epoch with the best meta-validation mean R², write RUN_DIR."""
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    model_dir, state_dir = run_dir / "model", run_dir / "state"
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    spec = train_set.spec
    mconf = model_config(cfg, spec, train_set, {"split": split_info or {}})
    learner, mixer = cfg.core(spec.bits).build()
    learner = learner.to(device)
    opt = torch.optim.Adam(learner.parameters(), lr=cfg.outer_lr, fused=True)

    start_epoch, best_val, best_epoch, history = 0, -math.inf, -1, []
    if resume and (state_dir / "state.json").exists():
        st = read_json(state_dir / "state.json")
        if st["config"] != cfg.to_dict():
            raise ValueError(f"cannot resume {run_dir}: its config differs from the one given")
        load_learner_state(learner, load_file(str(state_dir / "learner.safetensors"), device=str(device)))
        _load_optimizer(opt, load_file(str(state_dir / "optimizer.safetensors"), device=str(device)), st["optimizer"])
        start_epoch, best_val, best_epoch, history = st["epoch"] + 1, st["best_val"], st["best_epoch"], st["history"]
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    write_toml(run_dir / "config.toml", cfg.to_dict())
    write_json(run_dir / "val_assays.json", {"val": val_set.assay_ids, "n_train": len(train_set)})

    val_eps = evaluation_episodes(val_set.subset(val_set.assay_ids[: cfg.val_max_assays]),
                                  support_k=cfg.val_support_k, seed=cfg.seed)
    counts = Counter(train_set.sources)
    weights = [counts[s] ** -cfg.source_balance for s in train_set.sources] if cfg.source_balance else None
    total = cfg.epochs * cfg.iters
    reporter.start(total, start_epoch * cfg.iters)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        sampler = EpisodeSampler(train_set, support_range=(cfg.support_min, cfg.support_max),
                                 query_range=(cfg.query_min, cfg.query_max), max_support=cfg.support_max,
                                 max_query=cfg.query_max, weights=weights, seed=cfg.seed * 1_000_003 + epoch)
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 100_003 + epoch)
        learner.train()
        losses = []
        for it in range(cfg.iters):
            lr = cosine_lr(cfg, epoch * cfg.iters + it, total)
            for group in opt.param_groups:
                group["lr"] = lr
            batch = episode_batch(train_set, sampler.sample_rows(cfg.meta_batch), cfg.label_scaling,
                                  cfg.min_std).to(device)
            loss, _ = learner.meta_loss(batch, mixer, generator=gen, epoch=epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(learner.parameters(), cfg.grad_clip, foreach=True)
            opt.step()
            losses.append(float(loss.detach()))
            reporter.iteration(epoch, losses[-1])
        learner.epoch_end(epoch, cfg.epochs)

        current = MetaModel(learners=[learner], config=mconf)
        val = evaluate_episodes(val_eps, current.adapt_predict, n_boot=0).summary if val_eps else {}
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_mean_r2": val.get("mean", float("nan")),
               "val_median_r2": val.get("median", float("nan")), "val_gt03": val.get("gt03", 0), "lr": lr,
               "seconds": time.perf_counter() - t_epoch}
        history.append(row)
        if row["val_mean_r2"] > best_val or best_epoch < 0:
            best_val, best_epoch = row["val_mean_r2"], epoch
            mconf["training"] |= {"epoch": epoch, "val_mean_r2": best_val}
            save_model(model_dir, learner, mconf)
        _write_metrics(run_dir / "metrics.csv", history)
        tensors, opt_meta = _optimizer_tensors(opt)
        state_tensors = {k: v.detach().cpu().contiguous() for k, v in learner_state(learner).items()}
        atomic_write(state_dir / "learner.safetensors", lambda p: save_file(state_tensors, str(p)))
        atomic_write(state_dir / "optimizer.safetensors", lambda p: save_file(tensors, str(p)))
        write_json(state_dir / "state.json", {"epoch": epoch, "best_val": best_val, "best_epoch": best_epoch,
                                              "history": history, "optimizer": opt_meta, "config": cfg.to_dict()})
        reporter.epoch(row)
    return TrainResult(run_dir=run_dir, best_epoch=best_epoch, best_val=best_val, history=history,
                       wall_s=time.perf_counter() - t0)


def _write_metrics(path: Path, history: list[dict]) -> None:
    def write(p: Path) -> None:
        with open(p, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=METRICS_FIELDS)
            w.writeheader()
            w.writerows(history)

    atomic_write(path, write)
