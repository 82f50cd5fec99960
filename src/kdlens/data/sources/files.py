"""Finding dataset files on disk, and the "how to get them" message when absent."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from kdlens.data.catalog import default_data_root
from kdlens.errors import DatasetNotFoundError


def search_roots(root: Path | None) -> list[Path]:
    """The torchvision-style roots to search: ``root`` if given, else the default root."""
    return [root] if root is not None else [default_data_root()]


def first_existing(folder: Path, names: Iterable[str]) -> Path | None:
    """The first ``folder/name`` that is a file, or ``None``."""
    for name in names:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def not_found(
    dataset: str,
    missing: Sequence[str],
    searched: Sequence[Path],
    ways: Sequence[str],
) -> DatasetNotFoundError:
    """A :class:`DatasetNotFoundError` listing what was missing, where we looked, and
    every way to get the files."""
    lines = [
        f"dataset {dataset!r}: files not found: {', '.join(missing)}.",
        "Looked in: " + "; ".join(str(p) for p in searched) + ".",
        "To get them:",
        *[f"  - {way}" for way in ways],
    ]
    return DatasetNotFoundError("\n".join(lines))
