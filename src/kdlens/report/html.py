"""``kdlens report``: one self-contained HTML file for one or more studies, plus every number
as CSV and JSON.

The HTML has no external reference at all: PNG figures are inlined as base64 ``data:`` URIs,
the style sheet is inline, there is no script.  Next to it, ``report_data/SECTION__TABLE.csv``
holds each table's raw numbers (tidy rows, each with the run, fold and seed it came from),
``report_figures/SECTION__FIGURE.{png,svg,pdf}`` every figure in the formats asked for
(``formats``; SVG and PDF keep their text as text, for papers) and ``report.json`` all the
numbers plus the figure files and the task status of every study.

Targets: a study directory (holds ``study.json``), a study YAML (with ``scale``), or a folder
whose sub-folders (up to two levels down) are study directories — e.g. ``runs/demo``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlens.errors import KdlensError
from kdlens.figures.style import parse_formats
from kdlens.report.figure_files import FIGURE_DIR, write_figures
from kdlens.report.sections import PAPERS, ReportData, Section, build_sections
from kdlens.store import atomic_write_text
from kdlens.studies.grid import Study, open_study, status_rows
from kdlens.studies.papers import tidy_csv

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px;background:#fff;min-height:100vh}
h1{font-size:28px;margin:8px 0 4px}h2{font-size:22px;margin:40px 0 6px;border-bottom:2px solid #d0d7de;padding-bottom:4px}
h3{font-size:17px;margin:28px 0 4px}p.meta{color:#57606a;margin:2px 0}
p.caption{background:#eef6ff;border-left:4px solid #4a90d9;padding:6px 10px;margin:6px 0 12px;font-size:14px}
p.missing{background:#fff8e5;border-left:4px solid #d4a72c;padding:6px 10px;font-style:italic}
p.note{color:#8a4600;font-size:13px}
table{border-collapse:collapse;margin:2px 0 16px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f0f3f6}td:first-child,th:first-child{text-align:left}
p.tabletitle{font-size:13px;color:#57606a;margin:10px 0 2px}
figure{margin:10px 0 20px}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{font-size:13px;color:#57606a}span.files{font-size:12px;color:#8c959f}
nav ul{columns:2;font-size:14px}td.failed{color:#cf222e}td.done{color:#1a7f37}td.blocked{color:#9a6700}
details{margin:8px 0}summary{cursor:pointer;color:#0969da}
"""


def find_studies(targets: Sequence[str | Path], scale: str | None = None) -> list[Study]:
    studies: list[Study] = []
    for target in targets:
        p = Path(target)
        if p.is_file():
            study = open_study(p, scale)
            if not (study.directory / "study.json").exists():
                raise KdlensError(f"study {study.name!r} ({study.scale}) has not run yet: no {study.directory}/study.json; "
                                  f"run `kdlens study run {p} --scale {study.scale}` first")
            studies.append(open_study(study.directory))
        elif (p / "study.json").is_file():
            studies.append(open_study(p))
        elif p.is_dir():
            found = sorted({q.parent for q in [*p.glob("*/study.json"), *p.glob("*/*/study.json")]})
            if not found:
                raise KdlensError(f"{str(p)!r} holds no study (no study.json in it or its sub-folders); "
                                  "give a study directory, a study YAML, or a folder of studies")
            studies += [open_study(q) for q in found]
        else:
            raise KdlensError(f"{str(p)!r} does not exist; give a study directory, a study YAML or a folder of studies")
    return studies


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" loading="eager">'


def _table(table: Any) -> str:
    out = [f'<p class="tabletitle">{html.escape(table.title)}</p>'] if table.title else []
    out.append("<table>")
    out.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns) + "</tr>")
    for row in table.rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _figure_html(sec: Section, fig: Any) -> str:
    names = ", ".join(Path(f).name for f in fig.files)
    also = f' <span class="files">({html.escape(FIGURE_DIR)}/: {html.escape(names)})</span>' if names else ""
    return f"<figure>{_img(fig.png, fig.title)}<figcaption>{html.escape(fig.title)}{also}</figcaption></figure>"


def _section_html(sec: Section) -> str:
    parts = [f'<section id="{sec.id}"><h3>{html.escape(sec.title)}</h3>',
             f'<p class="caption">{html.escape(sec.caption)}</p>']
    if sec.missing:
        parts.append(f'<p class="missing">{html.escape(sec.missing)}</p>')
    for table in sec.tables:
        parts.append(_table(table))
    for fig in sec.figures:
        parts.append(_figure_html(sec, fig))
    for note in sec.notes:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _status_html(study: Study, rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    out = [f"<details><summary>{html.escape(study.name)} ({html.escape(study.scale)}): {len(rows)} tasks — "
           f"{html.escape(summary)}</summary><table>",
           "<tr><th>task</th><th>kind</th><th>status</th><th>test acc</th><th>top-5</th><th>seconds</th>"
           "<th>reason</th></tr>"]
    for r in rows:
        acc = "" if r["final_acc"] is None else f"{r['final_acc']:.2f}"
        acc5 = "" if r.get("final_acc5") is None else f"{r['final_acc5']:.2f}"
        secs = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        out.append(f"<tr><td>{html.escape(r['task'])}</td><td>{r['kind']}</td><td class=\"{r['status']}\">{r['status']}</td>"
                   f"<td>{acc}</td><td>{acc5}</td><td>{secs}</td><td style=\"text-align:left;white-space:normal\">"
                   f"{html.escape(r['reason'])}</td></tr>")
    out.append("</table></details>")
    return "\n".join(out)


def render(studies: Sequence[Study], sections: Sequence[Section], title: str = "kdlens report") -> str:
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="meta">generated {now} by kdlens from {len(studies)} '
            f"stud{'y' if len(studies) == 1 else 'ies'}: "
            + ", ".join(f"{html.escape(s.name)} ({html.escape(s.scale)}, <code>{html.escape(str(s.directory))}</code>)"
                        for s in studies) + "</p>"]
    filled = sum(1 for s in sections if s.filled)
    body.append(f'<p class="meta">{filled} of {len(sections)} sections filled; every number is also in '
                "<code>report.json</code> and <code>report_data/*.csv</code> (with the run, fold and seed of each) "
                f"next to this file, every figure in <code>{FIGURE_DIR}/</code>.</p>")
    body.append("<nav><ul>" + "".join(
        f'<li><a href="#{s.id}">{html.escape(PAPERS[s.paper][0])}: {html.escape(s.title)}</a>'
        f"{'' if s.filled else ' (not run yet)'}</li>" for s in sections) + "</ul></nav>")
    for paper, (name, cite, example) in PAPERS.items():
        body.append(f"<h2>{html.escape(name)}</h2><p class=\"meta\">{html.escape(cite)} · <code>{example}</code></p>")
        body += [_section_html(s) for s in sections if s.paper == paper]
    body.append("<h2>Runs</h2>")
    body += [_status_html(s, status_rows(s)) for s in studies]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")


def write_report(
    targets: Sequence[str | Path], out: str | Path | None = None, scale: str | None = None,
    title: str = "kdlens report", formats: str | Sequence[str] = ("png",),
) -> Path:
    """Build the report for ``targets``; returns the path of the HTML file.

    ``out``: the HTML path (default: ``report.html`` in the study directory, or in the folder
    of studies given).  ``formats``: the files of every figure in ``report_figures/`` (any of
    png, svg, pdf; e.g. ``"png,svg,pdf"``).
    """
    formats = parse_formats(formats)  # a wrong format fails before any work
    studies = find_studies(targets, scale)
    if out is None:
        first = Path(targets[0])
        base = studies[0].directory if len(studies) == 1 else (first if first.is_dir() else first.parent)
        out = base / "report.html"
    return write_report_of(ReportData(studies), out, title, formats)


def write_report_of(data: ReportData, out: str | Path, title: str = "kdlens report",
                    formats: str | Sequence[str] = ("png",)) -> Path:
    """The report of the studies in ``data`` (see :func:`write_report`) at ``out``."""
    formats = parse_formats(formats)
    studies = data.studies
    out = Path(out)
    sections = build_sections(data)
    write_figures(sections, out.parent / FIGURE_DIR, formats)
    data_dir = out.parent / "report_data"
    numbers: dict[str, Any] = {"sections": {}, "studies": {}}
    for sec in sections:
        numbers["sections"][sec.id] = {"title": sec.title, "paper": sec.paper, "missing": sec.missing,
                                       "tables": {t.name: t.numbers for t in sec.tables},
                                       "figures": [{"title": f.title, "files": [f"{FIGURE_DIR}/{Path(p).name}"
                                                                                for p in f.files]}
                                                   for f in sec.figures]}
        for t in sec.tables:
            if t.numbers:
                _write_csv(data_dir / f"{sec.id}__{t.name}.csv", t.numbers)
    for s in studies:
        numbers["studies"][f"{s.name}/{s.scale}"] = {"directory": str(s.directory), "tasks": status_rows(s)}
    atomic_write_text(out.parent / "report.json", json.dumps(numbers, indent=1, default=str))
    atomic_write_text(out, render(studies, sections, title))
    out.chmod(0o644)  # a page to share (atomic writes create 0600 files)
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, tidy_csv(rows, lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v))
