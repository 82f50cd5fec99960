"""Entry point: ``kdlens COMMAND``."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from kdlens.cli.errors import user_errors_exit_2
from kdlens.cli.distill_cmd import distill, methods, tune
from kdlens.cli.embed_cmd import embed
from kdlens.cli.hints_cmd import hints
from kdlens.cli.profile_cmd import profile
from kdlens.cli.report_cmd import report
from kdlens.cli.softlabels_cmd import softlabels_app
from kdlens.cli.study_cmd import study_app
from kdlens.cli.train_cmd import train

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="kdlens: train, distill and explain knowledge distillation.",
    pretty_exceptions_enable=False,
)
app.command()(train)
app.command()(distill)
app.command()(methods)
app.command()(tune)
app.add_typer(study_app, name="study")
app.add_typer(softlabels_app, name="softlabels")
app.command()(hints)
app.command()(embed)
app.command()(report)
app.command()(profile)


@app.command()
@user_errors_exit_2
def runs(
    out: str = typer.Option("runs", help="run store directory"),
    status: str = typer.Option(None, help="running | interrupted (its process is gone) | done | failed"),
) -> None:
    """List the runs of a run store; a run whose process is gone (killed) shows `interrupted`."""
    from kdlens.errors import unknown_name
    from kdlens.store import RunIndex
    from kdlens.store.index import STATUSES

    if status is not None and status not in STATUSES:
        raise unknown_name("status", status, STATUSES)

    table = Table("id", "kind", "status", "final acc", "top-5", "best acc", "top-5 at best", "reason")
    for rec in RunIndex(out).list(status):
        fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
        table.add_row(
            rec.id, rec.kind, rec.status, fmt(rec.metrics.get("final_acc")), fmt(rec.metrics.get("final_acc5")),
            fmt(rec.metrics.get("best_acc")), fmt(rec.metrics.get("best_acc5")), rec.reason or "",
        )
    Console().print(table)


@app.command()
def models(
    num_classes: int = typer.Option(10, help="classes for the parameter count"),
    in_channels: int = typer.Option(3),
) -> None:
    """List the model zoo with parameter counts and feature-tap counts."""
    from kdlens.models import count_parameters, create_model, list_models, list_taps

    table = Table("model", "parameters", "hint blocks", "taps (pre+post+pen+logits)")
    for name in list_models():
        model = create_model(name, num_classes=num_classes, in_channels=in_channels)
        blocks = len(getattr(model, "hint_blocks", ()))
        table.add_row(name, f"{count_parameters(model):,}", str(blocks), str(len(list_taps(model, form="all"))))
    Console().print(table)


@app.command()
@user_errors_exit_2
def demo(
    out: str = typer.Option("runs/demo", help="where the demo writes its runs"),
    dataset: str = typer.Option("digits", help="digits (embedded) or fashion-mnist"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """The main job: the three studies at smoke scale on the embedded data, then the HTML report."""
    from kdlens.demo import run_demo

    run_demo(out=out, dataset=dataset, progress=not quiet)


def main() -> None:  # pragma: no cover - console entry
    app()
