"""Options the explain commands share (``kdlens hints``, ``embed``, ``softlabels …``; issue 14).

- ``--out`` is the run store, as for train and distill: each analysis goes to its own
  ``STORE/KIND-MODEL-HASH/`` with a row in the store (:mod:`kdlens.store.analysis`).
- ``--allow-dataset-mismatch``: the run's own dataset is the default; another is refused
  unless asked for (:func:`kdlens.explain.inputs.choose_dataset`).
- One meaning per flag: ``--k`` meant clusters in ``hints`` and neighbours in ``embed``, ``--n``
  training samples in one and test images in the other.  The old spellings are hidden
  options whose only effect is an exit 2 naming the new flag.

Nothing here imports torch: ``kdlens --help`` stays fast.
"""

from __future__ import annotations

import typer

from kdlens.errors import KdlensError

#: ``--out`` of every analysis command (as ``kdlens.store.analysis.DEFAULT_STORE``)
DEFAULT_STORE = "runs"
STORE_HELP = ("run store the analysis is written to and recorded in: STORE/KIND-MODEL-HASH/ and a row in "
              "STORE/runs.sqlite (default runs, as for train and distill)")
RESTART_HELP = "compute the analysis again even when the store holds it finished (default: skip it)"
ALLOW_MISMATCH_HELP = ("explain on a --dataset other than the one the run was trained on "
                       "(refused otherwise: a model explained on data it never saw says little)")


def renamed_option(old: str, new: str) -> typer.models.OptionInfo:
    """A hidden ``old`` option (any value) whose help names ``new``."""
    return typer.Option(None, old, hidden=True, help=f"renamed: use {new}")


def refuse_renamed(given: dict[str, tuple[str | None, str, str]]) -> None:
    """``{old: (value, new, meaning)}``: an error for the first old flag that was given."""
    for old, (value, new, meaning) in given.items():
        if value is not None:
            raise KdlensError(f"{old} was renamed: use {new} ({meaning}); {old} {value} → {new} {value}")
