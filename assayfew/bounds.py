"""Bounds on numeric settings, shared by the CLI options, training configs and model configs.

Generous for real use, tight enough that a typo or a damaged file cannot ask for terabytes or hang.
"""

from __future__ import annotations

SEED_MAX = 2**32 - 1  # numpy and torch both accept seeds in [0, 2**32)
MAX_STEPS = 200  # adaptation (inner-loop) gradient steps
MAX_FP_BITS = 16_384
MIN_FP_BITS = 8
MAX_FP_RADIUS = 8
MAX_HIDDEN_WIDTH = 8_192
MAX_HIDDEN_LAYERS = 8
MAX_ENSEMBLE_MEMBERS = 64


def _show(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def check_range(name: str, value: float, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, integer: bool = False) -> None:
    """ValueError naming the setting when `value` is outside [low, high] (or (low, high] with `low_open`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{name} must be a number, not {value!r}")
    if integer and not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        lo = "" if low is None else f"{'>' if low_open else '≥'} {_show(low)}"
        hi = "" if high is None else f"≤ {_show(high)}"
        raise ValueError(f"{name} must be {' and '.join(p for p in (lo, hi) if p)}, not {value!r}")


#: Training options and their allowed ranges: (low, high, low_open); None = unbounded on that side.
TRAIN_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "alpha": (0, None, True), "beta": (0, None, True), "fixed_lambda": (0, 1, False),
    "epochs": (1, 1_000_000, False), "iters": (1, 10_000_000, False), "meta_batch": (1, 10_000, False),
    "inner_steps": (1, MAX_STEPS, False), "inner_lr": (0, None, True), "outer_lr": (0, None, False),
    "min_outer_lr": (0, None, False), "grad_clip": (0, None, False), "min_std": (0, None, True),
    "support_min": (1, None, False), "support_max": (1, None, False), "query_min": (1, None, False),
    "query_max": (1, None, False), "source_balance": (0, None, False), "val_support_k": (1, None, False),
    "val_max_assays": (1, None, False), "msl_epochs": (0, None, False), "first_order_epochs": (0, None, False),
    "seed": (0, SEED_MAX, False), "bit_dropout": (0, 1, False), "ridge_alpha": (0, None, True),
    "task_mix": (0, 1, False), "task_mix_alpha": (0, None, True), "local_pool": (0, None, False),
    "ridge_share": (0, 1, False),
}


TRAIN_INTEGERS = {"epochs", "iters", "meta_batch", "inner_steps", "support_min", "support_max", "query_min",
                  "query_max", "val_support_k", "val_max_assays", "msl_epochs", "first_order_epochs", "seed",
                  "local_pool"}


def check_train_options(options: dict) -> None:
    """ValueError naming the first training option outside its range (None values are 'not set')."""
    for name, (low, high, low_open) in TRAIN_RANGES.items():
        if options.get(name) is not None:
            check_range(name, options[name], low, high, low_open=low_open, integer=name in TRAIN_INTEGERS)
    hidden = list(options.get("hidden") or [])
    if not 1 <= len(hidden) <= MAX_HIDDEN_LAYERS:
        raise ValueError(f"hidden must list 1 to {MAX_HIDDEN_LAYERS} layer widths, not {len(hidden)}")
    for width in hidden:
        check_range("hidden width", width, 1, MAX_HIDDEN_WIDTH, integer=True)
    if options.get("mix", "none") != "none":
        for layer in options.get("layers") or []:  # mixing positions: 0 = input, i = after hidden block i
            check_range("mixing layer", layer, 0, len(hidden), integer=True)
    for corpus, factor in (options.get("source_weights") or {}).items():
        check_range(f"source_weights.{corpus}", factor, 0, None, low_open=True)
    for low, high in (("support_min", "support_max"), ("query_min", "query_max")):
        if options.get(low) is not None and options.get(high) is not None and options[low] > options[high]:
            raise ValueError(f"{low} ({options[low]}) is larger than {high} ({options[high]})")
