"""The model and the data an explain command works on (``kdlens hints``, ``embed``, ``softlabels``).

A model comes either from kdlens — a run directory or a checkpoint file — or from outside it:
a model reference (zoo name, ``torchvision:NAME``, ``timm:NAME``, ``pkg.module:Class``) and a
local weights file (``--teacher-model REF --weights PATH``).  Such a model has no run
directory, so the dataset must be given.  A run directory's dataset is the default, and
another one is refused unless asked for (:func:`choose_dataset`).

What a command computed is an analysis recorded in the run store (:func:`run_analysis`;
where it goes: :mod:`kdlens.store.analysis`).

The data is a catalog name or a dataset reference (``folder:DIR``, ``python:pkg.mod:make``;
:func:`kdlens.data.reference.resolve_data`).  The explain tools read whole arrays, so the
split a command reads is brought into memory — a streamed split (a large folder, a user's
Dataset) only for the rows the command samples (:func:`in_memory`, :func:`rows_in_memory`),
never decoded in full unless the command reads all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlens.data.dataset import Dataset
from kdlens.data.reference import DataPair, resolve_data, split_dataset_reference
from kdlens.data.torch_dataset import StreamedDataset, materialize
from kdlens.errors import KdlensError

MODEL_REFERENCE_FORMS = "a zoo name, torchvision:NAME, timm:NAME or pkg.module:Class"
DATASET_REFERENCE_FORMS = "a catalog name such as digits or fashion-mnist, folder:DIR or python:pkg.module:make"
#: the data settings of a run's config that change how a dataset reference resolves
RESOLVE_SETTINGS = ("stream", "memory_limit_mb", "image_size", "on_bad_image")


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------
def check_model_options(
    refs: Sequence[str],
    model: str | None,
    weights: str | None,
    *,
    ref_flag: str = "--teacher",
    ref_forms: str = "a run directory or a checkpoint file",
    allow_both: bool = True,
    dataset: str | None = None,
) -> None:
    """Check how the user named the model(s) before any work (every failure a :class:`KdlensError`).

    ``refs``: kdlens runs / checkpoints (``ref_flag``); ``model`` + ``weights``: a model trained
    outside kdlens.  Without any ``refs`` there is no run directory to take the dataset
    from, so ``dataset`` must then be given.  ``allow_both``: whether runs and an outside
    model may be explained side by side.
    """
    if weights is not None and model is None:
        raise KdlensError(
            f"--weights {weights!r} needs --teacher-model REF, the architecture the weights belong to "
            f"({MODEL_REFERENCE_FORMS})"
        )
    if not refs and weights is None:
        if model is not None:
            raise KdlensError(
                f"--teacher-model {model!r} names an architecture but no weights: add --weights PATH "
                f"(a state_dict or checkpoint file of a model trained outside kdlens), or give "
                f"{ref_flag} ({ref_forms})"
            )
        raise KdlensError(
            f"give the model to explain: {ref_flag} ({ref_forms}), or --teacher-model REF --weights PATH "
            f"for a model trained outside kdlens (REF: {MODEL_REFERENCE_FORMS})"
        )
    if weights is None:
        return
    if refs and not allow_both:
        raise KdlensError(
            f"give either {ref_flag} ({ref_forms}) or --teacher-model REF --weights PATH, not both"
        )
    if not Path(weights).expanduser().is_file():
        raise KdlensError(
            f"weights file {weights!r} does not exist (--weights must be a local file: a state_dict "
            "saved with torch.save(model.state_dict(), PATH) or a checkpoint holding one)"
        )
    if not refs and dataset is None:
        raise KdlensError(
            "a model given by --teacher-model/--weights has no run directory to take the dataset "
            f"from: give --dataset ({DATASET_REFERENCE_FORMS})"
        )


def example_batch(data: Dataset | StreamedDataset, n: int = 2) -> torch.Tensor:
    """The first ``n`` items of ``data`` as a normalised model input (a dry forward pass)."""
    from kdlens.data import normalize

    rows = range(min(n, len(data)))
    images = data.images[: len(rows)] if isinstance(data, Dataset) else data.stack(rows)
    if not isinstance(data, Dataset) and not data.raw:
        images = images.float()
    return normalize(images, data.mean, data.std)


def load_explained_model(
    ref: str | None,
    data: Dataset | StreamedDataset,
    model: str | None = None,
    weights: str | None = None,
    which: str = "last",
) -> Any:
    """A frozen model (:class:`kdlens.train.teacher.LoadedTeacher`) from a run directory or
    checkpoint file ``ref`` (``model`` names a bare file's architecture), or — when ``weights``
    is given — the model reference ``model`` with the weights trained outside kdlens.

    A dry forward pass on two items of ``data`` checks that the model takes these inputs and
    gives one logit per class; a mismatch is a :class:`KdlensError`, not a traceback."""
    from kdlens.train.model_setup import check_output_classes
    from kdlens.train.teacher import load_teacher

    loaded = load_teacher(None if weights is not None else ref, data, model, which=which, weights=weights)
    what = f"model {loaded.name} (weights {loaded.checkpoint})"
    check_output_classes(loaded.model, example_batch(data), data.num_classes, what)
    return loaded


def model_label(ref: str | None, weights: str | None = None) -> str:
    """A short name for outputs: the run directory's name, or the checkpoint / weights file's stem."""
    p = Path(weights if weights is not None else ref or "model")
    return (p.name if p.is_dir() else p.stem) or "model"


# ----------------------------------------------------------------------------------------------
# the data
# ----------------------------------------------------------------------------------------------
def choose_dataset(
    refs: Sequence[str],
    dataset: str | None,
    allow_mismatch: bool = False,
    *,
    ref_flag: str = "--teacher",
) -> tuple[str, dict[str, Any] | None]:
    """The dataset to explain the runs / checkpoints ``refs`` on, and the run config
    (``{"data": …}``) whose root and resolve settings apply to it (``None``: no run used it).

    The runs' own dataset is the default.  A ``dataset`` other than a run's, or runs trained
    on different datasets without ``dataset``, is a :class:`KdlensError` unless
    ``allow_mismatch`` (issue 14: a teacher of Fashion-MNIST was silently explained on
    digits).  Checkpoint files and outside weights know no dataset: with no run among
    ``refs`` a ``dataset`` must be given.
    """
    from kdlens.train.teacher import teacher_training_data

    trained = [(ref, teacher_training_data(ref)) for ref in refs]
    trained = [(ref, d) for ref, d in trained if d and d.get("name")]
    if dataset is None:
        if not trained:
            what = (f"{ref_flag} {refs[0]!r} is a checkpoint file, not a run directory, so there is no dataset to "
                    "default to" if refs else "no dataset")
            raise KdlensError(f"{what}: give --dataset ({DATASET_REFERENCE_FORMS})")
        names = sorted({d["name"] for _, d in trained})
        if len(names) > 1:
            listing = ", ".join(f"{ref} ({d['name']})" for ref, d in trained)
            raise KdlensError(f"the runs were trained on different datasets: {listing}; explain them separately, "
                              "or choose one with --dataset NAME --allow-dataset-mismatch")
        return names[0], {"data": trained[0][1]}
    other = [(ref, d["name"]) for ref, d in trained if d["name"] != dataset]
    if other and not allow_mismatch:
        ref, name = other[0]
        raise KdlensError(f"{ref_flag} {ref!r} was trained on {name!r} but --dataset is {dataset!r}; leave out "
                          f"--dataset to use {name!r}, or add --allow-dataset-mismatch if this is intended")
    own = next((d for _, d in trained if d["name"] == dataset), None)
    return dataset, ({"data": own} if own is not None else None)


def is_dataset_reference(name: str) -> bool:
    """``folder:DIR`` / ``python:…`` (resolved by :func:`resolve_data`), not a catalog name."""
    return split_dataset_reference(name)[0] != "catalog"


@dataclass
class ExplainData:
    """A dataset named by the user or by a run's config, its splits read on request.

    Catalog names load only the split asked for (:func:`kdlens.data.load_dataset`); dataset
    references resolve once (:func:`resolve_data`, with the run's ``stream`` /
    ``memory_limit_mb`` / ``image_size`` / ``on_bad_image`` settings when the run used
    this dataset) and may give streamed splits — bring them into memory with
    :func:`in_memory` or :func:`rows_in_memory`.
    """

    name: str
    root: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    _pair: DataPair | None = field(default=None, repr=False)
    _splits: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_reference(self) -> bool:
        return is_dataset_reference(self.name)

    def split(self, which: str) -> Dataset | StreamedDataset:
        """The ``train`` or ``test`` split (in memory, or streamed for large / user data)."""
        if which not in ("train", "test"):
            raise KdlensError(f"split must be 'train' or 'test'; got {which!r}")
        if which in self._splits:
            return self._splits[which]
        if self.is_reference:
            if self._pair is None:
                self._pair = resolve_data(self.name, root=self.root, **self.settings)
            data = getattr(self._pair, which)
        else:
            from kdlens.data import load_dataset

            data = load_dataset(self.name, which, root=self.root)
        self._splits[which] = data
        return data

    @property
    def fingerprint(self) -> str | None:
        """The data fingerprint of a dataset reference (``None`` for catalog data)."""
        return self._pair.fingerprint if self._pair is not None else None


def open_data(dataset: str | None, root: str | None = None, run_config: dict | None = None) -> ExplainData:
    """The dataset ``dataset`` (default: the run's), with the run's root and resolve settings
    when it is the run's own dataset.  Nothing is read yet."""
    data_cfg = (run_config or {}).get("data", {}) or {}
    name = dataset or data_cfg.get("name")
    if name is None:
        raise KdlensError(f"no dataset: give --dataset ({DATASET_REFERENCE_FORMS})")
    own = name == data_cfg.get("name")
    settings = {k: data_cfg[k] for k in RESOLVE_SETTINGS if own and data_cfg.get(k) is not None}
    if settings.get("stream") == "on" and not is_dataset_reference(name):
        settings.pop("stream")
    return ExplainData(name, root or (data_cfg.get("root") if own else None), settings)


def rows_in_memory(data: Dataset | StreamedDataset, rows: Sequence[int] | np.ndarray) -> Dataset:
    """The items at ``rows`` (in that order) as an in-memory :class:`Dataset` — only those
    items are decoded from a streamed split (uint8 images keep the split's mean/std; a
    user's transformed floats are kept as they are)."""
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(data, Dataset):
        return data.subset(rows)
    if rows.size and (rows.min() < 0 or rows.max() >= len(data)):
        raise KdlensError(f"rows out of range 0..{len(data) - 1} of {data.name!r}")
    images = data.stack(rows) if rows.size else torch.empty(0, *data.image_shape,
                                                            dtype=torch.uint8 if data.raw else torch.float32)
    return Dataset(
        name=data.name, images=images if data.raw else images.float(), labels=data.labels[torch.as_tensor(rows)],
        classes=list(data.classes), mean=data.mean, std=data.std, split=data.split,
    )


def in_memory(data: Dataset | StreamedDataset, n: int | None = None, seed: int = 0) -> Dataset:
    """``data`` in memory: an in-memory split as it is (``n`` given: its seeded sample), a
    streamed split as a seeded sample of ``n`` items (all when ``n`` is None)
    — :func:`kdlens.data.torch_dataset.materialize`."""
    return materialize(data, n=n, seed=seed)


def sample_key(data: Dataset | StreamedDataset, fingerprint: str | None = None,
               rows: np.ndarray | None = None) -> dict[str, Any]:
    """What identifies a split (and the sampled ``rows`` of it, when only those were brought
    into memory) in caches and saved results: name, split, transform, data fingerprint."""
    from kdlens.explain.hint_search import dataset_key
    from kdlens.explain.representations import indices_sha256

    key = dataset_key(data)  # type: ignore[arg-type]
    if fingerprint is not None:
        key["fingerprint"] = fingerprint
    if rows is not None:
        key["source_rows_sha256"] = indices_sha256(np.asarray(rows, dtype=np.int64))
    return key


def is_streamed(data: Any) -> bool:
    """Whether ``data`` is a streamed split (read item by item), not held in memory."""
    return isinstance(data, StreamedDataset)


# ----------------------------------------------------------------------------------------------
# the analysis in the run store
# ----------------------------------------------------------------------------------------------
def run_analysis(
    kind: str,
    subjects: Sequence[str],
    identity: dict[str, Any],
    resolved: dict[str, Any],
    store: str | Path,
    body: Any,
    *,
    command: str | None = None,
    restart: bool = False,
    log: Any = print,
) -> Any:
    """Run ``body(directory) -> summary`` as an analysis recorded in the run store ``store``.

    The directory is ``STORE/<kind>[-<command>]-<first subject>-<hash of identity>``
    (:func:`kdlens.store.analysis.analysis_name`); the store row of ``kind`` says running /
    done / failed (why), ``config.yaml`` holds ``resolved`` and ``result.json`` the summary
    (:func:`kdlens.train.run.execute_run`).  ``identity``: what determines the result (model
    weights, data, settings — not the device or threads).  A finished analysis is skipped
    (``log`` says so) unless ``restart``.  Returns the
    :class:`~kdlens.train.run.RunOutcome` (``path``, ``skipped``, ``metrics``)."""
    from kdlens.store.analysis import analysis_name
    from kdlens.train.run import execute_run

    head = {"kind": kind, **({"command": command} if command else {})}
    outcome = execute_run(kind, {**head, **identity}, {**head, **resolved}, str(store),
                          analysis_name(kind, subjects, command), False,
                          lambda run_dir: dict(body(run_dir.path) or {}), restart=restart)
    if outcome.skipped and log is not None:
        log(f"{outcome.run_id}: already done (skipped): {outcome.path}; add --restart to compute it again")
    return outcome
