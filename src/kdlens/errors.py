"""User-facing errors.

A :class:`KdlensError` is a problem with what the user asked for (a wrong key, a
missing dataset, an unknown layer name).  The CLI prints its message without a
traceback and exits with code 2, before any work is written.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KdlensError(Exception):
    """Bad input from the user; the CLI exits with :attr:`exit_code`."""

    exit_code = 2


class DatasetNotFoundError(KdlensError):
    """A named dataset's files are absent; the message says how to get them."""


class DiskFullError(KdlensError, OSError):
    """No space left (ENOSPC, EDQUOT) while writing a file; the message names the file, the
    space needed and free, and says the previous version of the file is unchanged.  Also an
    :class:`OSError` with ``errno`` set, for code that catches those."""


def close_matches(name: str, known: Iterable[str], n: int = 5) -> list[str]:
    """Names in ``known`` that resemble ``name`` (difflib ratio >= 0.5)."""
    known = list(known)
    matches = difflib.get_close_matches(name, known, n=n, cutoff=0.5)
    # substring hits (e.g. "layer1" for "layer1.0") are useful too
    matches += [k for k in known if name and name in k and k not in matches][: n - len(matches)]
    return matches


def plural(noun: str) -> str:
    """``"loss"`` → ``"losses"``, ``"model"`` → ``"models"`` (the last word of a phrase)."""
    return noun + ("es" if noun.endswith(("s", "x", "sh", "ch")) else "s")


def unknown_name(kind: str, name: str, known: Iterable[str]) -> KdlensError:
    """A readable error for an unknown ``kind`` called ``name``, listing close matches."""
    known = sorted(known)
    hint = close_matches(name, known)
    msg = f"unknown {kind} {name!r}."
    if hint:
        msg += f" Did you mean: {', '.join(hint)}?"
    shown = ", ".join(known[:40]) + (" …" if len(known) > 40 else "")
    msg += f" Known {plural(kind)}: {shown}"
    return KdlensError(msg)


class TrainingDivergedError(RuntimeError):
    """A loss or feature became NaN/Inf; the message names which one and where."""
