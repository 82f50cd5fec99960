"""Entry point: ``kdlens COMMAND``."""

from __future__ import annotations

import typer

from kdlens.cli.errors import user_errors_exit_2
from kdlens.cli.distill_cmd import distill, methods, tune
from kdlens.cli.embed_cmd import embed_app
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
app.add_typer(embed_app, name="embed")
app.command()(report)
app.command()(profile)


FORMATS = ("table", "tsv")


def _check_format(fmt: str) -> None:
    from kdlens.errors import unknown_name

    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS)


def _print_rows(columns: list[str], rows: list[tuple[str, ...]], fmt: str, *, title: str | None = None,
                folded: tuple[str, ...] = ()) -> None:
    """``rows`` as a rich table (never cut: a terminal folds the ``folded`` columns, other output
    gets a console as wide as the table) or as tab-separated text with a header line."""
    if fmt == "tsv":
        clean = lambda v: str(v).replace("\t", " ").replace("\n", " ")  # noqa: E731
        for row in [columns, *rows]:
            typer.echo("\t".join(clean(v) for v in row))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    widest = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    least = [min(w, 24) if c in folded else w for c, w in zip(columns, widest)]
    table = Table(title=title, title_justify="left")
    for name, width in zip(columns, least):  # no column is cut; a folded one wraps onto more lines
        table.add_column(name, overflow="fold", no_wrap=name not in folded, min_width=width)
    for row in rows:
        table.add_row(*(Text(v) for v in row))  # as they are: no console markup in paths or names
    console = Console()
    border = 3 * len(columns) + 1
    if not console.is_terminal or sum(least) + border > console.width:  # a pipe, a file, a narrow terminal
        console = Console(width=max(80, sum(widest) + border))  # one line per row, whatever the width
    console.print(table)


@app.command()
@user_errors_exit_2
def runs(
    out: str = typer.Option("runs", help="run store directory (must exist; opened read-only)"),
    status: str = typer.Option(None, help="running | interrupted (its process is gone) | done | failed"),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="also the stores nested under --out "
                                   "(every directory with a runs.sqlite: study directories)"),
    fmt: str = typer.Option("table", "--format", help="table | tsv (tab-separated, full values, for scripts)"),
) -> None:
    """List the runs of a run store: path, model, dataset, method, top-1 / top-5 accuracy (%, final
    epoch), date, status; a run whose process is gone (killed) shows `interrupted`."""
    from kdlens.errors import unknown_name
    from kdlens.store.index import STATUSES
    from kdlens.store.listing import COLUMNS, list_runs, nested_stores

    if status is not None and status not in STATUSES:
        raise unknown_name("status", status, STATUSES)
    _check_format(fmt)
    rows = list_runs(out, status, recursive=recursive)
    _print_rows(list(COLUMNS), [r.cells() for r in rows], fmt, folded=("path",))
    if fmt == "table":
        for r in rows:  # in full: a table cell would be cut
            if r.reason and r.status in ("failed", "interrupted"):
                typer.echo(f"{r.status} {r.path}: {r.reason}")
        nested = [] if recursive else nested_stores(out)
        if nested:
            typer.echo(f"{len(nested)} more store{'s' if len(nested) != 1 else ''} under {out} "
                       f"(e.g. {nested[0]}): add --recursive to list them")


@app.command()
@user_errors_exit_2
def models(
    num_classes: int = typer.Option(10, help="classes for the parameter count"),
    in_channels: int = typer.Option(3, help="input channels for the parameter count"),
    fmt: str = typer.Option("table", "--format", help="table | tsv"),
) -> None:
    """List the model zoo with parameter counts, hint blocks and feature taps: `taps` is
    `len(list_taps(model))` (block outputs + penultimate + logits: the names hints and embeddings
    take); `taps with pre-activations` is `len(list_taps(model, form="all"))`."""
    import warnings

    from kdlens.models import count_parameters, create_model, list_models, list_taps

    _check_format(fmt)
    columns = ["model", "parameters", "hint blocks", "taps", "taps with pre-activations"]
    rows = []
    for name in list_models():
        with warnings.catch_warnings():  # listing a deprecated alias is not using it
            warnings.simplefilter("ignore", DeprecationWarning)
            model = create_model(name, num_classes=num_classes, in_channels=in_channels)
        blocks = len(getattr(model, "hint_blocks", ()))
        rows.append((name, f"{count_parameters(model):,}", str(blocks), str(len(list_taps(model))),
                     str(len(list_taps(model, form="all")))))
    _print_rows(columns, rows, fmt, title='taps: list_taps(model); with pre-activations: list_taps(model, form="all")')


@app.command()
@user_errors_exit_2
def demo(
    out: str = typer.Option("runs/demo", help="where the demo writes its runs"),
    dataset: str = typer.Option("digits", help="digits (embedded) or fashion-mnist"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """The main job: the three studies at smoke scale on the embedded data, then the HTML report."""
    from kdlens.demo import run_demo

    run_demo(out=out, dataset=dataset, progress=not quiet)


def main() -> None:  # pragma: no cover - console entry
    app()
