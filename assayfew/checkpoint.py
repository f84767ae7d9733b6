"""Model directories: `weights.safetensors` + `config.json` (no pickles), and the adaptation wrapper."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from assayfew.baselines import RidgeFit, ridge_fit
from assayfew.blas import single_threaded_numpy_blas
from assayfew.bounds import MAX_STEPS, check_range
from assayfew.chem import FingerprintSpec, OnBits
from assayfew.io import atomic_write, write_json
from assayfew.meta.config import CoreConfig
from assayfew.meta.learners import AdaptedParams
from assayfew.meta.memo import Memo
from assayfew.meta.sparse import SparseRows
from assayfew.meta.state import learner_state, load_learner_state
from assayfew.model_schema import MODEL_FORMAT, ModelError, check_config, member_dir
from assayfew.provenance import stamp
from assayfew.scaling import LabelScaling, fit_scaling

WEIGHTS_FILE = "weights.safetensors"
#: Prediction settings a model's config may override: the head fitted at adaptation ("gd": the inner-loop
#: gradient steps; "ridge": closed form on the penultimate features) and a blend with fingerprint ridge.
PREDICTION_DEFAULTS: dict[str, Any] = {"head": "gd", "head_ridge_alpha": 10.0, "fp_ridge_weight": 0.0,
                                       "fp_ridge_alpha": 10.0}
CONFIG_FILE = "config.json"
#: Rows per block in `MetaModel.predict_bits`: a block's hidden activations stay in the CPU's caches.
BITS_BLOCK = 512


def build_learner_from_config(config: dict[str, Any]) -> torch.nn.Module:
    """A fresh learner as a model config describes it (its `core`, or a legacy `architecture`/`algorithm`)."""
    return CoreConfig.of_model(config).build_learner()


def shared_part(config: dict[str, Any]) -> dict[str, Any]:
    """What ensemble members must share (they are adapted and averaged in one label space): the learner,
    model and task kind (not the mixer they were trained with, nor the seed of their initialisation), the
    fingerprints and the label scaling."""
    core = CoreConfig.of_model(config).with_mixer(None).to_dict()
    core["learner"]["options"].pop("seed", None)
    return {"core": core} | {k: config.get(k) for k in ("fingerprint", "label_scaling")}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write named tensors as a safetensors file, atomically (CPU copies; never a pickle)."""
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(Path(path), lambda p: save_file(plain, str(p)))


def save_model(model_dir: Path, learner: torch.nn.Module, config: dict[str, Any]) -> None:
    """Write weights and config atomically (weights first, so a config never points at missing weights)."""
    model_dir = Path(model_dir)
    save_tensors(model_dir / WEIGHTS_FILE, learner_state(learner))
    write_json(model_dir / CONFIG_FILE, config)


@dataclass
class MetaModel:
    """One meta-trained learner, or an ensemble of them, ready to adapt to a new assay.

    Ensemble members share architecture, fingerprints and label scaling; each adapts to the assay on its
    own and their predictions are averaged.
    """

    learners: list[torch.nn.Module]
    config: dict[str, Any]
    path: Path | None = None

    @property
    def spec(self) -> FingerprintSpec:
        return FingerprintSpec.from_dict(self.config["fingerprint"])

    @property
    def standardize(self) -> bool:
        """Whether structures are standardised (largest fragment, neutralised) before featurizing, as in
        training; models that do not record it (made before the choice was recorded) standardise."""
        return bool(self.config["fingerprint"].get("standardize", True))

    @property
    def inner_steps(self) -> int:
        return int(self.learners[0].inner_steps)

    @property
    def prediction(self) -> dict[str, Any]:
        """How this model predicts a new assay (see PREDICTION_DEFAULTS)."""
        return PREDICTION_DEFAULTS | self.config.get("prediction", {})

    @property
    def device(self) -> torch.device:
        """Where the learners live (adaptation runs there)."""
        return next(self.learners[0].parameters()).device

    def to(self, device: torch.device | str) -> MetaModel:
        """Move the learners to `device` (in place; returns the model)."""
        for learner in self.learners:
            learner.to(device)
        return self

    def with_prediction(self, **overrides: Any) -> MetaModel:
        """The same weights with other prediction settings (for comparing variants)."""
        unknown = set(overrides) - set(PREDICTION_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown prediction setting(s): {', '.join(sorted(unknown))}")
        config = self.config | {"prediction": self.prediction | overrides}
        return MetaModel(learners=self.learners, config=config, path=self.path)

    def adapt_predict(self, support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray, *,
                      steps: int | None = None) -> np.ndarray:
        """Adapt on one assay's measured compounds and predict `query_x`, in the task's own units.

        Each query row's prediction is independent of the other query rows (batch-norm statistics come
        from the support set only). Head: `steps` gradient steps (default: the model's), or a closed-form
        ridge head when the model's prediction setting says so; optionally blended with ridge regression on
        the fingerprints. The same as `predict([adapt(support_x, support_y, steps=steps)], query_x)[0]`.
        """
        if len(query_x) == 0:
            return np.zeros(0, dtype=np.float64)
        return self.predict(self.adapt(support_x, support_y, steps=steps), query_x)

    def check_steps(self, steps: int | None) -> None:
        """ValueError unless `steps` (None = the model's own) is a usable number of adaptation steps: 1..MAX_STEPS,
        and no more than the model was meta-trained for when its inner rates were learned per step."""
        if steps is None:
            return
        check_range("steps", steps, 1, MAX_STEPS, integer=True)
        if steps > self.inner_steps and any(getattr(lr, "lr_mode", "") == "per_step" for lr in self.learners):
            raise ValueError(f"steps: this model meta-learned its inner rates for {self.inner_steps} adaptation "
                             f"steps; use at most {self.inner_steps}, not {steps} (more steps reuse the last "
                             f"rate and can diverge)")

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray, *, steps: int | None = None) -> Adaptation:
        """Adapt every member to one assay's measured compounds (gradient steps or the ridge head); fit the
        fingerprint ridge regression when the model blends it in."""
        self.check_steps(steps)
        settings = self.prediction
        scaling_cfg = self.config.get("label_scaling", {"mode": "center"})
        scaling = fit_scaling(support_y, scaling_cfg.get("mode", "center"), float(scaling_cfg.get("min_std", 0.5)))
        device = self.device  # every tensor is created where the learners live
        ridge_alpha = float(settings["head_ridge_alpha"]) if settings["head"] == "ridge" else None
        with single_threaded_numpy_blas():
            xs = torch.as_tensor(np.asarray(support_x, dtype=np.float32), device=device)
            ys = torch.as_tensor(scaling.forward(support_y), device=device)
            states = []
            for learner in self.learners:
                learner.eval()
                with torch.enable_grad():
                    states.append(learner.adapt(xs, ys, steps=self.inner_steps if steps is None else steps,
                                                ridge_alpha=ridge_alpha))
            ridge = (ridge_fit(support_x, support_y, alpha=float(settings["fp_ridge_alpha"]))
                     if float(settings["fp_ridge_weight"]) > 0 else None)
        return Adaptation(states=states, scaling=scaling, ridge=ridge)

    def predict(self, adaptation: Adaptation, query_x: np.ndarray) -> np.ndarray:
        """Predictions of `query_x` by an adaptation made by this model's `adapt`, in task units. The query's
        sparse input form is computed once for all members."""
        weight = float(self.prediction["fp_ridge_weight"])
        with single_threaded_numpy_blas():
            xq = torch.as_tensor(np.asarray(query_x, dtype=np.float32), device=self.device)
            memo = Memo(sparse_rows=cache(lambda: SparseRows.from_dense(xq)),
                        input_nnz=cache(lambda: int(torch.count_nonzero(xq))))
            mean = np.mean([learner.predict(state, xq, memo).detach().cpu().numpy().reshape(-1)
                            for learner, state in zip(self.learners, adaptation.states)], axis=0)
            pred = adaptation.scaling.inverse(mean)
            if adaptation.ridge is not None and weight > 0:
                pred = (1 - weight) * pred + weight * adaptation.ridge.predict(np.asarray(query_x, dtype=np.float64))
        return pred

    def predict_bits(self, adaptation: Adaptation, query: OnBits) -> np.ndarray:
        """`predict(adaptation, query.dense())` from the set bits alone (see `bits_scorer`; build the scorer once
        when scoring many batches with one adaptation)."""
        return self.bits_scorer(adaptation)(query)

    def bits_scorer(self, adaptation: Adaptation) -> Callable[[OnBits], np.ndarray]:
        """A function giving `predict(adaptation, query.dense())` from an `OnBits` query's set bits, faster on
        large queries (libraries): each member's `bits_forward` (batch norm folded into its maps) made once;
        on blocks of BITS_BLOCK rows, the members' first maps as one embedding-bag sum over a concatenated
        table, then each member's rest; the fingerprint ridge summed over set bits. Falls back to `predict`
        off the CPU or where a member offers no `bits_forward`."""
        forwards = [None if state.batched else learner.model.bits_forward(state.params, state.stats, state.bn_step)
                    for learner, state in zip(self.learners, adaptation.states)]
        if self.device.type != "cpu" or any(f is None for f in forwards):
            return lambda query: (self.predict(adaptation, query.dense()) if query.n
                                  else np.zeros(0, dtype=np.float64))
        members = [f for f in forwards if f is not None]
        weight = float(self.prediction["fp_ridge_weight"])
        table = torch.cat([f.table for f in members], dim=1).contiguous()
        bias = torch.cat([f.bias for f in members])
        widths = [f.table.shape[1] for f in members]

        def score(query: OnBits) -> np.ndarray:
            if query.n == 0:
                return np.zeros(0, dtype=np.float64)
            starts = query.starts()
            cols = torch.from_numpy(query.cols)
            outs = np.empty((len(members), query.n), dtype=np.float32)
            with torch.no_grad():
                for a in range(0, query.n, BITS_BLOCK):
                    b = min(a + BITS_BLOCK, query.n)
                    block, offsets = cols[starts[a]:starts[b]], torch.from_numpy(starts[a:b] - starts[a])
                    first = F.embedding_bag(block, table, offsets, mode="sum").add_(bias)
                    for out, member, z in zip(outs, members, first.split(widths, dim=1)):
                        out[a:b] = member.rest(z).reshape(-1).numpy()
            pred = adaptation.scaling.inverse(np.mean(list(outs), axis=0))
            if adaptation.ridge is not None and weight > 0:
                pred = (1 - weight) * pred + weight * adaptation.ridge.predict_bits(query)
            return pred

        return score


@dataclass(frozen=True)
class Adaptation:
    """A `MetaModel` adapted to one assay (`MetaModel.adapt`): one adapted state per member, the label
    scaling and, when the model blends it in, the fingerprint ridge regression fitted on the same compounds.
    Predicts any number of compounds, in any number of batches, with `MetaModel.predict`."""

    states: list[AdaptedParams]
    scaling: LabelScaling
    ridge: RidgeFit | None




MAX_CONFIG_BYTES = 10_000_000


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _read_config(model_dir: Path) -> dict[str, Any]:
    """Parse `config.json` (strict JSON: no NaN/Infinity) or raise ModelError saying what is wrong."""
    if not model_dir.is_dir():
        raise ModelError(model_dir, "no such directory")
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise ModelError(model_dir, f"missing {CONFIG_FILE}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelError(model_dir, f"{CONFIG_FILE} is larger than {MAX_CONFIG_BYTES // 1_000_000} MB")
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ModelError(model_dir, f"{CONFIG_FILE} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ModelError(model_dir, f"{CONFIG_FILE} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                                    f"column {exc.colno})") from None
    except ValueError as exc:
        raise ModelError(model_dir, f"{CONFIG_FILE}: {exc}") from None
    except OSError as exc:
        raise ModelError(model_dir, f"cannot read {CONFIG_FILE} ({exc.strerror or exc})") from None


def _read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors of `weights.safetensors` (never unpickled), all finite, or ModelError."""
    path = model_dir / WEIGHTS_FILE
    if not path.is_file():
        raise ModelError(model_dir, f"missing {WEIGHTS_FILE}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(model_dir, f"{WEIGHTS_FILE} is not a readable safetensors file (empty, truncated or "
                                    f"another format: {detail})") from None
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelError(model_dir, f"{WEIGHTS_FILE}: tensor {key!r} holds non-finite values (NaN or infinity)")
    return tensors


def _load_learner(model_dir: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """One single (non-ensemble) model directory, validated: config against the schema, weights against it."""
    model_dir = Path(model_dir)
    config = _read_config(model_dir)
    check_config(config, model_dir, member=True)
    tensors = _read_weights(model_dir)
    try:
        learner = build_learner_from_config(config)
    except (TypeError, ValueError) as exc:
        raise ModelError(model_dir, f"{CONFIG_FILE}: {exc}") from None
    try:
        load_learner_state(learner, tensors)
    except ValueError as exc:
        raise ModelError(model_dir, f"{WEIGHTS_FILE} does not match {CONFIG_FILE} ({exc})") from None
    learner.eval()
    return learner, config


def load_model(model_dir: Path) -> MetaModel:
    """Load a model directory (safetensors only: nothing is unpickled); ModelError when it is not valid.

    Either a single model (`weights.safetensors` + `config.json`, as training writes it) or an ensemble: a
    `config.json` whose `members` lists sub-directories that are single models.
    """
    model_dir = Path(model_dir)
    config = _read_config(model_dir)
    check_config(config, model_dir)
    if "members" not in config:
        learner, config = _load_learner(model_dir)
        return MetaModel(learners=[learner], config=config, path=model_dir)
    learners = []
    for name in config["members"]:
        learner, member = _load_learner(member_dir(model_dir, name))
        mine, theirs = shared_part(member), shared_part(config)
        differing = [k for k in mine if mine[k] != theirs[k]]
        if differing:
            raise ModelError(model_dir, f"ensemble member {name!r} differs from the ensemble in {differing}")
        learners.append(learner)
    return MetaModel(learners=learners, config=config, path=model_dir)


def save_ensemble(member_dirs: list[Path], out_dir: Path, *, prediction: dict[str, Any] | None = None) -> None:
    """Assemble single-model directories into an ensemble directory (members copied as m0, m1, ...)."""
    import shutil

    if not member_dirs:
        raise ValueError("an ensemble needs at least one member")
    out_dir = Path(out_dir)
    configs = [_load_learner(Path(m))[1] for m in member_dirs]  # validates every member first
    for m, c in zip(member_dirs[1:], configs[1:]):
        mine, first = shared_part(c), shared_part(configs[0])
        differing = [k for k in mine if mine[k] != first[k]]
        if differing:
            raise ValueError(f"{m}: cannot join an ensemble with {member_dirs[0]}: they differ in {differing}")
    unknown = set(prediction or {}) - set(PREDICTION_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown prediction setting(s): {', '.join(sorted(unknown))}")
    names = [f"m{i}" for i in range(len(member_dirs))]
    for src, name in zip(member_dirs, names):
        dst = out_dir / name
        dst.mkdir(parents=True, exist_ok=True)
        for file in (WEIGHTS_FILE, CONFIG_FILE):
            atomic_write(dst / file, lambda p, f=Path(src) / file: shutil.copyfile(f, p))
    config = {"format": MODEL_FORMAT} | shared_part(configs[0]) | {
        "members": names,
        "member_training": [c.get("training", {}) | {"commit": c.get("commit")} for c in configs],
        "prediction": PREDICTION_DEFAULTS | (prediction or {}),
    } | stamp()
    write_json(out_dir / CONFIG_FILE, config)
