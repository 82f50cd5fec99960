"""The soft-label analyses of ``kdlens softlabels …`` (Vats 2021) as library functions.

:func:`open_inputs` loads the teachers and the dataset (everything checked before anything
is written); each analysis function (:func:`entropy_analysis`, :func:`missing_class_analysis`,
:func:`transfer_set_analysis`, :func:`projection_analysis`, :func:`noise_analysis`,
:func:`pretraining_analysis`) computes one diagnostic with :mod:`kdlens.explain.softlabels`
and writes its figure (PNG), tidy CSV and JSON summary into a directory; :func:`record`
runs such a function as an analysis of the run store (``softlabels-COMMAND-TEACHER-HASH``,
done / failed, skipped when finished unless ``restart``). The CLI only parses options and
calls these.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdlens.errors import KdlensError

Log = Callable[[str], None]

__all__ = [
    "SoftLabelInputs",
    "check_positive",
    "check_student",
    "load_inputs",
    "entropy_analysis",
    "missing_class_analysis",
    "noise_analysis",
    "open_inputs",
    "pretraining_analysis",
    "projection_analysis",
    "record",
    "resolve_inputs",
    "sweep_settings",
    "transfer_set_analysis",
]


def check_positive(value: int | None, what: str) -> None:
    if value is not None and value < 1:
        raise KdlensError(f"{what} must be >= 1, got {value}")


def check_student(student: str) -> None:
    from kdlens.errors import unknown_name
    from kdlens.models import list_models

    if student not in list_models():
        raise unknown_name("model", student, list_models())


@dataclass
class SoftLabelInputs:
    """Teachers and dataset of a soft-label analysis."""

    data: Any  # kdlens.explain.inputs.ExplainData: its splits as given (maybe streamed)
    teachers: dict[str, Any]  # name -> nn.Module on ``device``
    device: Any
    train_subset: int | None = None
    seed: int = 0
    _memory: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> Any:
        """The transfer set in memory: the training split, or its seeded ``train_subset`` (read on
        first use; of a streamed split only the subset is decoded)."""
        from kdlens.explain.inputs import in_memory

        if "train" not in self._memory:
            self._memory["train"] = in_memory(self.data.split("train"), self.train_subset, self.seed)
        return self._memory["train"]

    @property
    def test(self) -> Any:
        """The whole test split in memory (read on first use)."""
        from kdlens.explain.inputs import in_memory

        if "test" not in self._memory:
            self._memory["test"] = in_memory(self.data.split("test"))
        return self._memory["test"]

    def logits(self) -> dict[str, Any]:
        """Every teacher's logits on the transfer set."""
        from kdlens.explain.softlabels import teacher_logits

        return {name: teacher_logits(model, self.train, self.device) for name, model in self.teachers.items()}


def resolve_inputs(teacher: Sequence[str] | None, teacher_model: str | None, weights: str | None,
                   dataset: str | None, allow_mismatch: bool, out: str) -> tuple[list[str], str, dict | None, Path]:
    """The teacher runs, the dataset, the run config whose data settings apply to it, and the
    run store, checked: the dataset defaults to the teacher runs' own and another one needs
    ``allow_mismatch``; checkpoint files and a teacher trained outside kdlens
    (``teacher_model`` + ``weights``) know no dataset, so ``dataset`` must then be given."""
    from kdlens.explain.inputs import check_model_options, choose_dataset
    from kdlens.store.analysis import check_store

    refs = list(teacher or [])
    check_model_options(refs, teacher_model, weights, dataset=dataset)
    name, own = choose_dataset(refs, dataset, allow_mismatch)
    return refs, name, own, check_store(out)


def open_inputs(refs: Sequence[str], teacher_model: str | None, weights: str | None, dataset: str,
                root: str | None, train_subset: int | None, seed: int, device: str,
                own: dict | None = None) -> SoftLabelInputs:
    """Load teachers and data; every failure is a KdlensError raised before anything is written."""
    from kdlens.explain.inputs import load_explained_model, open_data
    from kdlens.store.analysis import distinct_names
    from kdlens.train.trainer import resolve_device

    check_positive(train_subset, "--train-subset")
    data = open_data(dataset, root, own)  # own: the teacher run's config (its root and resolve settings)
    split = data.split("train")
    dev = resolve_device(device)
    teachers = {}
    sources = [(ref, None) for ref in refs] + ([(None, weights)] if weights is not None else [])
    for name, (ref, w) in zip(distinct_names([r if r is not None else w for r, w in sources], "teacher"), sources, strict=True):
        loaded = load_explained_model(ref, split, teacher_model, w)  # checks its logits fit the classes
        teachers[name] = loaded.model.to(dev)
    return SoftLabelInputs(data, teachers, dev, train_subset, seed)


def load_inputs(teacher: Sequence[str] | None, teacher_model: str | None, weights: str | None, dataset: str | None,
                allow_mismatch: bool, out: str, root: str | None, train_subset: int | None, seed: int,
                device: str) -> tuple[SoftLabelInputs, Path]:
    """:func:`resolve_inputs` then :func:`open_inputs`: the loaded teachers and data, and the run store."""
    refs, name, own, store = resolve_inputs(teacher, teacher_model, weights, dataset, allow_mismatch, out)
    return open_inputs(refs, teacher_model, weights, name, root, train_subset, seed, device, own), store


def sweep_settings(epochs: int, batch_size: int, lr: float, seed: int, chunk_size: int | None, backend: str,
                   device: Any, quiet: bool, batches: str = "shared") -> Any:
    """The students' training settings (SGD, constant ``lr``), checked."""
    from kdlens.config import OptimConfig
    from kdlens.explain.softlabels import SweepSettings

    check_positive(epochs, "--epochs")
    check_positive(batch_size, "--batch-size")
    check_positive(chunk_size, "--chunk-size")
    if not lr > 0:
        raise KdlensError(f"--lr must be > 0, got {lr}")
    if backend not in ("grouped", "vmap"):
        raise KdlensError(f"--backend must be 'grouped' or 'vmap', got {backend!r}")
    if batches not in ("shared", "own"):
        raise KdlensError(f"--batches must be 'shared' or 'own', got {batches!r}")
    return SweepSettings(epochs=epochs, batch_size=batch_size, optim=OptimConfig(lr=lr, schedule="constant"),
                         seed=seed, student_seed=seed, backend=backend, batches=batches, chunk_size=chunk_size,
                         device=str(device), progress=not quiet)


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return ";".join(map(str, v)) if isinstance(v, list) else v


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from kdlens.store import atomic_write_text
    from kdlens.studies.papers import tidy_csv

    atomic_write_text(path, tidy_csv(rows, _csv_cell))


def write_json(path: Path, obj: Any) -> None:
    from kdlens.store import atomic_write_text

    def default(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        return str(o)

    atomic_write_text(path, json.dumps(obj, indent=1, default=default, allow_nan=True))


def _write_sweep(out_dir: Path, stem: str, result: Any, meta: dict[str, Any], log: Log) -> None:
    """Writes a student sweep's rows (``stem``.csv) and summary (``stem``.json), and says so."""
    write_csv(out_dir / f"{stem}.csv", result.rows())
    write_json(out_dir / f"{stem}.json", {**meta, **result.to_dict()})
    log(f"{len(result.rows())} students in {result.seconds:.1f}s; wrote {stem}.png/.csv/.json to {out_dir}")


#: options that do not change what an analysis computes: left out of its identity (the
#: teachers are identified by their weights, the dataset by its name and fingerprint)
NOT_IDENTITY = ("teacher", "teacher_model", "weights", "root", "out", "device", "quiet", "threads", "restart",
                "allow_dataset_mismatch", "chunk_size", "backend", "runs")


def record(command: str, opts: dict[str, Any], store: Path, body: Callable[[Path], Any],
           inputs: SoftLabelInputs | None = None, subjects: list[str] | None = None, log: Log = print) -> Path:
    """Run ``body(out_dir)`` as the analysis ``softlabels-COMMAND-TEACHER-HASH`` of the run store
    (its own directory and store row; skipped when finished, unless ``opts['restart']``); ``opts``:
    the command's options as given.  Returns the analysis directory."""
    from kdlens.explain.inputs import run_analysis
    from kdlens.train.threads import set_threads

    identity = {k: v for k, v in opts.items() if k not in NOT_IDENTITY}
    resolved = {**opts, "out": str(opts.get("out"))}
    if inputs is not None:
        from kdlens.distill.cache import weights_hash

        identity.update(dataset=inputs.data.name, data_fingerprint=inputs.data.fingerprint,
                        teachers=[[name, weights_hash(m)] for name, m in inputs.teachers.items()])
        resolved["data"] = {"name": inputs.data.name, "root": opts.get("root")}
        subjects = [*(opts.get("teacher") or []), *([opts["weights"]] if opts.get("weights") else [])]

    def run(out_dir: Path) -> dict[str, Any]:
        set_threads(opts.get("threads"), log=not opts.get("quiet"))
        summary = body(out_dir) or {}
        return {"command": command, **({"dataset": inputs.data.name} if inputs is not None else {}), **summary}

    outcome = run_analysis("softlabels", subjects or [], identity, resolved, store, run, command=command,
                           restart=bool(opts.get("restart")), log=log)
    return outcome.path


# ----------------------------------------------------------------------------------------------
# the analyses (called with checked arguments; each writes into ``out_dir``)
# ----------------------------------------------------------------------------------------------
def default_examples(data: Any) -> list[int]:
    """The first example of each class."""
    labels = data.labels.numpy()
    return [int(np.flatnonzero(labels == c)[0]) for c in range(data.num_classes) if (labels == c).any()]


def entropy_analysis(inputs: SoftLabelInputs, out_dir: Path, split: str, temperatures: Sequence[float],
                     alphas: Sequence[float], label_t: float, examples: Sequence[int], log: Log = print) -> dict[str, Any]:
    """Soft-label entropy vs T per teacher (and per class), label smoothing's entropy vs α_LS, the
    label-variance and soft-label tables; writes entropy.png, entropy_per_class.png and the tables."""
    from kdlens.explain.softlabels import (
        entropy_by_temperature,
        label_smoothing_entropy_curve,
        label_variance,
        soft_label_table,
        teacher_logits,
    )
    from kdlens.figures.softlabels import plot_entropy_curves
    from kdlens.figures.softlabels_extra import plot_class_entropy_curves
    from kdlens.figures.style import paper_style

    data = inputs.train if split == "train" else inputs.test
    dataset = inputs.data.name
    tables, rows, var_rows, table_rows, summary = {}, [], [], [], {}
    for name, model in inputs.teachers.items():
        z = teacher_logits(model, data, inputs.device)
        table = entropy_by_temperature(z, data.labels, temperatures, class_names=data.classes)
        tables[name] = table
        rows += table.rows(name)
        var_rows += [{"teacher": name, **r} for r in label_variance(z, data.labels, label_t).rows(data.classes)]
        table_rows += [{"teacher": name, **r} for r in soft_label_table(z, data.labels, examples, [label_t], data.classes)]
        summary[name] = {"temperatures": table.temperatures, "mean_entropy": table.mean,
                         "per_class_entropy": table.per_class}
    ls_curve = label_smoothing_entropy_curve(alphas, data.num_classes)
    rows += [{"teacher": "label smoothing", "alpha_ls": a, "class": "all", "class_id": -1, "mean_entropy": float(h)}
             for a, h in zip(alphas, ls_curve, strict=True)]
    plot_entropy_curves(tables, (alphas, ls_curve), title=f"soft-label entropy ({dataset}, {split})",
                        path=out_dir / "entropy.png")
    with paper_style():
        plot_class_entropy_curves(tables, title=f"entropy per class ({dataset}, {split})",
                                  path=out_dir / "entropy_per_class.png")
    write_csv(out_dir / "entropy.csv", rows)
    write_csv(out_dir / "label_variance.csv", var_rows)
    write_csv(out_dir / "soft_label_table.csv", table_rows)
    write_json(out_dir / "entropy.json", {
        "dataset": dataset, "split": split, "log_k": float(np.log(data.num_classes)), "teachers": summary,
        "label_smoothing": {"alphas": list(alphas), "entropy": ls_curve}, "label_T": label_t, "examples": list(examples),
    })
    log(f"wrote entropy.png, entropy_per_class.png, entropy.csv, label_variance.csv, soft_label_table.csv, "
        f"entropy.json to {out_dir}")
    return {"split": split, "temperatures": [float(t) for t in temperatures],
            "mean_entropy": {n: [float(v) for v in t["mean_entropy"]] for n, t in summary.items()}}


def missing_class_analysis(inputs: SoftLabelInputs, out_dir: Path, student: str, classes: Sequence[int] | None,
                           temperatures: Sequence[float], alphas: Sequence[float], settings: Any,
                           log: Log = print) -> None:
    """Missing-class test: accuracy on a class removed from the transfer set, class × T per teacher."""
    from kdlens.explain.softlabels import missing_class_test
    from kdlens.figures.softlabels import plot_missing_class_heatmaps

    result = missing_class_test(student, inputs.train, inputs.test, inputs.logits(), classes, temperatures, alphas,
                                settings)
    plot_missing_class_heatmaps(result, title=f"missing-class test ({inputs.data.name}, {student})",
                                path=out_dir / "missing_class.png")
    _write_sweep(out_dir, "missing_class", result, {"dataset": inputs.data.name, "student": student,
                                                    "epochs": settings.epochs, "batches": settings.batches}, log)


def transfer_set_analysis(inputs: SoftLabelInputs, out_dir: Path, student: str, counts: Sequence[int], rank_t: float,
                          distill_t: float | None, random_seeds: Sequence[int], min_steps: int, settings: Any,
                          log: Log = print) -> None:
    """Entropy-ranked transfer sets: accuracy vs top-N per class, with a random-N baseline."""
    from kdlens.explain.softlabels import entropy_ranked_transfer_sets
    from kdlens.figures.softlabels import plot_image_grid, plot_transfer_set_curves

    result = entropy_ranked_transfer_sets(student, inputs.train, inputs.test, inputs.logits(), counts, rank_t,
                                          distill_t, random_seeds, min_steps, settings)
    plot_transfer_set_curves(result, title=f"{inputs.data.name}, {student}", path=out_dir / "transfer_set.png")
    for name, idx in result.top_examples.items():
        plot_image_grid(inputs.train.images, idx, inputs.train.classes,
                        title=f"highest-entropy examples at T = {rank_t:g} ({name})",
                        path=out_dir / f"transfer_set_top_entropy_{name}.png")
    _write_sweep(out_dir, "transfer_set", result, {"dataset": inputs.data.name, "student": student}, log)


def projection_sample(labels: np.ndarray, classes: Sequence[int], max_per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_per_class`` seeded random examples of each class."""
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:max_per_class] for c in classes]))


def projection_analysis(inputs: SoftLabelInputs, out_dir: Path, split: str, classes: Sequence[int],
                        index: np.ndarray, include_bias: bool, log: Log = print) -> None:
    """Penultimate activations of the examples ``index`` projected onto the plane of three class
    templates (Müller et al. 2019), per teacher."""
    from kdlens.data.augment import normalize
    from kdlens.explain.inputs import rows_in_memory
    from kdlens.explain.softlabels import TemplateProjection, penultimate_activations
    from kdlens.figures.softlabels import plot_projections

    data = inputs.data.split(split)  # as given (maybe streamed): only the projected examples are read
    labels = data.labels.numpy()
    sample = rows_in_memory(data, index)
    x = normalize(sample.images, sample.mean, sample.std).to(inputs.device)
    panels, rows, summary = {}, [], {}
    for name, model in inputs.teachers.items():
        proj = TemplateProjection(list(classes), include_bias=include_bias).fit(model)
        coords = proj.transform(penultimate_activations(model, x))
        panels[name] = (coords, labels[index], proj.template_coords_)
        rows += [{"teacher": name, "index": int(i), "class_id": int(labels[i]), "class": data.classes[labels[i]],
                  "x": float(cx), "y": float(cy)} for i, (cx, cy) in zip(index, coords, strict=True)]
        summary[name] = {"template_coords": proj.template_coords_}
    plot_projections(panels, list(classes), data.classes, title=f"penultimate layer, templates of classes {list(classes)}",
                     path=out_dir / "projection.png")
    write_csv(out_dir / "projection.csv", rows)
    write_json(out_dir / "projection.json", {"dataset": inputs.data.name, "split": split, "classes": list(classes),
                                             "class_names": [data.classes[c] for c in classes],
                                             "include_bias": include_bias, "teachers": summary})
    log(f"wrote projection.png, projection.csv, projection.json to {out_dir}")


def noise_analysis(inputs: SoftLabelInputs, out_dir: Path, student: str, scales: Sequence[float],
                   noises: Sequence[str], T: float, alphas: Sequence[float], removed: Sequence[int] | None,
                   seeds: Sequence[int], settings: Any, log: Log = print) -> None:
    """Noise in soft labels (Vats 2021 §4.8): student accuracy vs noise scale, teacher and LS soft labels."""
    from kdlens.explain.softlabels.noise import noise_values, soft_label_noise_sweep
    from kdlens.figures.softlabels_extra import plot_noise_sweep
    from kdlens.figures.style import paper_style

    result = soft_label_noise_sweep(student, inputs.train, inputs.test, inputs.logits(), scales, noises, T, alphas,
                                    removed, seeds, settings)
    rows = result.rows()
    with paper_style():
        plot_noise_sweep(result, noise_values(rows, result.scales),
                         noise_values(rows, result.scales, "missing_class_acc") if removed else None,
                         title=f"noise in soft labels ({inputs.data.name}, {student})", path=out_dir / "noise.png")
    _write_sweep(out_dir, "noise", result, {"dataset": inputs.data.name, "student": student,
                                            "epochs": settings.epochs, "batches": settings.batches}, log)


def pretraining_analysis(out_dir: Path, base: dict[str, Any], sizes: Sequence[int], measured: Sequence[int],
                         temperatures: Sequence[float] | None, T: float, student: str | None, student_t: float | None,
                         settings: Any, tolerance: float, runs: str, train_subset: int | None, seed: int,
                         quiet: bool, log: Log = print) -> None:
    """Teacher pre-training (Vats 2021 ch. 6): batch size × epochs → soft-label entropy and the
    student's accuracy; logs which batch size and epochs to choose by entropy."""
    from kdlens.figures.softlabels_extra import plot_pretraining
    from kdlens.figures.style import paper_style
    from kdlens.studies.pretraining import recommendation_text, run_pretraining_sweep

    model, dataset = base["model"]["name"], base["data"]["name"]
    result = run_pretraining_sweep(base, list(sizes), list(measured), temperatures, T, student, student_t, settings,
                                   tolerance, runs, train_subset, seed, progress=not quiet, log=None if quiet else log)
    with paper_style():
        plot_pretraining(result, title=f"teacher pre-training ({model} on {dataset})", path=out_dir / "pretraining.png")
    write_csv(out_dir / "pretraining.csv", result.rows())
    write_json(out_dir / "pretraining.json", {"model": model, "dataset": dataset, **result.to_dict()})
    log(recommendation_text(result.recommendation))
    log(f"{len(sizes)} teachers in {result.seconds_teachers:.1f}s, students in {result.seconds_students:.1f}s; "
        f"wrote pretraining.png/.csv/.json to {out_dir}")
