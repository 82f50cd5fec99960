"""``kdlens train``: one supervised run from flags, a YAML file and key=value overrides;
``--ddp N`` trains it data-parallel on N local processes (torchrun)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from kdlens.cli.errors import user_errors_exit_2
from kdlens.cli.options import PRINT_CONFIG_HELP, THREADS_HELP, combine_overrides, print_config
from kdlens.config import ModelConfig, TrainConfig, load_config
from kdlens.errors import KdlensError


def split_config_args(args: list[str] | None) -> tuple[Path | None, list[str]]:
    """``[CONFIG.yaml] [key=value ...]`` → (config path or None, overrides)."""
    args = list(args or [])
    if args and "=" not in args[0]:
        return Path(args[0]), args[1:]
    return None, args


def flag_overrides(**flags) -> list[str]:
    """Map CLI flags (``model="resnet20"``) to dotted overrides; None flags are skipped."""
    mapping = {
        "model": "model.name",
        "dataset": "data.name",
        "root": "data.root",
        "epochs": "epochs",
        "batch_size": "batch_size",
        "lr": "optim.lr",
        "seed": "seed",
        "out": "out",
        "name": "name",
        "device": "device",
        "bf16": "bf16",
        "channels_last": "channels_last",
        "budget": "data.budget",
        "download": "data.download",
        "weights": "model.weights",
        "tracking_uri": "tracking_uri",
        "num_workers": "data.num_workers",
        "stream": "data.stream",
    }
    out = [f"{mapping[k]}={v}" for k, v in flags.items() if v is not None and k != "log"]
    if flags.get("log"):
        out.append("log=[" + ",".join(["jsonl", *(n for n in flags["log"] if n != "jsonl")]) + "]")
    return out


@user_errors_exit_2
def train(
    args: list[str] = typer.Argument(None, help="[CONFIG.yaml] [key=value ...]"),
    model: str = typer.Option(None, help=ModelConfig.model_fields["name"].description),
    weights: str = typer.Option(None, help="initial weights from a local file (a state_dict or a checkpoint)"),
    dataset: str = typer.Option(None, help="dataset: digits, fashion-mnist, cifar10, …, folder:DIR or python:pkg.mod:make"),
    root: str = typer.Option(None, help="dataset root directory"),
    epochs: int = typer.Option(None, help="training epochs"),
    batch_size: int = typer.Option(None, "--batch-size", help="mini-batch size (64 in RepDistiller)"),
    lr: float = typer.Option(None, help="initial learning rate (optim.lr)"),
    seed: int = typer.Option(None, help="seed of initialisation, order and augmentation"),
    out: str = typer.Option(None, help="run store directory (default: runs)"),
    name: str = typer.Option(None, help="run name"),
    device: str = typer.Option(None, help="auto | cpu | cuda"),
    bf16: bool = typer.Option(None, "--bf16/--no-bf16", help="bfloat16 autocast"),
    channels_last: bool = typer.Option(None, "--channels-last/--no-channels-last", help="channels-last memory format"),
    budget: int = typer.Option(None, help="balanced label budget"),
    download: bool = typer.Option(None, "--download/--no-download", help="download a torchvision dataset when "
                                  "its files are missing (needs internet)"),
    log: list[str] = typer.Option(None, "--log", help="also log to: tensorboard | mlflow (repeatable)"),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default sqlite:///OUT/mlflow.db)"),
    num_workers: int = typer.Option(None, "--num-workers", help="DataLoader workers of the streamed data path"),
    stream: str = typer.Option(None, help="folder data: auto | on | off (in memory)"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run from its checkpoint"),
    restart: bool = typer.Option(False, "--restart", help="discard the run's checkpoints (and result) and train it anew"),
    resume_from: str = typer.Option("last", "--from", metavar="last|previous|best",
                                    help="with --resume: the checkpoint to continue from (implies --resume)"),
    threads: int = typer.Option(None, "--threads", help=THREADS_HELP),
    show_config: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    ddp: int = typer.Option(None, "--ddp", metavar="N", help="train data-parallel on N processes of this "
                            "machine (torchrun; gloo on CPU, NCCL on GPU); batch_size stays the global batch"),
) -> None:
    """Train one model (supervised, or semi-supervised with semi=METHOD data.budget=N); under
    torchrun (or with --ddp N) data-parallel."""
    from kdlens.train.semi_run import run_train_config

    path, overrides = split_config_args(args)
    flags = flag_overrides(
        model=model, dataset=dataset, root=root, epochs=epochs, batch_size=batch_size, lr=lr,
        seed=seed, out=out, name=name, device=device, bf16=bf16, channels_last=channels_last,
        budget=budget, download=download, weights=weights, log=log, tracking_uri=tracking_uri,
        num_workers=num_workers, stream=stream,
    )
    cfg = load_config(TrainConfig, path, combine_overrides(flags, overrides))
    if show_config:
        print_config(cfg)
    if cfg.semi is not None and (ddp is not None or "WORLD_SIZE" in os.environ):
        raise KdlensError(f"semi={cfg.semi} trains in one process: leave out --ddp (and torchrun)")
    if ddp is not None or "WORLD_SIZE" in os.environ:
        if restart or resume_from != "last":
            raise KdlensError("--restart and --from are not available with --ddp / torchrun yet: run them "
                              "once without --ddp, or delete the run directory to start anew")
        args = [str(path)] if path else []
        _data_parallel(cfg, ddp, args + flags + overrides, resume, quiet)
        return
    from kdlens.train.threads import set_threads

    set_threads(threads, log=not quiet)
    outcome = run_train_config(cfg, resume=resume, progress=not quiet, restart=restart, resume_from=resume_from,
                               resume_strict=True)
    typer.echo(outcome.summary())


def _data_parallel(cfg: TrainConfig, nproc: int | None, config_args: list[str], resume: bool, quiet: bool) -> None:
    """In a torchrun process: train this process's share.  Otherwise: check, then start
    ``nproc`` processes of ``kdlens train CONFIG_ARGS`` under torchrun and wait for them."""
    from kdlens.train.data_setup import prepare_data
    from kdlens.train.ddp import check_data_parallel, exit_process, launch_local, run_training_ddp

    if "WORLD_SIZE" in os.environ:
        world = int(os.environ["WORLD_SIZE"])
        if nproc is not None and nproc != world:
            raise KdlensError(f"--ddp {nproc} inside a torchrun job of {world} processes: torchrun already "
                              "started the processes; leave out --ddp")
        outcome = run_training_ddp(cfg, resume=resume, progress=not quiet)
        if int(os.environ.get("RANK", 0)) == 0 and outcome is not None:
            typer.echo(outcome.summary())
        exit_process(0)
    assert nproc is not None
    if nproc < 1:
        raise KdlensError(f"--ddp N needs N ≥ 1 processes; got {nproc}")
    check_data_parallel(cfg, nproc, per_node=nproc)
    data = prepare_data(cfg.data)  # a missing dataset or a bad budget fails here, before any process starts
    if not resume:  # decided here: a refusal inside the job would leave the other processes waiting
        from kdlens.train.run import refuse_rerun_without_resume

        refuse_rerun_without_resume(cfg, data)
    flags = ["--resume"] * resume + ["--quiet"] * quiet
    code = launch_local(nproc, "kdlens.cli", ["train", *config_args, *flags])
    if code:
        raise typer.Exit(code)
