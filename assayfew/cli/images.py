"""`assayfew images train|evaluate`: few-shot image classification (Omniglot, MiniImagenet) on the
meta-learning core."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from assayfew.bounds import MAX_STEPS
from assayfew.cli._common import err, guarded, run_options, user_errors
from assayfew.cli._progress import RichReporter, progress_bar
from assayfew.images.data import is_runs_zip, load_images, read_omniglot_runs
from assayfew.images.train import ImageTrainConfig, evaluate_images, evaluate_runs, load_image_model, train_images
from assayfew.io import write_json

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

_DATA_HELP = "Omniglot zip, MiniImagenet directory (with --split) or an .npz image cache."
_TEST_HELP = "Meta-test images: as --data of train, or Omniglot's all_runs.zip (20 one-shot runs)."


def _epoch_line(row: dict) -> str:
    return (f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  validation accuracy {100 * row['val_accuracy']:.2f}% "
            f"± {100 * row['val_ci95']:.2f}%  ({row['seconds']:.0f} s)")


def _evaluate(learner, data: Path, split: Optional[str], shot: int, query: int, episodes: int,
              steps: Optional[int], seed: int, device: str, nme: bool = False) -> dict:
    images = load_images(data, split=split, size=learner.model.image_size)
    if images.channels != learner.model.in_channels:
        raise ValueError(f"{data}: {images.channels}-channel images, the model takes {learner.model.in_channels}")
    with progress_bar() as progress:
        return evaluate_images(learner, images, k_shot=shot, query=query, episodes=episodes, steps=steps, nme=nme,
                               seed=seed, device=device, progress=RichReporter(progress, "meta-testing"))


def _print_result(result: dict) -> None:
    what = "one-shot runs" if "runs" in result else "episodes"
    err.print(f"{result['n_way']}-way {result['k_shot']}-shot accuracy {100 * result['accuracy']:.2f}% "
              f"± {100 * result['ci95']:.2f}% (95% CI, {result['episodes']} {what})")
    print(json.dumps(result))


@app.command("train")
@guarded
def train(
    data: Annotated[Path, typer.Option("--data", help=f"Meta-training images: {_DATA_HELP}")],
    out: Annotated[Path, typer.Option(help="Run directory (config.toml, metrics.csv, model/).")],
    split: Annotated[Optional[str], typer.Option(help="MiniImagenet split to train on (train).")] = None,
    test_data: Annotated[Optional[Path], typer.Option("--test-data", help="Meta-test images, evaluated after "
                                                      "training into OUT/evaluation.json.")] = None,
    test_split: Annotated[Optional[str], typer.Option(help="MiniImagenet split to test on (test).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file of training options (flags override).")] = None,
    way: Annotated[Optional[int], typer.Option(help="Classes per task (N).")] = None,
    shot: Annotated[Optional[int], typer.Option(help="Support images per class (K).")] = None,
    query: Annotated[Optional[int], typer.Option(help="Query images per class in training tasks.")] = None,
    nme: Annotated[Optional[bool], typer.Option("--nme/--me", help="Non-mutually-exclusive training tasks "
                                                "(fixed label groups) or the usual mutually exclusive ones.")] = None,
    algo: Annotated[Optional[str], typer.Option(help="maml|anil|metasgd")] = None,
    mix: Annotated[Optional[str], typer.Option(help="none|metamix|mixup_ss|mixup_qq|cob")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Beta(α, β) of the mixing weight.")] = None,
    beta: Annotated[Optional[float], typer.Option()] = None,
    layers: Annotated[Optional[str], typer.Option(help="Candidate mixing positions, e.g. 0,1,2,3,4")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs (validated after each; the best is kept).")] = None,
    shuffle: Annotated[Optional[bool], typer.Option("--shuffle/--no-shuffle", help="MetaMix Channel Shuffle: "
                                                    "swap a channel group with a paired class's.")] = None,
    iters: Annotated[Optional[int], typer.Option(help="Meta-iterations per epoch.")] = None,
    meta_batch: Annotated[Optional[int], typer.Option(help="Tasks per meta-iteration.")] = None,
    inner_steps: Annotated[Optional[int], typer.Option(help="Inner steps at meta-training.")] = None,
    eval_steps: Annotated[Optional[int], typer.Option(help="Inner steps at meta-testing.")] = None,
    inner_lr: Annotated[Optional[float], typer.Option()] = None,
    outer_lr: Annotated[Optional[float], typer.Option()] = None,
    first_order: Annotated[Optional[bool], typer.Option("--first-order/--second-order")] = None,
    filters: Annotated[Optional[int], typer.Option(help="Channels of each conv block (64).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Resize images to this many pixels a side "
                                                      "(default 28 for Omniglot, 84 for MiniImagenet).")] = None,
    val_episodes: Annotated[Optional[int], typer.Option(help="Validation episodes per epoch.")] = None,
    episodes: Annotated[int, typer.Option(help="Meta-test episodes for --test-data.")] = 600,
    test_query: Annotated[int, typer.Option(help="Query images per class in meta-test episodes.")] = 15,
    seed: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[Optional[str], typer.Option(help="auto|cpu|cuda")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue OUT from its last checkpoint.")] = False,
) -> None:
    """Meta-train Conv-4 with MAML/ANIL/MetaSGD and MetaMix (or another mixer) on N-way K-shot episodes."""
    with user_errors():
        flags = {"n_way": way, "k_shot": shot, "query": query, "nme": nme, "algo": algo, "mix": mix,
                 "alpha": alpha, "beta": beta, "shuffle": shuffle, "epochs": epochs, "iters": iters, "meta_batch": meta_batch,
                 "inner_steps": inner_steps, "eval_steps": eval_steps, "inner_lr": inner_lr, "outer_lr": outer_lr,
                 "first_order": first_order, "filters": filters, "image_size": image_size,
                 "val_episodes": val_episodes, "seed": seed, "device": device,
                 "layers": [int(v) for v in layers.split(",") if v.strip()] if layers else None}
        cfg = ImageTrainConfig.from_dict(run_options(config, out, resume, flags))
        images = load_images(data, split=split or ("train" if data.is_dir() else None), size=cfg.image_size)
        err.print(f"meta-training on {images.n_classes} classes, {len(images)} images from {images.source}")
        with progress_bar() as progress:
            fitted = train_images(cfg, images, out, resume=resume, reporter=RichReporter(progress, "meta-training", _epoch_line))
        err.print(f"best epoch {fitted.best_epoch}: validation accuracy {100 * fitted.best_val:.2f}%; "
                  f"model in {out / 'model'}")
        if test_data is not None:
            learner, _ = load_image_model(out / "model")
            result = _evaluate(learner, test_data, test_split or ("test" if test_data.is_dir() else None),
                               cfg.k_shot, test_query, episodes, cfg.eval_steps, cfg.seed, cfg.device)
            write_json(out / "evaluation.json", result)
    if test_data is not None:
        _print_result(result)


@app.command("evaluate")
@guarded
def evaluate(
    model: Annotated[Path, typer.Option(help="Model directory (a run's model/).")],
    data: Annotated[Path, typer.Option("--data", help=_TEST_HELP)],
    split: Annotated[Optional[str], typer.Option(help="MiniImagenet split (test).")] = None,
    shot: Annotated[int, typer.Option(help="Support images per class (K).")] = 1,
    query: Annotated[int, typer.Option(help="Query images per class.")] = 15,
    episodes: Annotated[int, typer.Option(help="Test episodes (>= 600 for the usual 95% CI).")] = 600,
    steps: Annotated[Optional[int], typer.Option(min=1, max=MAX_STEPS,
                                                 help="Adaptation steps (default: the model's eval steps).")] = None,
    nme: Annotated[bool, typer.Option("--nme/--me", help="Fixed label groups in test episodes too.")] = False,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda")] = "auto",
    out: Annotated[Optional[Path], typer.Option(help="Write the result as JSON here too.")] = None,
) -> None:
    """Accuracy ± 95% CI over seeded N-way K-shot meta-test episodes (N = the model's); prints one JSON line."""
    with user_errors():
        learner, config = load_image_model(model)
        if steps is None:
            steps = int(config["episodes"]["eval_steps"])
        if is_runs_zip(data):  # Omniglot's all_runs.zip: Lake et al.'s 20 one-shot runs
            with progress_bar() as progress:
                result = evaluate_runs(learner, read_omniglot_runs(data, size=learner.model.image_size),
                                       steps=steps, device=device,
                                       progress=RichReporter(progress, "one-shot runs"))
        else:
            result = _evaluate(learner, data, split or ("test" if data.is_dir() else None), shot, query, episodes,
                               steps, seed, device, nme)
        if out is not None:
            write_json(out, result)
    _print_result(result)
