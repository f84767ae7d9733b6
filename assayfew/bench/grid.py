"""The comparison grid (`GRID.toml`): which cells a benchmark run holds.

A meta-learning cell is the base training config (`[train]`) with one value per axis of a study plus a seed;
an axis is any `TrainConfig` field (learner, mixer, α/β, layer set, fixed λ, regulariser, ...), so a new
option needs no code here. A baseline cell is a single-task baseline (`assayfew.baselines.BASELINES`, or
"pqsar": the reference predictions of the pQSAR SI files) plus a seed. Every cell is evaluated at every K
on the same seeded episodes (the seed's support draws from TRN, query = TST, on the split's test assays).

    seeds = [0, 1, 2]
    k = [16, 32, 64]
    baselines = ["ridge", "rf", "knn", "gp", "pqsar"]
    reference = "anil++-metamix"      # optional: the method the report compares every other one with

    [train]                           # TrainConfig fields for every meta-learning cell
    epochs = 3
    iters = 200

    [baseline_options.rf]             # optional options of a baseline
    n_estimators = 100

    [[study]]                         # cells = the product of its axes (each a list of values)
    name = "mixing"
    mix = ["none", "metamix"]

    [[study]]
    name = "alpha"
    "alpha,beta" = [[0.2, 0.2], [2.0, 2.0]]   # a joint axis: fields set together

The same config in two studies is one cell (run once, listed under both).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from assayfew.baselines import BASELINES
from assayfew.bounds import SEED_MAX, check_range
from assayfew.io import read_toml
from assayfew.train import TrainConfig

#: the pQSAR reference predictions (the SI file's pIC50_pred), scored like a baseline when present
REFERENCE = "pqsar"
_TOP_KEYS = {"seeds", "k", "baselines", "reference", "train", "baseline_options", "study"}
#: fields shown first in a method's label (learner, mixer, regulariser); others as key=value
_LABEL_HEAD = ("algo", "mix", "regularizer")


@dataclass(frozen=True)
class Cell:
    """One unit of work: a meta-learning config or a baseline, one seed."""

    kind: str  # "meta" or "baseline"
    method: str  # the label tables use (seed not included)
    seed: int
    config: dict[str, Any]  # meta: TrainConfig options that differ from its defaults; baseline: {"name", "options"}
    axes: dict[str, Any] = field(default_factory=dict)  # meta: the axis values that define the cell
    studies: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """Directory name: the readable label and seed, then a digest of the whole config (unique)."""
        digest = hashlib.sha256(json.dumps([self.kind, self.config], sort_keys=True).encode()).hexdigest()[:10]
        slug = re.sub(r"[^A-Za-z0-9.=+_-]+", "_", self.method)[:60]
        return f"{slug}-s{self.seed}-{digest}"


@dataclass
class Grid:
    """A parsed, validated grid: the cells in run order (baselines, then each study's cells seed by seed)."""

    seeds: list[int]
    ks: list[int]
    cells: list[Cell]
    axes: list[str]  # every axis field, in first-seen order (a results column each)
    reference: str | None
    source: dict[str, Any]  # the TOML as read (written beside the outputs)


def _grid_error(path: Path | None, message: str) -> ValueError:
    return ValueError(f"{path}: {message}" if path else message)


def _int_list(path: Path | None, data: dict, key: str, low: int, high: int) -> list[int]:
    values = data.get(key)
    if not isinstance(values, list) or not values:
        raise _grid_error(path, f"'{key}' must be a non-empty list of whole numbers")
    for v in values:
        try:
            check_range(f"{key} value", v, low, high, integer=True)
        except ValueError as exc:
            raise _grid_error(path, str(exc)) from None
    if len(set(values)) != len(values):
        raise _grid_error(path, f"'{key}' lists a value twice")
    return [int(v) for v in values]


def _label(config: dict[str, Any], shown: list[str], base: dict[str, Any]) -> str:
    """e.g. "anil++-metamix", "anil++-none+cavia", "anil++-metamix alpha=0.2 beta=0.2"."""
    label = f"{config['algo']}-{config['mix']}"
    if config.get("regularizer", "none") not in ("none", None):
        label += f"+{config['regularizer']}"
    extra = [f"{k}={_show(config[k])}" for k in shown if k not in _LABEL_HEAD and config[k] != base[k]]
    return " ".join([label, *extra])


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _study_cells(path: Path | None, study: dict, base: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The study's name and its axis assignments (one dict of field → value per cell)."""
    name = study.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _grid_error(path, "every [[study]] needs a name")
    axes: list[tuple[list[str], list[tuple]]] = []
    for key, values in study.items():
        if key == "name":
            continue
        names = [k.strip() for k in key.split(",")]
        for n in names:
            if n not in base:
                raise _grid_error(path, f"study {name!r}: {n!r} is not a training option")
            if n == "seed":
                raise _grid_error(path, f"study {name!r}: seeds are given by the top-level 'seeds' list")
        if not isinstance(values, list) or not values:
            raise _grid_error(path, f"study {name!r}: {key!r} must be a non-empty list of values")
        rows = []
        for v in values:
            row = tuple(v) if len(names) > 1 and isinstance(v, list) else (v,)
            if len(row) != len(names):
                raise _grid_error(path, f"study {name!r}: each value of {key!r} must list {len(names)} values")
            rows.append(row)
        axes.append((names, rows))
    assignments = []
    for combo in product(*(rows for _, rows in axes)):
        values: dict[str, Any] = {}
        for (names, _), row in zip(axes, combo):
            values |= dict(zip(names, row))
        assignments.append(values)
    return name, assignments


def parse_grid(data: dict[str, Any], path: Path | None = None) -> Grid:
    """Validate a grid (unknown keys, options, baselines and values are errors naming the file) and list
    its cells; every meta-learning config is checked by `TrainConfig.from_dict` before any work."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise _grid_error(path, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_TOP_KEYS))})")
    seeds = _int_list(path, data, "seeds", 0, SEED_MAX)
    ks = _int_list(path, data, "k", 1, 100_000)
    train_base = data.get("train", {})
    if "seed" in train_base:
        raise _grid_error(path, "[train] must not set seed: seeds are the top-level 'seeds' list")
    try:
        base = TrainConfig.from_dict(train_base).to_dict()
    except (TypeError, ValueError) as exc:
        raise _grid_error(path, f"[train]: {exc}") from None
    studies = data.get("study", [])
    baselines = data.get("baselines", [])
    if not isinstance(studies, list) or not isinstance(baselines, list):
        raise _grid_error(path, "'study' must be [[study]] tables and 'baselines' a list of names")
    if not studies and not baselines:
        raise _grid_error(path, "the grid has no [[study]] and no baselines: nothing to run")

    assigned: list[tuple[str, dict[str, Any]]] = []
    for study in studies:
        name, cells = _study_cells(path, study, base)
        assigned += [(name, values) for values in cells]
    axes = list(dict.fromkeys(k for _, values in assigned for k in values))
    by_config: dict[str, tuple[dict[str, Any], list[str]]] = {}
    first_study: dict[str, str] = {}
    for name, values in assigned:
        try:
            config = TrainConfig.from_dict(base | values).to_dict()
        except (TypeError, ValueError) as exc:
            raise _grid_error(path, f"study {name!r}, cell {values}: {exc}") from None
        key = json.dumps(config, sort_keys=True)
        if key not in by_config:
            by_config[key] = (config, [])
            first_study[key] = name
        if name not in by_config[key][1]:
            by_config[key][1].append(name)
    defaults = TrainConfig().to_dict()
    study_order = list(dict.fromkeys(name for name, _ in assigned))
    # a cell is defined by its options that differ from TrainConfig's defaults, so that a new option (with
    # its default) leaves finished cells finished; run order: study by study, each seed by seed
    metas = [Cell(kind="meta", method=_label(config, axes, base), seed=seed,
                  config={k: v for k, v in config.items() if v != defaults[k]} | {"seed": seed},
                  axes={k: config[k] for k in axes}, studies=tuple(names))
             for study in study_order for seed in seeds
             for key, (config, names) in by_config.items() if first_study[key] == study]
    methods = [c.method for c in metas if c.seed == seeds[0]]
    dupes = sorted({m for m in methods if methods.count(m) > 1})
    if dupes:
        raise _grid_error(path, f"different configs share the label(s) {dupes}: make them differ on an axis")

    cells: list[Cell] = []
    options = data.get("baseline_options", {})
    for name in options:
        if name not in baselines:
            raise _grid_error(path, f"[baseline_options.{name}]: {name!r} is not in 'baselines'")
    for name in dict.fromkeys(baselines):
        opts = dict(options.get(name, {}))
        if name == REFERENCE:
            if opts:
                raise _grid_error(path, f"baseline {REFERENCE!r} has no options")
        else:
            try:
                BASELINES.build(name, **opts)  # unknown name or option: an error now, not after hours
            except (TypeError, ValueError) as exc:
                raise _grid_error(path, f"baseline {name!r}: {exc}") from None
        cells += [Cell(kind="baseline", method=name, seed=seed, config={"name": name, "options": opts},
                       studies=("baselines",)) for seed in seeds]
    cells += metas  # baselines first (cheap), then the studies in order (a partial grid is paired per study)
    reference = data.get("reference")
    if reference is not None and reference not in {c.method for c in cells}:
        raise _grid_error(path, f"reference {reference!r} is not a method of this grid "
                                f"(methods: {', '.join(dict.fromkeys(c.method for c in cells))})")
    return Grid(seeds=seeds, ks=ks, cells=cells, axes=axes, reference=reference, source=data)


def load_grid(path: Path) -> Grid:
    """`parse_grid` of a TOML file (a file that is not TOML is an error naming it)."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: grid file not found")
    try:
        data = read_toml(path)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a valid TOML grid ({exc})") from None
    return parse_grid(data, path)
