"""Meta-training on assay data: the run config (`TrainConfig`), fingerprint meta-batches and the drug benchmark
(`DrugBenchmark`) that the one training loop (`assayfew.loop.fit`) runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from assayfew.bounds import check_train_options
from assayfew.checkpoint import CONFIG_FILE, MODEL_FORMAT, MetaModel, load_model
from assayfew.model_schema import ModelError
from assayfew.chem import FingerprintSpec
from assayfew.evaluate import evaluate_episodes, evaluation_episodes
from assayfew.io import write_json
from assayfew.device import resolve_device
from assayfew.distributed import SINGLE, DistContext
from assayfew.loop import LOG_EVERY, Reporter, TrainResult, check_keep_epoch, cosine_lr, fit
from assayfew.meta import LEARNERS, MIXERS
from assayfew.meta.config import CoreConfig, Part
from assayfew.meta.learners import MetaLearner
from assayfew.meta.mixing import Mixer
from assayfew.meta.registry import option_names
from assayfew.scaling import SCALING_MODES
from assayfew.provenance import array_digest, stamp
from assayfew.tasks import SPLIT_SIZES, EpisodeSampler, TaskSet
from assayfew.trainstep import Episode, episode_batch, meta_step

__all__ = ["TrainConfig", "DrugBenchmark", "TrainResult", "Reporter", "train", "model_config", "model_info",
           "episode_batch", "resolve_device", "cosine_lr", "LOG_EVERY"]


@dataclass
class EpisodeOptions:
    """How training episodes are drawn and their labels scaled (shared by meta-training and pre-training)."""

    label_scaling: str = "center"
    min_std: float = 0.5
    support_min: int = 16
    support_max: int = 64
    query_min: int = 16
    query_max: int = 64
    split_sizes: str = "cap"  # split assays: "cap" = all TRN/TST rows up to the maxima; "range" = sizes as others
    local_pool: int = 0  # assays without a split: episodes from the N compounds nearest a random anchor (0 = all)


@dataclass
class TrainConfig(EpisodeOptions):
    """Everything that defines a meta-training run (paper defaults)."""

    algo: str = "anil++"
    adapt: str | None = None  # metasgd / tnet: "all" or "head" (None: the learner's default)
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
    bit_dropout: float = 0.0  # training augmentation: share of each compound's set bits cleared (trainstep.BitDropout)
    task_mix: float = 0.0  # training augmentation: share of tasks interpolated with another (trainstep.TaskInterpolation)
    task_mix_alpha: float = 0.5  # its λ ~ Beta(task_mix_alpha, task_mix_alpha)
    ridge_share: float = 0.0  # train for a blend with fingerprint ridge at this share (trainstep.ridge_residual_labels)
    source_balance: float = 0.0  # assay sampling weight ∝ (assays in its corpus)^-source_balance; 1 = corpora equal
    source_weights: dict[str, float] = field(default_factory=dict)  # corpus name -> extra sampling factor (default 1)
    val_support_k: int | None = None
    keep_epoch: int | None = None  # keep this epoch (0-based) and stop after it; None: the best on validation
    val_max_assays: int = 200
    msl_epochs: int = 10
    first_order_epochs: int = 0
    ridge_alpha: float | None = None  # r2d2: the closed-form head's penalty (None: the learner's default)
    regularizer: str = "none"  # assayfew.meta.regularizers: none|weight_decay|cavia|meta_dropout|mr_maml|taml
    regularizer_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    standardize: bool = True  # data preparation: largest fragment + neutralise before featurizing
    init_body: str | None = None  # start from this model's body (an `assayfew pretrain` run or a model directory)
    init_head: str = "mean"  # with init_body: "mean" = its head too (a pretrain run's mean per-assay head); "fresh"

    def __post_init__(self) -> None:
        check_train_options(self.to_dict())
        check_keep_epoch(self.keep_epoch, self.epochs)
        if self.label_scaling not in SCALING_MODES:
            raise ValueError(f"unknown label scaling {self.label_scaling!r}; choose from {', '.join(SCALING_MODES)}")
        if self.split_sizes not in SPLIT_SIZES:
            raise ValueError(f"split_sizes must be one of {', '.join(SPLIT_SIZES)}, not {self.split_sizes!r}")
        if self.init_head not in INIT_HEADS:
            raise ValueError(f"init_head must be one of {', '.join(INIT_HEADS)}, not {self.init_head!r}")
        if self.ridge_share >= 1:
            raise ValueError(f"ridge_share must be below 1, not {self.ridge_share!r}")
        if self.ridge_share > 0 and self.task_mix > 0:
            raise ValueError("ridge_share and task_mix do not combine: a partner task's labels are not residuals")
        if self.bit_dropout > 0 and self.task_mix > 0:
            raise ValueError("bit_dropout and task_mix do not combine: choose one training augmentation")
        if self.init_head != "mean" and self.init_body is None:
            raise ValueError("init_head is used only with init_body")

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
        if not isinstance(values.get("regularizer_options", {}), dict):
            raise ValueError("regularizer_options must be a table of the regularizer's options")
        if not isinstance(values.get("source_weights", {}), dict):
            raise ValueError("source_weights must be a table of corpus name = sampling factor")
        cfg = cls(**values)
        core = cfg.core(in_dim=1)  # validates the learner/mixer/regularizer names and options
        core.build()  # and their values (per_step_blocks, adapt, ...), and that the regularizer suits the learner
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
                if value is None and getattr(defaults, key) is None:  # not set: the part's own default
                    continue
                if key in own:
                    parts[what][key] = list(value) if isinstance(value, tuple) else value
                elif value != getattr(defaults, key):
                    raise ValueError(f"training option {key} = {value!r} is not used by {what} {names[what]!r}")
        model = {"in_dim": int(in_dim), "hidden": list(self.hidden), "n_steps": self.inner_steps,
                 "negative_slope": 0.01, "per_step_blocks": self.per_step_blocks}
        return CoreConfig(model=Part("mlp", model), learner=Part(self.algo, parts["learner"]),
                          mixer=Part(self.mix, parts["mixer"]),
                          regularizer=Part(self.regularizer, dict(self.regularizer_options)))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


#: `TrainConfig.init_head`: take the init_body model's head too, or initialise the head as without init_body.
INIT_HEADS = ("mean", "fresh")


def body_model_dir(path: str | Path) -> Path:
    """The model directory `init_body` names: a pretrain (or training) run directory's `model/`, or the directory."""
    path = Path(path)
    return path / "model" if (path / "model" / CONFIG_FILE).is_file() else path


def body_initializer(cfg: TrainConfig, spec: FingerprintSpec | None) -> Callable[[MetaLearner], None] | None:
    """What `loop.fit` calls on the fresh learner to start from `cfg.init_body`'s parameters (the body: every
    model parameter but the head; the head too unless `init_head` is "fresh"; never inner rates), or None.
    Checked now: a missing or invalid model, fingerprints other than `spec` (None: not checked) or other
    widths are a ValueError."""
    if cfg.init_body is None:
        return None
    where = body_model_dir(cfg.init_body)
    try:
        source = load_model(where)
    except ModelError as exc:
        raise ValueError(f"init_body: {exc}") from None
    if len(source.learners) != 1:
        raise ValueError(f"init_body {where}: an ensemble; give one model (a pretrain run or a member)")
    if spec is not None and source.spec != spec:
        raise ValueError(f"init_body {where}: fingerprints {source.spec} differ from the training data's {spec}")
    model = source.learners[0].model
    if tuple(getattr(model, "hidden", ())) != tuple(cfg.hidden):
        raise ValueError(f"init_body {where}: hidden widths {tuple(getattr(model, 'hidden', ()))} differ from "
                         f"this run's {tuple(cfg.hidden)}")
    params = {k: v.detach().clone() for k, v in source.learners[0].params.items()}
    skip = set(model.head_names) if cfg.init_head == "fresh" else set()

    def init(learner: MetaLearner) -> None:
        own = dict(learner.params.items())
        names = [n for n in learner.model.init_params() if n not in skip]  # the model's parameters, not a regulariser's
        for name in names:
            if name not in params or tuple(params[name].shape) != tuple(own[name].shape):
                found = "none" if name not in params else tuple(params[name].shape)
                raise ValueError(f"init_body {where}: parameter {name} has shape {found}, this run needs "
                                 f"{tuple(own[name].shape)}")
        with torch.no_grad():
            for name in names:
                own[name].copy_(params[name])

    init(cfg.core((spec or source.spec).bits).build_learner())  # every shape checked now, before any training
    return init


#: TrainConfig fields that are options of the learner / the mixer (passed only to parts that have them).
_PART_OPTIONS = {"learner": ("inner_steps", "inner_lr", "msl_epochs", "first_order_epochs", "adapt", "ridge_alpha"),
                 "mixer": ("alpha", "beta", "layers", "fixed_lambda")}


def model_info(cfg: TrainConfig, spec: FingerprintSpec, train_set: TaskSet, extra: dict | None = None) -> dict:
    """The drug benchmark's keys of `model/config.json` (beside "format" and "core"): what is needed to use
    the model on compounds, and where it came from."""
    return {
        "fingerprint": spec.to_dict() | ({} if train_set.standardized is None
                                         else {"standardize": bool(train_set.standardized)}),
        "label_scaling": {"mode": cfg.label_scaling, "min_std": cfg.min_std},
        "training": {"data_fingerprint": array_digest(train_set.fp_rows, train_set.values, train_set.offsets,
                                                      train_set.fingerprints),
                     "n_train_assays": len(train_set), "seed": cfg.seed} | (extra or {}),
    } | stamp()


def model_config(cfg: TrainConfig, spec: FingerprintSpec, train_set: TaskSet, extra: dict | None = None) -> dict:
    """The `model/config.json` content: what is needed to rebuild and use the model, and where it came from."""
    return {"format": MODEL_FORMAT, "core": cfg.core(spec.bits).to_dict()} | model_info(cfg, spec, train_set, extra)


def assay_weights(sources: list[str], balance: float, corpus_weights: dict[str, float]) -> list[float] | None:
    """Sampling weight of each training assay: (assays in its corpus)^-balance × its corpus's factor in
    `corpus_weights` (1 when not named); None (uniform) when both are neutral. A factor naming a corpus
    that is not among `sources` is an error (a misspelt name would silently do nothing)."""
    unknown = sorted(set(corpus_weights) - set(sources))
    if unknown:
        raise ValueError(f"source_weights names corpora not in the training set: {', '.join(unknown)} "
                         f"(the training corpora: {', '.join(sorted(set(sources)))})")
    if not balance and not corpus_weights:
        return None
    counts = Counter(sources)
    return [counts[s] ** -balance * float(corpus_weights.get(s, 1.0)) for s in sources]


class DrugBenchmark:
    """The drug benchmark for the training loop: fingerprint episodes of a task set, labels scaled per task
    on its support, validated by the mean squared Pearson r over meta-validation assays."""

    metrics = ("val_mean_r2", "val_median_r2", "val_gt03")

    def __init__(self, cfg: TrainConfig, train_set: TaskSet, val_set: TaskSet, split_info: dict | None = None):
        self.cfg, self.train_set, self.split_info = cfg, train_set, split_info or {}
        self.val_eps = evaluation_episodes(val_set.subset(val_set.assay_ids[: cfg.val_max_assays]),
                                           support_k=cfg.val_support_k, seed=cfg.seed)
        self.weights = assay_weights(train_set.sources, cfg.source_balance, cfg.source_weights)

    def model_info(self) -> dict[str, Any]:
        return model_info(self.cfg, self.train_set.spec, self.train_set, {"split": self.split_info})

    def train_items(self, epoch: int) -> Iterator[list[Episode]]:
        cfg = self.cfg
        sampler = EpisodeSampler(self.train_set, support_range=(cfg.support_min, cfg.support_max),
                                 query_range=(cfg.query_min, cfg.query_max), max_support=cfg.support_max,
                                 max_query=cfg.query_max, split_sizes=cfg.split_sizes, weights=self.weights,
                                 local_pool=cfg.local_pool, seed=cfg.seed * 1_000_003 + epoch)
        for _ in range(cfg.iters):
            yield sampler.sample_rows(cfg.meta_batch)

    def train_step(self, learner: MetaLearner, mixer: Mixer, item: list[Episode], *, generator: torch.Generator,
                   epoch: int, device: torch.device, dist: DistContext) -> torch.Tensor:
        return meta_step(learner, mixer, self.train_set, item, label_scaling=self.cfg.label_scaling,
                         min_std=self.cfg.min_std, generator=generator, epoch=epoch, device=device, dist=dist,
                         bit_dropout=self.cfg.bit_dropout, task_mix=self.cfg.task_mix,
                         task_mix_alpha=self.cfg.task_mix_alpha, ridge_share=self.cfg.ridge_share)

    def validate(self, learner: MetaLearner, model_config: dict[str, Any]) -> dict[str, float]:
        current = MetaModel(learners=[learner], config=model_config)
        val = evaluate_episodes(self.val_eps, current.adapt_predict, n_boot=0).summary if self.val_eps else {}
        return {"val_mean_r2": val.get("mean", float("nan")), "val_median_r2": val.get("median", float("nan")),
                "val_gt03": val.get("gt03", 0)}


def check_sides(cfg: TrainConfig, train_set: TaskSet, val_set: TaskSet) -> None:
    """ValueError when there is nothing to train on, or no validation assay to select the epoch by (without
    `keep_epoch`)."""
    if len(train_set) == 0:
        raise ValueError("the split leaves no training assays in this corpus")
    if len(val_set) == 0 and cfg.keep_epoch is None:
        raise ValueError("the split leaves no validation assays to select the epoch by: add validation assays, "
                         "or set keep_epoch to keep a fixed epoch")


def train(cfg: TrainConfig, train_set: TaskSet, val_set: TaskSet, run_dir: Path, *, resume: bool = False,
          reporter: Reporter | None = None, split_info: dict | None = None,
          dist: DistContext = SINGLE) -> TrainResult:
    """Meta-train on `train_set`, select the epoch with the best meta-validation mean R² (or keep
    `cfg.keep_epoch`, the one way to train without validation assays), write RUN_DIR.

    `dist`: this process's rank in a torchrun job (`assayfew.distributed.init_from_env`); every rank calls
    train() with the same arguments, rank 0 validates and writes RUN_DIR (resume reads it on every rank)."""
    dist.share(cfg.meta_batch)  # every rank needs a task: fail before any work
    check_sides(cfg, train_set, val_set)
    init = body_initializer(cfg, train_set.spec)
    bench = DrugBenchmark(cfg, train_set, val_set, split_info)
    run_dir = Path(run_dir)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "val_assays.json", {"val": val_set.assay_ids, "n_train": len(train_set)})
    return fit(cfg.core(train_set.spec.bits), bench, cfg, run_dir, run_config=cfg.to_dict(), resume=resume,
               reporter=reporter, dist=dist, init=init)
