"""``kdlens report``: one self-contained HTML report of one or more studies."""

from __future__ import annotations

import typer

from kdlens.cli.errors import user_errors_exit_2


@user_errors_exit_2
def report(
    target: list[str] = typer.Argument(..., help="study directory, study YAML, or a folder of studies (e.g. runs/demo)"),
    scale: str = typer.Option(None, help="scale of a study YAML: smoke | small | full"),
    out: str = typer.Option(None, help="HTML file (default: report.html in the study folder)"),
    title: str = typer.Option("kdlens report", help="title of the page"),
) -> None:
    """Write one self-contained HTML report (figures inline, no network) plus CSV/JSON of every number."""
    from kdlens.report.html import write_report

    path = write_report(target, out=out, scale=scale, title=title)
    typer.echo(str(path))
