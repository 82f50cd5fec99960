"""Comma-separated option values (``--temperatures 3,6,9``, ``--classes 0,2``) parsed and checked;
a bad value is a :class:`~kdlens.errors.KdlensError` naming the option and what would work."""

from __future__ import annotations

from typing import Any

from kdlens.errors import KdlensError


def numbers(text: str | None, what: str, kind: type = float) -> list[Any]:
    """``"3, 6,9"`` → ``[3.0, 6.0, 9.0]``; empty or None → ``[]``."""
    if text is None or not str(text).strip():
        return []
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(kind(part))
        except ValueError:
            raise KdlensError(f"{what}: {part!r} is not {'an integer' if kind is int else 'a number'} "
                              f"(give a comma-separated list, e.g. {'0,1,2' if kind is int else '3,6,9'})") from None
    return out


def temperatures(text: str, what: str = "--temperatures") -> list[float]:
    """Positive temperatures."""
    from kdlens.explain.softlabels import check_temperatures

    ts = numbers(text, what)
    try:
        return list(check_temperatures(ts))
    except KdlensError as exc:
        raise KdlensError(f"{what}: {exc}") from None


def class_ids(text: str | None, data_classes: list[str], what: str = "--classes") -> list[int] | None:
    """Distinct class ids of the dataset (None when none given)."""
    ids = numbers(text, what, int)
    if not ids:
        return None
    k = len(data_classes)
    bad = [c for c in ids if not 0 <= c < k]
    if bad:
        listing = ", ".join(f"{i}={n}" for i, n in enumerate(data_classes))
        raise KdlensError(f"{what}: unknown class id(s) {bad}; allowed 0..{k - 1} ({listing})")
    if len(set(ids)) != len(ids):
        raise KdlensError(f"{what}: repeated class ids in {ids}")
    return ids


def ls_alphas(text: str | None, what: str = "--ls-alphas") -> list[float]:
    """Label-smoothing α_LS values in [0, 1]."""
    alphas = numbers(text, what)
    bad = [a for a in alphas if not 0.0 <= a <= 1.0]
    if bad:
        raise KdlensError(f"{what}: α_LS must lie in [0, 1], got {bad}")
    return alphas
