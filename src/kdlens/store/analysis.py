"""Where an analysis writes and how it is found again (``kdlens hints``, ``embed``, ``softlabels …``).

An analysis of trained models is recorded like a run (issue 14): ``--out`` is the run store,
as for ``train`` and ``distill`` (default ``runs``), and each analysis gets its own directory

    STORE/<kind>[-<command>]-<model>-<config hash[:10]>/

beside a row of that kind in ``STORE/runs.sqlite`` (status running / done / failed / why),
so it is never written into the current directory or into a finished run's directory, a
finished one is skipped when its command runs again, and a later step finds it in the store
(``kdlens distill --hints auto`` reuses a finished ``hints`` analysis of the same teacher).

This module only names and finds; recording goes through
:func:`kdlens.train.run.execute_run` (called by :func:`kdlens.explain.inputs.run_analysis`).
No torch here: the store layer stays light.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from kdlens.errors import KdlensError

#: ``--out`` of every analysis command: the run store, as for train and distill
DEFAULT_STORE = "runs"
#: store-row kinds of the analyses
ANALYSIS_KINDS = ("hints", "embed", "softlabels")

_RUN_HASH = re.compile(r"-[0-9a-f]{10}$")


def subject_label(ref: str | Path) -> str:
    """A short name for what an analysis looks at: a run directory's name without its
    config-hash suffix (``runs/resnet8-digits-1a2b3c4d5e`` → ``resnet8-digits``), or a
    checkpoint / weights file's stem; characters other than letters, digits, ``-_.`` → ``_``."""
    p = Path(ref)
    base = p.name if p.is_dir() or not p.suffix else p.stem
    base = _RUN_HASH.sub("", base) or base
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in base).strip(".") or "model"


def distinct_names(refs: Sequence[str | Path], fallback: str = "model") -> list[str]:
    """Distinct display names for model references: a run directory's name, a file's stem;
    repeats get ``-2``, ``-3``, … (``[a/x, b/x]`` → ``[x, x-2]``)."""
    names: list[str] = []
    for ref in refs:
        p = Path(ref).resolve()
        base = (p.stem if p.is_file() else p.name) or fallback
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def analysis_name(kind: str, subjects: Sequence[str | Path], command: str | None = None) -> str:
    """The directory name of an analysis without its hash: ``hints-resnet8-digits``,
    ``softlabels-entropy-small+1`` (the first of two teachers, and one more)."""
    labels = [subject_label(s) for s in subjects]
    head = labels[0] if labels else "model"
    if len(labels) > 1:
        head += f"+{len(labels) - 1}"
    return "-".join([kind, *([command] if command else []), head])


def check_store(out: str | Path, flag: str = "--out") -> Path:
    """``out`` as a run store: a directory (made when recording), never a file or a run's own
    directory (an analysis is recorded beside runs, not inside a finished one)."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise KdlensError(f"{flag} {str(out)!r} is a file; {flag} is the run store the analysis is recorded in "
                          f"(a directory, default {DEFAULT_STORE})")
    if (path / "config.yaml").is_file() or (path / "result.json").is_file():
        raise KdlensError(f"{flag} {str(out)!r} is a run directory; {flag} is the run store the analysis is recorded "
                          f"in (default {DEFAULT_STORE}), e.g. {flag} {path.parent}")
    return path


def store_holding(path: str | Path) -> Path | None:
    """The run store that holds ``path``: the nearest of it and its parents with a
    ``runs.sqlite`` (``None`` when there is none)."""
    p = Path(path).expanduser().absolute()
    for folder in (p, *p.parents):
        if (folder / "runs.sqlite").is_file():
            return folder
    return None


def finished_analyses(store: str | Path | None, kind: str) -> list[Path]:
    """Directories of the finished analyses of ``kind`` recorded in ``store``, newest first
    (``[]`` when ``store`` is not a run store)."""
    if store is None or not (Path(store) / "runs.sqlite").is_file():
        return []
    from kdlens.store.index import RunIndex

    found = []
    for rec in reversed(RunIndex(store, readonly=True).list("done")):
        if rec.kind != kind:
            continue
        folder = Path(store) / rec.id  # the row's path may be relative to another working directory
        found.append(folder if folder.is_dir() else Path(rec.path))
    return found
