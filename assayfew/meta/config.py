"""The one config schema of the core: task kind + model + learner + mixer [+ regulariser], each by registered name with its
own options. Validated when read (unknown keys, unknown names and options a part does not have are errors),
round-trips through JSON and TOML, and builds the learner and the mixer everywhere (training, checkpoints,
tests). `from_legacy` reads the model configs written before this schema (`architecture`/`algorithm`/`mixing`).

    {"kind":    {"name": "regression", "options": {}},
     "model":   {"name": "mlp", "options": {"in_dim": 1024, "hidden": [500, 500], ...}},
     "learner": {"name": "anil++", "options": {"inner_steps": 5, "inner_lr": 0.01, ...}},
     "mixer":   {"name": "metamix", "options": {"alpha": 0.5, "beta": 0.5, "layers": [1, 2]}},
     "regularizer": {"name": "weight_decay", "options": {"decay": 0.0001}}}

The mixer is optional (a model kept for prediction needs none); so is the regulariser (left out = "none";
configs written before it existed load unchanged). A model option `out_dim` left out is
taken from the task kind; a given one must agree with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assayfew.meta.kinds import KINDS, TaskKind
from assayfew.meta.learners import LEARNERS, MetaLearner, build_learner
from assayfew.meta.mixing import MIXERS, Mixer
from assayfew.meta.model import MODELS, FunctionalModel
from assayfew.meta.registry import Registry, option_defaults, option_names
from assayfew.meta.regularizers import REGULARIZERS, Regularizer

__all__ = ["Part", "CoreConfig"]

FORMAT = "assayfew-core/1"


def _plain(value: Any) -> Any:
    """Tuples as lists (JSON/TOML have no tuples), recursively."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Part:
    """One registered part: its name and its options (only those given; defaults fill the rest)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": _plain(dict(self.options))}

    @classmethod
    def from_dict(cls, what: str, data: Any) -> Part:
        if not isinstance(data, dict):
            raise ValueError(f"config: {what} must be a table {{name, options}}, got {type(data).__name__}")
        unknown = sorted(set(data) - {"name", "options"})
        if unknown:
            raise ValueError(f"config: {what} has unknown key(s) {', '.join(unknown)}")
        if not isinstance(data.get("name"), str):
            raise ValueError(f"config: {what} is missing its name")
        options = data.get("options", {})
        if not isinstance(options, dict):
            raise ValueError(f"config: {what} options must be a table")
        return cls(data["name"], dict(options))


_REGISTRIES: dict[str, Registry] = {"kind": KINDS, "model": MODELS, "learner": LEARNERS, "mixer": MIXERS,
                                    "regularizer": REGULARIZERS}


@dataclass(frozen=True)
class CoreConfig:
    """What defines a meta-learner: task kind, model, learner, (for training) mixer and regulariser
    (None = "none", which is left out)."""

    model: Part
    learner: Part
    kind: Part = Part("regression")
    mixer: Part | None = None
    regularizer: Part | None = None

    def __post_init__(self) -> None:
        self.validate()
        if self.regularizer is not None and self.regularizer.name == "none":
            object.__setattr__(self, "regularizer", None)
        for what, part in self.parts().items():  # None where None is the default = left out (as TOML must)
            defaults = option_defaults(_REGISTRIES[what].get(part.name))
            kept = {k: v for k, v in part.options.items() if not (v is None and k in defaults and defaults[k] is None)}
            object.__setattr__(self, what, Part(part.name, _plain(kept)))

    def parts(self) -> dict[str, Part]:
        out = {"kind": self.kind, "model": self.model, "learner": self.learner}
        if self.mixer is not None:
            out["mixer"] = self.mixer
        return out | ({"regularizer": self.regularizer} if self.regularizer is not None else {})

    def validate(self) -> None:
        """ValueError for an unknown name or an option its part does not have."""
        for what, part in self.parts().items():
            _REGISTRIES[what].check_options(part.name, part.options)
        model_cls = MODELS.get(self.model.name)
        if "out_dim" in self.model.options and "out_dim" in option_names(model_cls):
            need = self.build_kind().out_dim
            if int(self.model.options["out_dim"]) != need:
                raise ValueError(f"config: model out_dim {self.model.options['out_dim']} does not match the "
                                 f"{self.kind.name} task kind ({need} outputs)")

    # ---- building ------------------------------------------------------------------------------
    def build_kind(self) -> TaskKind:
        return KINDS.build(self.kind.name, **self.kind.options)

    def build_model(self) -> FunctionalModel:
        options = dict(self.model.options)
        if "out_dim" in option_names(MODELS.get(self.model.name)):
            options.setdefault("out_dim", self.build_kind().out_dim)
        return MODELS.build(self.model.name, **options)  # type: ignore[return-value]

    def build_regularizer(self) -> Regularizer | None:
        if self.regularizer is None:
            return None
        return REGULARIZERS.build(self.regularizer.name, **self.regularizer.options)

    def build_learner(self) -> MetaLearner:
        return build_learner(self.learner.name, self.build_model(), self.build_kind(),
                             regularizer=self.build_regularizer(), **self.learner.options)

    def build_mixer(self) -> Mixer:
        if self.mixer is None:
            raise ValueError("config: no mixer given")
        return MIXERS.build(self.mixer.name, **self.mixer.options)

    def build(self) -> tuple[MetaLearner, Mixer]:
        return self.build_learner(), self.build_mixer()

    def with_mixer(self, mixer: Part | None) -> CoreConfig:
        return CoreConfig(model=self.model, learner=self.learner, kind=self.kind, mixer=mixer,
                          regularizer=self.regularizer)

    def resolved(self) -> CoreConfig:
        """The same config with every option spelled out (defaults filled in)."""
        parts = {what: Part(p.name, option_defaults(_REGISTRIES[what].get(p.name)) | p.options)
                 for what, p in self.parts().items()}
        if "out_dim" in option_names(MODELS.get(self.model.name)):
            parts["model"] = Part(self.model.name, parts["model"].options | {"out_dim": self.build_kind().out_dim})
        return CoreConfig(**parts)  # type: ignore[arg-type]

    # ---- serialising ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT} | {what: part.to_dict() for what, part in self.parts().items()}

    @classmethod
    def from_dict(cls, data: Any) -> CoreConfig:
        if not isinstance(data, dict):
            raise ValueError("config: expected a table")
        unknown = sorted(set(data) - {"format", "kind", "model", "learner", "mixer", "regularizer"})
        if unknown:
            raise ValueError(f"config: unknown key(s) {', '.join(unknown)}")
        if data.get("format", FORMAT) != FORMAT:
            raise ValueError(f"config: unsupported format {data.get('format')!r} (expected {FORMAT!r})")
        missing = [k for k in ("model", "learner") if k not in data]
        if missing:
            raise ValueError(f"config: missing entry {', '.join(missing)}")
        return cls(model=Part.from_dict("model", data["model"]), learner=Part.from_dict("learner", data["learner"]),
                   kind=Part.from_dict("kind", data.get("kind", {"name": "regression"})),
                   mixer=Part.from_dict("mixer", data["mixer"]) if "mixer" in data else None,
                   regularizer=Part.from_dict("regularizer", data["regularizer"]) if "regularizer" in data else None)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> CoreConfig:
        return cls.from_dict(json.loads(text))

    def to_toml(self) -> str:
        """TOML has no null: an option set to None is written only when None is its default (then it is
        left out and reads back as the default); any other None is an error."""
        import tomli_w

        for what, part in self.parts().items():
            for key, value in part.options.items():
                if value is None:
                    raise ValueError(f"config: {what} option {key} = None cannot be written to TOML")
        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_toml(cls, text: str) -> CoreConfig:
        import tomllib

        return cls.from_dict(tomllib.loads(text))

    def save(self, path: Path) -> None:
        from assayfew.io import atomic_write

        path = Path(path)
        text = self.to_toml() if path.suffix == ".toml" else self.to_json() + "\n"
        atomic_write(path, lambda p: p.write_text(text))

    @classmethod
    def load(cls, path: Path) -> CoreConfig:
        path = Path(path)
        text = path.read_text()
        try:
            return cls.from_toml(text) if path.suffix == ".toml" else cls.from_json(text)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    # ---- the model configs written before this schema ------------------------------------------
    @classmethod
    def from_legacy(cls, config: dict[str, Any]) -> CoreConfig:
        """From a model `config.json` with `architecture` / `algorithm` [/ `mixing`] (format
        assayfew-model/1). A missing `per_step_blocks` meant "all" then; mixer options the mixer does not
        have (α/β of "none") were never used and are left out."""
        try:
            arch, algo = dict(config["architecture"]), dict(config["algorithm"])
            if arch.pop("type", "mlp") != "mlp":
                raise ValueError("only model type 'mlp' is supported")
            steps = int(algo["inner_steps"])
            model = {"in_dim": int(arch.pop("in_dim")), "hidden": [int(h) for h in arch.pop("hidden")],
                     "n_steps": steps, "negative_slope": float(arch.pop("negative_slope", 0.01)),
                     "per_step_blocks": str(arch.pop("per_step_blocks", "all"))}
            if arch:
                raise ValueError(f"unknown architecture key(s) {', '.join(sorted(arch))}")
            learner = {"inner_steps": steps, "inner_lr": float(algo["inner_lr"]), **dict(algo.get("options", {}))}
            mixer = None
            if "mixing" in config:
                mixing = dict(config["mixing"])
                name = str(mixing.pop("name"))
                own = option_names(MIXERS.get(name))
                mixer = Part(name, {k: v for k, v in mixing.items() if k in own})
            return cls(model=Part("mlp", model), learner=Part(str(algo["name"]), learner), mixer=mixer)
        except (KeyError, TypeError) as e:
            raise ValueError(f"model config: missing or malformed entry ({e})") from e

    @classmethod
    def of_model(cls, config: dict[str, Any]) -> CoreConfig:
        """The core config of a model `config.json` (current or legacy format)."""
        if "core" in config:
            return cls.from_dict(config["core"])
        return cls.from_legacy(config)

    @classmethod
    def of_learner(cls, learner: MetaLearner, mixer: Mixer | None = None) -> CoreConfig:
        """The config that rebuilds `learner` (made by `build_learner`, with its regulariser) [and `mixer`]."""
        model, reg = learner.built_from, learner.regularizer
        return cls(model=Part(model.name, model.config()), learner=Part(learner.name, dict(learner.build_options)),
                   kind=Part(learner.kind.name, learner.kind.options()),
                   mixer=None if mixer is None else Part(mixer.name, mixer.options()),
                   regularizer=None if reg is None else Part(reg.name, reg.options()))
