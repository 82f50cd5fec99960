"""``kdlens distill`` and ``kdlens methods``."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from kdlens.cli.errors import user_errors_exit_2
from kdlens.cli.options import PRINT_CONFIG_HELP, THREADS_HELP, combine_overrides, print_config
from kdlens.cli.train_cmd import flag_overrides, split_config_args
from kdlens.config import DistillConfig, load_config


@user_errors_exit_2
def distill(
    args: list[str] = typer.Argument(None, help="[CONFIG.yaml] [key=value ...]"),
    teacher: str = typer.Option(None, help="teacher run directory or checkpoint file"),
    teacher_model: str = typer.Option(None, "--teacher-model", help="teacher model reference (with --teacher-weights, "
                                      "or for a bare checkpoint file)"),
    teacher_weights: str = typer.Option(None, "--teacher-weights", help="teacher weights file trained outside kdlens"),
    student: str = typer.Option(None, help="student model reference: zoo name, torchvision:NAME, timm:NAME, pkg.mod:Class"),
    student_weights: str = typer.Option(None, "--student-weights", help="student initial weights (a local file)"),
    method: str = typer.Option(None, help="e.g. kd, at+kd, fitnet+kd, crd, crd+at+kd (any number of terms; per-term weights as "
                        "weights.NAME=W, e.g. weights.at=1000; see `kdlens methods`)"),
    hints: str = typer.Option(None, help="teacher hint points: 6,27,49 | conventional | auto | names"),
    student_hints: str = typer.Option(None, "--student-hints", help="student layers for the hints (default: "
                                      "same relative depth as the teacher's)"),
    dataset: str = typer.Option(None, help="transfer set: a catalog name, folder:DIR or python:pkg.mod:make "
                                "(default: the teacher run's dataset)"),
    allow_dataset_mismatch: bool = typer.Option(None, "--allow-dataset-mismatch", help="distill on a dataset "
                                                "other than the teacher run's (refused otherwise)"),
    root: str = typer.Option(None, help="dataset root directory (torchvision layout)"),
    epochs: int = typer.Option(None, help="training epochs"),
    batch_size: int = typer.Option(None, "--batch-size", help="mini-batch size (64 in RepDistiller)"),
    lr: float = typer.Option(None, help="initial learning rate (optim.lr)"),
    seed: int = typer.Option(None, help="seed of initialisation, order and augmentation"),
    out: str = typer.Option(None, help="run store directory (default: runs)"),
    name: str = typer.Option(None, help="run name (default: derived from method, models and data)"),
    device: str = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    bf16: bool = typer.Option(None, "--bf16/--no-bf16", help="bfloat16 autocast"),
    channels_last: bool = typer.Option(None, "--channels-last/--no-channels-last", help="channels-last memory format"),
    budget: int = typer.Option(None, help="balanced label budget (limited-label loop)"),
    gamma: float = typer.Option(None, help="weight γ of the cross-entropy term (default: the method table)"),
    alpha: float = typer.Option(None, help="weight α of the logit term (default: the method table)"),
    beta: float = typer.Option(None, help="weight β of the hint term (default: the method table)"),
    temperature: float = typer.Option(None, "--T", help="distillation temperature"),
    cache: str = typer.Option(None, help="teacher-output cache: auto | on | off"),
    log: list[str] = typer.Option(None, "--log", help="also log to: tensorboard | mlflow (repeatable)"),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default sqlite:///OUT/mlflow.db)"),
    num_workers: int = typer.Option(None, "--num-workers", help="DataLoader workers of the streamed data path"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run from its checkpoint"),
    restart: bool = typer.Option(False, "--restart", help="discard the run's checkpoints (and result) and train it anew"),
    resume_from: str = typer.Option("last", "--from", metavar="last|previous|best",
                                    help="with --resume: the checkpoint to continue from (implies --resume)"),
    threads: int = typer.Option(None, "--threads", help=THREADS_HELP),
    show_config: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Distill a student from a trained teacher."""
    from kdlens.train.distill_run import run_distillation

    path, overrides = split_config_args(args)
    flags = flag_overrides(
        model=student, dataset=dataset, root=root, epochs=epochs, batch_size=batch_size, lr=lr,
        seed=seed, out=out, name=name, device=device, bf16=bf16, channels_last=channels_last,
        budget=budget, weights=student_weights, log=log, tracking_uri=tracking_uri, num_workers=num_workers,
    )
    extra = {"teacher.run": teacher, "teacher.model": teacher_model, "teacher.weights": teacher_weights,
             "method": method, "cache": cache, "loss.T": temperature, "gamma": gamma, "alpha": alpha,
             "beta": beta, "allow_dataset_mismatch": allow_dataset_mismatch}
    flags += [f"{k}={v}" for k, v in extra.items() if v is not None]
    # hint lists stay strings here; the library parses "6,27,49" and names
    flags += [f"{k}='{v}'" for k, v in (("hints", hints), ("student_hints", student_hints)) if v is not None]
    cfg = load_config(DistillConfig, path, combine_overrides(flags, overrides))
    if show_config:
        from kdlens.train.teacher import align_with_teacher_data

        print_config(align_with_teacher_data(cfg))
    from kdlens.explain.hint_search import auto_hint_layers
    from kdlens.train.threads import set_threads

    set_threads(threads, log=not quiet)

    outcome = run_distillation(cfg, resume=resume, progress=not quiet, hint_search=auto_hint_layers,
                               restart=restart, resume_from=resume_from, resume_strict=True)
    typer.echo(outcome.summary())


def methods() -> None:
    """List every distillation loss with its kind, default weights and citation."""
    from kdlens.distill import describe_methods

    table = Table("method", "kind", "weights γ/α/β", "hyper-parameters", "citation (defaults from)")
    for row in describe_methods():
        hyper = ", ".join(f"{k}={v}" for k, v in row["hyper"].items() if v is not None)
        weights = f"{row['gamma']:g} / {row['alpha']:g} / {row['beta']:g}"
        table.add_row(row["name"], row["kind"], weights, hyper, f"{row['citation']} ({row['source']})")
    Console().print(table)


@user_errors_exit_2
def tune(
    config: str = typer.Argument(..., help="tune YAML: base (a distill config, or kind: train), space, trials"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
    teacher: str = typer.Option(None, help="teacher run directory or checkpoint file (sets base.teacher.run; "
                                "`kdlens runs` lists the run directories)"),
    show_config: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Search any config keys (optim.lr, batch_size, loss.T, gamma, alpha, …) with Optuna on a
    validation split; resumable.  Writes OUT/NAME.best.yaml: the base with the best trial's
    values, which `kdlens train` / `kdlens distill` run unchanged."""
    from kdlens.config import TuneConfig
    from kdlens.studies.tune import run_tune

    flags = [f"base.teacher.run={teacher}"] if teacher is not None else []
    cfg = load_config(TuneConfig, config, combine_overrides(flags, overrides or []))
    if show_config:
        print_config(cfg)
    result = run_tune(cfg, progress=not quiet)
    typer.echo(f"best: {result['best_params']} → val acc {result['best_val_acc']:.2f}% "
               f"after {result['trials']} trials ({result['storage']})")
    typer.echo(f"best config: {result['best_config']} (kdlens {cfg.base.kind} {result['best_config']})")
