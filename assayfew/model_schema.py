"""What a model directory's `config.json` may contain: a JSON Schema with types and bounds.

Checked before anything is allocated, so a damaged or hostile config cannot ask for huge tensors, reach
outside its directory, or load as an empty ensemble. Every failure is a `ModelError`:
"<dir>: not a valid assayfew model: <why>".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema

from assayfew.bounds import (MAX_ENSEMBLE_MEMBERS, MAX_FP_BITS, MAX_FP_RADIUS, MAX_HIDDEN_LAYERS, MAX_HIDDEN_WIDTH,
                             MAX_STEPS, MIN_FP_BITS)
from assayfew.chem import FingerprintSpec
from assayfew.meta import LEARNERS
from assayfew.meta.config import CoreConfig
from assayfew.scaling import SCALING_MODES

#: 2: the learner, model and task kind as one `core` config (`assayfew.meta.config.CoreConfig`);
#: 1 (still read, e.g. the shipped model): `architecture` + `algorithm`.
MODEL_FORMAT = "assayfew-model/2"
LEGACY_FORMAT = "assayfew-model/1"


class ModelError(ValueError):
    """A model directory that cannot be used; the message says which and why."""

    def __init__(self, model_dir: Path | str, why: str) -> None:
        super().__init__(f"{model_dir}: not a valid assayfew model: {why}")
        self.model_dir, self.why = str(model_dir), why


_POSITIVE = {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6}
_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
_COUNT = {"type": "integer", "minimum": 0, "maximum": 1_000_000}

_PART = {"type": "object", "required": ["name"], "additionalProperties": False,
         "properties": {"name": {"type": "string", "maxLength": 100}, "options": {"type": "object"}}}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["format", "fingerprint"],
    "if": {"properties": {"format": {"const": LEGACY_FORMAT}}},
    "then": {"required": ["architecture", "algorithm"]},
    "else": {"required": ["core"], "properties": {"format": {"const": MODEL_FORMAT}}},
    "properties": {
        "format": {"enum": [MODEL_FORMAT, LEGACY_FORMAT]},
        "core": {
            "type": "object",
            "required": ["model", "learner"],
            "properties": {
                "kind": _PART, "mixer": _PART, "format": {"type": "string"},
                "model": {**_PART, "properties": {**_PART["properties"], "options": {
                    "type": "object",
                    "properties": {
                        "in_dim": {"type": "integer", "minimum": MIN_FP_BITS, "maximum": MAX_FP_BITS},
                        "hidden": {"type": "array", "minItems": 1, "maxItems": MAX_HIDDEN_LAYERS,
                                   "items": {"type": "integer", "minimum": 1, "maximum": MAX_HIDDEN_WIDTH}},
                        "n_steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS},
                        "out_dim": {"type": "integer", "minimum": 1, "maximum": MAX_HIDDEN_WIDTH}}}}},
                "learner": {**_PART, "properties": {**_PART["properties"], "name": {"enum": sorted(LEARNERS)},
                                                    "options": {
                    "type": "object",
                    "properties": {"inner_steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS},
                                   "inner_lr": _POSITIVE, "msl_epochs": _COUNT, "first_order_epochs": _COUNT}}}},
            },
        },
        "architecture": {
            "type": "object",
            "required": ["type", "in_dim", "hidden"],
            "properties": {
                "type": {"const": "mlp"},
                "in_dim": {"type": "integer", "minimum": MIN_FP_BITS, "maximum": MAX_FP_BITS},
                "hidden": {"type": "array", "minItems": 1, "maxItems": MAX_HIDDEN_LAYERS,
                           "items": {"type": "integer", "minimum": 1, "maximum": MAX_HIDDEN_WIDTH}},
                "negative_slope": _FRACTION,
                "per_step_blocks": {"enum": ["all", "last"]},
            },
        },
        "fingerprint": {
            "type": "object",
            "required": ["radius", "bits"],
            "properties": {"radius": {"type": "integer", "minimum": 0, "maximum": MAX_FP_RADIUS},
                           "bits": {"type": "integer", "minimum": MIN_FP_BITS, "maximum": MAX_FP_BITS},
                           "feature_bits": {"type": "integer", "minimum": 0, "maximum": MAX_FP_BITS}},
        },
        "label_scaling": {
            "type": "object",
            "properties": {"mode": {"enum": list(SCALING_MODES)}, "min_std": _POSITIVE},
        },
        "algorithm": {
            "type": "object",
            "required": ["name", "inner_steps", "inner_lr"],
            "properties": {
                "name": {"enum": sorted(LEARNERS)},
                "inner_steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS},
                "inner_lr": _POSITIVE,
                "options": {"type": "object", "additionalProperties": {"type": ["number", "boolean", "string"]},
                            "properties": {"msl_epochs": _COUNT, "first_order_epochs": _COUNT}},
            },
        },
        "prediction": {  # other keys are left to `MetaModel` (it refuses settings it does not know)
            "type": "object",
            "properties": {"head": {"enum": ["gd", "ridge"]}, "head_ridge_alpha": _POSITIVE,
                           "fp_ridge_weight": _FRACTION, "fp_ridge_alpha": _POSITIVE},
        },
        "uncertainty": {  # calibration written by `assayfew calibrate` (assayfew.uncertainty)
            "type": "object",
            "properties": {**{name: {"type": "number", "minimum": -100, "maximum": 100}
                              for name in ("intercept", "cv_slope", "distance_slope")},
                           "cv_rmse_floor": _POSITIVE},
        },
        "members": {
            "type": "array", "minItems": 1, "maxItems": MAX_ENSEMBLE_MEMBERS, "uniqueItems": True,
            # plain sub-directory names: no separators, no '.', '..' or hidden names, no absolute paths
            "items": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$"},
        },
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def _where(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def check_config(config: Any, model_dir: Path, *, member: bool = False) -> None:
    """ModelError when `config` (parsed config.json) breaks the schema; members must be single models."""
    if isinstance(config, dict) and config.get("format") not in (MODEL_FORMAT, LEGACY_FORMAT):
        raise ModelError(model_dir, f"config.json: format: expected {MODEL_FORMAT!r} or {LEGACY_FORMAT!r}, "
                                    f"found {config.get('format')!r}")
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(config))
    if error is not None:
        where = _where(error.absolute_path)
        message = error.message
        if error.validator == "pattern" and where.startswith("members"):
            message = (f"{error.instance!r} is not a plain sub-directory name "
                       "(members must lie inside the model directory)")
        elif error.validator == "const":
            message = f"expected {error.validator_value!r}, found {error.instance!r}"
        raise ModelError(model_dir, f"config.json{': ' + where if where else ''}: {message}")
    if member and "members" in config:
        raise ModelError(model_dir, "an ensemble member cannot itself be an ensemble")
    try:  # names and options of the parts (unknown ones are errors), legacy configs converted
        core = CoreConfig.of_model(config)
    except ValueError as exc:
        raise ModelError(model_dir, f"config.json: {exc}") from None
    in_dim, fp = core.model.options.get("in_dim"), config["fingerprint"]
    try:
        FingerprintSpec.from_dict(fp)
    except ValueError as exc:
        raise ModelError(model_dir, f"config.json: {exc}") from None
    if in_dim != fp["bits"]:
        where = "architecture.in_dim" if "core" not in config else "core.model.options.in_dim"
        raise ModelError(model_dir, f"config.json: {where} {in_dim} differs from fingerprint.bits {fp['bits']}")


def member_dir(model_dir: Path, name: str) -> Path:
    """The directory of ensemble member `name`, which must lie inside `model_dir` (symlinks resolved)."""
    path = model_dir / name
    if not path.resolve().is_relative_to(model_dir.resolve()):
        raise ModelError(model_dir, f"member {name!r} points outside the model directory")
    return path
