"""The three papers the report follows, in report order: their titles, citations and example
studies (:data:`PAPERS`), and the step kinds whose results belong to each (:data:`PAPER_KINDS`).

A leaf module: both :mod:`~kdlens.report.sections.content` (what a section holds) and
:mod:`~kdlens.report.sections.access` (reading the studies) use it, neither imports the other's
half of it.
"""

from __future__ import annotations

PAPERS = {
    "softlabel": ("The soft-label hypothesis", "Vats 2021, Response-based knowledge distillation (thesis)",
                  "examples/softlabel.yaml"),
    "hints": ("Hint points by layer clustering", "Keser et al. 2022, PURSUhInT", "examples/hints.yaml"),
    "embedding": ("The embedding space of distilled students",
                  "Lee & Wallraven 2021, Visualizing the embedding space to explain the effect of knowledge distillation",
                  "examples/embedding.yaml"),
}

PAPER_KINDS = {
    "softlabel": {"softlabel-entropy", "missing-class", "transfer-set", "projection", "softlabel-noise",
                  "softlabel-pretraining"},
    "hints": {"hint-search"},
    "embedding": {"embedding", "limited-label", "embed-toy"},
}


def not_run_message(paper: str, what: str) -> str:
    """The "not run yet" line of a section of ``paper``, with the command that fills it."""
    return f"not run yet: {what} (run `kdlens study run {PAPERS[paper][2]}`)"
