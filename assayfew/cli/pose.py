"""`assayfew pose convert|make-data|train|evaluate`: few-shot object pose (azimuth) regression, MR-MAML's
non-mutually-exclusive benchmark, on the meta-learning core."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from assayfew.bounds import MAX_STEPS, SEED_MAX
from assayfew.cli._common import err, guarded, run_options, user_errors
from assayfew.cli._progress import RichReporter, progress_bar
from assayfew.cli.train import regularizer_values
from assayfew.io import check_output_dir, check_output_file, write_json
from assayfew.pose.data import PoseSet, convert_pickle, load_pose
from assayfew.pose.render import RenderConfig, make_pose_data
from assayfew.pose.train import PoseTrainConfig, evaluate_pose, load_pose_model, train_pose, trained_objects

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

_DATA_HELP = "Pose data (.npz from `pose make-data` or `pose convert`)."
_SMALL = {"train_objects": 8, "test_objects": 4, "views": 24, "size": 32}


def _ints(text: Optional[str]) -> Optional[list[int]]:
    return [int(v) for v in text.split(",") if v.strip()] if text else None


def _epoch_line(row: dict) -> str:
    return (f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  validation MSE {-row['val_neg_mse']:.3f} "
            f"± {row['val_mse_ci95']:.3f}  ({row['seconds']:.0f} s)")


def _evaluate(learner, data: PoseSet, shot: int, query: int, episodes: int, steps: Optional[int], seed: int,
              device: str) -> dict:
    with progress_bar() as progress:
        return evaluate_pose(learner, data, k_shot=shot, query=query, episodes=episodes, steps=steps, seed=seed,
                             device=device, progress=RichReporter(progress, "meta-testing"))


def _print_result(result: dict) -> None:
    err.print(f"{result['k_shot']}-shot MSE {result['mse']:.4f} ± {result['ci95']:.4f} (95% CI, {result['episodes']} "
              f"tasks; labels = azimuth / 2π × {result['label_scale']:g})")
    print(json.dumps(result))


@app.command("convert")
@guarded
def convert(
    pkl: Annotated[Path, typer.Argument(help="MR-MAML's pickled (x, y), e.g. train_data_ins.pkl.")],
    out: Annotated[Path, typer.Option(help="The .npz to write.")],
) -> None:
    """Convert MR-MAML's pickled pose data to .npz; only numpy arrays are unpickled (anything else is refused
    before it runs)."""
    with user_errors():
        check_output_file(out)
        data = convert_pickle(pkl, out)
    err.print(f"{data.n_objects} objects × {data.n_views} views of {data.size}×{data.size} images -> {out}")


@app.command("make-data")
@guarded
def make_data(
    out: Annotated[Path, typer.Option(help="Directory for train.npz, test.npz and data.json.")],
    small: Annotated[bool, typer.Option("--small", help="A tiny set for tests: 8 + 4 objects, 24 views, "
                                        "32×32 (options given too override it).")] = False,
    train_objects: Annotated[Optional[int], typer.Option(min=1, max=10_000, help="Training objects (60).")] = None,
    test_objects: Annotated[Optional[int], typer.Option(min=1, max=10_000, help="Test objects (15).")] = None,
    views: Annotated[Optional[int], typer.Option(min=1, max=10_000, help="Views per object (50).")] = None,
    size: Annotated[Optional[int], typer.Option(min=8, max=1024, help="Image side in pixels (128).")] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 0,
) -> None:
    """Render the procedural pose data set: real molecules (shared SIMPD data) in their principal-axis frames
    at seeded random azimuths, as shaded-sphere grayscale images (byte-identical for the same seed)."""
    with user_errors():
        values = (_SMALL if small else {}) | {k: v for k, v in {"train_objects": train_objects, "test_objects": test_objects,
                                                                 "views": views, "size": size}.items() if v is not None}
        cfg = RenderConfig(seed=seed, **values)
        cfg.check()
        check_output_dir(out)
        with progress_bar() as progress:
            task = progress.add_task("rendering", total=cfg.train_objects + cfg.test_objects, info="")
            make_pose_data(out, cfg, progress=lambda done, total: progress.update(task, completed=done))
    err.print(f"{cfg.train_objects} training and {cfg.test_objects} test objects × {cfg.views} views -> {out}")


@app.command("train")
@guarded
def train(
    data: Annotated[Path, typer.Option("--data", help=f"Meta-training data: {_DATA_HELP}")],
    out: Annotated[Path, typer.Option(help="Run directory (config.toml, metrics.csv, model/).")],
    test_data: Annotated[Optional[Path], typer.Option("--test-data", help="Meta-test data, evaluated after "
                                                      "training into OUT/evaluation.json.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file of training options (flags override).")] = None,
    shot: Annotated[Optional[int], typer.Option(min=1, help="Support views per task (K: 10 or 15).")] = None,
    query: Annotated[Optional[int], typer.Option(min=1, help="Query views per training task.")] = None,
    algo: Annotated[Optional[str], typer.Option(help="maml|anil|metasgd")] = None,
    mix: Annotated[Optional[str], typer.Option(help="none|metamix|mixup_ss|mixup_qq|cob")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Beta(α, β) of the mixing weight.")] = None,
    beta: Annotated[Optional[float], typer.Option()] = None,
    layers: Annotated[Optional[str], typer.Option(help="Mixing positions, e.g. 0,4,5 (default: all).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs (validated after each; the best is kept).")] = None,
    iters: Annotated[Optional[int], typer.Option(min=1, help="Meta-iterations per epoch.")] = None,
    meta_batch: Annotated[Optional[int], typer.Option(min=1, help="Tasks per meta-iteration.")] = None,
    inner_steps: Annotated[Optional[int], typer.Option(min=1, max=MAX_STEPS, help="Inner steps at meta-training.")] = None,
    eval_steps: Annotated[Optional[int], typer.Option(min=1, max=MAX_STEPS, help="Inner steps at meta-testing.")] = None,
    inner_lr: Annotated[Optional[float], typer.Option()] = None,
    outer_lr: Annotated[Optional[float], typer.Option()] = None,
    first_order: Annotated[Optional[bool], typer.Option("--first-order/--second-order")] = None,
    regularizer: Annotated[Optional[str], typer.Option(
        help="none|weight_decay|cavia|meta_dropout|mr_maml|taml (default none).")] = None,
    reg_opt: Annotated[Optional[list[str]], typer.Option(
        "--reg-opt", metavar="KEY=VALUE", help="A regularizer option, e.g. beta=1e-5 (repeatable).")] = None,
    encoder: Annotated[Optional[str], typer.Option(help="Channels of the stride-2 encoder convolutions "
                                                   "(not adapted), e.g. 8,16,16,16.")] = None,
    filters: Annotated[Optional[int], typer.Option(min=1, help="Channels of the adapted conv blocks (16).")] = None,
    blocks: Annotated[Optional[int], typer.Option(min=1, help="Adapted conv blocks (2).")] = None,
    val_episodes: Annotated[Optional[int], typer.Option(min=1, help="Validation tasks per epoch.")] = None,
    episodes: Annotated[int, typer.Option(min=1, help="Meta-test tasks for --test-data.")] = 1000,
    seed: Annotated[Optional[int], typer.Option(min=0, max=SEED_MAX)] = None,
    device: Annotated[Optional[str], typer.Option(help="auto|cpu|cuda")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue OUT from its last checkpoint.")] = False,
) -> None:
    """Meta-train PoseNet with MAML/ANIL/MetaSGD and MetaMix (or another mixer) on K-shot pose tasks."""
    with user_errors():
        flags = {"k_shot": shot, "query": query, "algo": algo, "mix": mix, "alpha": alpha, "beta": beta,
                 "layers": _ints(layers), "epochs": epochs, "iters": iters, "meta_batch": meta_batch,
                 "inner_steps": inner_steps, "eval_steps": eval_steps, "inner_lr": inner_lr, "outer_lr": outer_lr,
                 "first_order": first_order, "encoder": _ints(encoder), "filters": filters, "blocks": blocks,
                 "val_episodes": val_episodes, "seed": seed, "device": device}
        values = run_options(config, out, resume, flags)
        cfg = PoseTrainConfig.from_dict(regularizer_values(values, regularizer, reg_opt))
        pose = load_pose(data)
        test = load_pose(test_data) if test_data is not None else None
        cfg.check_data(pose)  # before OUT is made
        check_output_dir(out)
        err.print(f"meta-training on {pose.n_objects} objects × {pose.n_views} views from {pose.source}")
        with progress_bar() as progress:
            fitted = train_pose(cfg, pose, out, resume=resume,
                                reporter=RichReporter(progress, "meta-training", _epoch_line))
        err.print(f"best epoch {fitted.best_epoch}: validation MSE {-fitted.best_val:.4f}; model in {out / 'model'}")
        if test is not None:
            learner, _ = load_pose_model(out / "model")
            result = _evaluate(learner, test, cfg.k_shot, cfg.query, episodes, cfg.eval_steps, cfg.seed, cfg.device)
            write_json(out / "evaluation.json", result)
    if test is not None:
        _print_result(result)


@app.command("evaluate")
@guarded
def evaluate(
    model: Annotated[Path, typer.Option(help="Model directory (a run's model/).")],
    data: Annotated[Path, typer.Option("--data", help=_DATA_HELP)],
    shot: Annotated[Optional[int], typer.Option(min=1, help="Support views per task (default: the model's K).")] = None,
    query: Annotated[int, typer.Option(min=1, help="Query views per task.")] = 10,
    episodes: Annotated[int, typer.Option(min=1, help="Test tasks (>= 1,000 for the reference CI).")] = 1000,
    steps: Annotated[Optional[int], typer.Option(min=1, max=MAX_STEPS,
                                                 help="Adaptation steps (default: the model's eval steps).")] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 0,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda")] = "auto",
    trained: Annotated[bool, typer.Option("--trained-objects", help="DATA is the model's training data: use only "
                                          "the objects it was meta-trained on (not its validation ones), to see "
                                          "the memorisation gap.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Write the result as JSON here too.")] = None,
) -> None:
    """MSE ± 95% CI over seeded K-shot meta-test tasks (one object each); prints one JSON line."""
    with user_errors():
        if out is not None:
            check_output_file(out)
        learner, config = load_pose_model(model)
        shot = int(config["episodes"]["k_shot"]) if shot is None else shot
        steps = int(config["episodes"]["eval_steps"]) if steps is None else steps
        pose = trained_objects(load_pose(data), config) if trained else load_pose(data)
        result = _evaluate(learner, pose, shot, query, episodes, steps, seed, device) | {"trained_objects": trained}
        if out is not None:
            write_json(out, result)
    _print_result(result)
