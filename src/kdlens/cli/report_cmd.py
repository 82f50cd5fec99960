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
    formats: str = typer.Option("png", "--formats",
                                help="figure files to write into report_figures/ next to the HTML, comma-separated: "
                                     "png, svg, pdf (e.g. png,svg,pdf; SVG and PDF keep text as text, for papers)"),
) -> None:
    """Write one self-contained HTML report (figures inline, no network) plus CSV/JSON of every number
    (with the run, fold and seed of each) and every figure as files (--formats)."""
    from kdlens.figures.style import parse_formats
    from kdlens.report.html import write_report

    chosen = parse_formats(formats)  # a wrong format is exit 2 before any work
    path = write_report(target, out=out, scale=scale, title=title, formats=chosen)
    typer.echo(str(path))
