"""``kdlens softlabels …``: soft-label diagnostics of trained teachers (Vats 2021).

Commands: ``entropy``, ``missing-class``, ``transfer-set``, ``projection``, ``noise``; and
``pretraining``, which trains its own teachers (``--model``, ``--batch-sizes`` × ``--epochs``)
through :mod:`kdlens.studies.pretraining`. Each of the others takes one or
more ``--teacher`` (a run directory or a checkpoint file; ``--teacher-model`` names the
architecture of bare files) and/or a teacher trained outside kdlens (``--teacher-model REF
--weights PATH``; then ``--dataset`` must be given), a dataset (default: the teacher runs'
own, another one only with ``--allow-dataset-mismatch``; a catalog name or a dataset reference,
``folder:DIR`` / ``python:pkg.mod:make``; a streamed split is read only as far as
``--train-subset`` / ``--max-per-class`` need), and the run store (``--out``, default ``runs``,
as for train and distill) where it writes a figure (PNG), a tidy CSV and a JSON summary to
``STORE/softlabels-COMMAND-TEACHER-HASH/``, recorded in the store (done / failed; a finished
one is skipped unless ``--restart``). Everything given is checked first — numbers,
temperatures (> 0), class ids, teachers, dataset — and a mistake prints one message and exits
2 with nothing written. Students of the experiments are trained together
(:mod:`kdlens.train.vectorized`); the teacher's logits are computed once per command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import typer

from kdlens.cli.errors import user_errors_exit_2
from kdlens.cli.explain_options import ALLOW_MISMATCH_HELP, DEFAULT_STORE, RESTART_HELP, STORE_HELP
from kdlens.cli.options import THREADS_HELP
from kdlens.errors import KdlensError

softlabels_app = typer.Typer(
    no_args_is_help=True,
    help="Soft-label diagnostics (Vats 2021): entropy vs T, missing-class test, entropy-ranked "
    "transfer sets, penultimate-layer projection, noise in soft labels, teacher pre-training.",
)

THESIS_T = "3,6,9,12,15,18,20"


# ----------------------------------------------------------------------------------------------
# parsing and checking (no side effects)
# ----------------------------------------------------------------------------------------------
def _numbers(text: str | None, what: str, kind: type = float) -> list[Any]:
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


def _temperatures(text: str, what: str = "--temperatures") -> list[float]:
    from kdlens.explain.softlabels import check_temperatures

    ts = _numbers(text, what)
    try:
        return list(check_temperatures(ts))
    except KdlensError as exc:
        raise KdlensError(f"{what}: {exc}") from None


def _classes(text: str | None, data_classes: list[str], what: str = "--classes") -> list[int] | None:
    ids = _numbers(text, what, int)
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


def _alphas(text: str | None) -> list[float]:
    alphas = _numbers(text, "--ls-alphas")
    bad = [a for a in alphas if not 0.0 <= a <= 1.0]
    if bad:
        raise KdlensError(f"--ls-alphas: α_LS must lie in [0, 1], got {bad}")
    return alphas


def _positive(value: int | None, what: str) -> None:
    if value is not None and value < 1:
        raise KdlensError(f"{what} must be >= 1, got {value}")


def _teacher_names(refs: list[str]) -> list[str]:
    names: list[str] = []
    for ref in refs:
        p = Path(ref)
        base = (p.name if p.is_dir() else p.stem) or "teacher"
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


@dataclass
class _Setup:
    data: Any  # the dataset (kdlens.explain.inputs.ExplainData): its splits as given (maybe streamed)
    teachers: dict[str, Any]  # name -> nn.Module
    device: Any
    train_subset: int | None = None
    seed: int = 0
    _memory: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> Any:
        """The transfer set in memory: the training split, or its seeded --train-subset (read on
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


def _inputs(teacher: list[str] | None, teacher_model: str | None, weights: str | None, dataset: str | None,
            allow_mismatch: bool, out: str) -> tuple[list[str], str, dict | None, Path]:
    """The teacher runs, the dataset, the run config whose data settings apply to it, and the
    run store, checked: the dataset defaults to the teacher runs' own and another one needs
    ``--allow-dataset-mismatch``; checkpoint files and a teacher trained outside kdlens
    (--teacher-model/--weights) know no dataset, so --dataset must then be given."""
    from kdlens.explain.inputs import check_model_options, choose_dataset
    from kdlens.store.analysis import check_store

    refs = list(teacher or [])
    check_model_options(refs, teacher_model, weights, dataset=dataset)
    name, own = choose_dataset(refs, dataset, allow_mismatch)
    return refs, name, own, check_store(out)


def _setup(refs: list[str], teacher_model: str | None, weights: str | None, dataset: str, root: str | None,
           train_subset: int | None, seed: int, device: str, own: dict | None = None) -> _Setup:
    """Load teachers and data; every failure is a KdlensError raised before anything is written."""
    from kdlens.explain.inputs import load_explained_model, open_data
    from kdlens.train.trainer import resolve_device

    _positive(train_subset, "--train-subset")
    data = open_data(dataset, root, own)  # own: the teacher run's config (its root and resolve settings)
    split = data.split("train")
    dev = resolve_device(device)
    teachers = {}
    sources = [(ref, None) for ref in refs] + ([(None, weights)] if weights is not None else [])
    for name, (ref, w) in zip(_teacher_names([r if r is not None else w for r, w in sources]), sources):
        loaded = load_explained_model(ref, split, teacher_model, w)  # checks its logits fit the classes
        teachers[name] = loaded.model.to(dev)
    return _Setup(data, teachers, dev, train_subset, seed)


def _settings(epochs: int, batch_size: int, lr: float, seed: int, chunk_size: int | None, backend: str,
              device: Any, quiet: bool, batches: str = "shared") -> Any:
    from kdlens.config import OptimConfig
    from kdlens.explain.softlabels import SweepSettings

    _positive(epochs, "--epochs")
    _positive(batch_size, "--batch-size")
    _positive(chunk_size, "--chunk-size")
    if not lr > 0:
        raise KdlensError(f"--lr must be > 0, got {lr}")
    if backend not in ("grouped", "vmap"):
        raise KdlensError(f"--backend must be 'grouped' or 'vmap', got {backend!r}")
    if batches not in ("shared", "own"):
        raise KdlensError(f"--batches must be 'shared' or 'own', got {batches!r}")
    return SweepSettings(epochs=epochs, batch_size=batch_size, optim=OptimConfig(lr=lr, schedule="constant"),
                         seed=seed, student_seed=seed, backend=backend, batches=batches, chunk_size=chunk_size,
                         device=str(device), progress=not quiet)


def _check_student(student: str) -> None:
    from kdlens.errors import unknown_name
    from kdlens.models import list_models

    if student not in list_models():
        raise unknown_name("model", student, list_models())


# ----------------------------------------------------------------------------------------------
# writing (only after every check passed)
# ----------------------------------------------------------------------------------------------
def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return ";".join(map(str, v)) if isinstance(v, list) else v


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from kdlens.store import atomic_write_text
    from kdlens.studies.papers import tidy_csv

    atomic_write_text(path, tidy_csv(rows, _csv_cell))


def _write_json(path: Path, obj: Any) -> None:
    from kdlens.store import atomic_write_text

    def default(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        return str(o)

    atomic_write_text(path, json.dumps(obj, indent=1, default=default, allow_nan=True))


#: options that do not change what an analysis computes: left out of its identity (the
#: teachers are identified by their weights, the dataset by its name and fingerprint)
_NOT_IDENTITY = ("teacher", "teacher_model", "weights", "root", "out", "device", "quiet", "threads", "restart",
                 "allow_dataset_mismatch", "chunk_size", "backend", "runs")


def _record(command: str, opts: dict[str, Any], store: Path, body: Any, setup: _Setup | None = None,
            subjects: list[str] | None = None) -> Path:
    """Run ``body(out_dir)`` as the analysis ``softlabels-COMMAND-TEACHER-HASH`` of the run store
    (its own directory and store row; skipped when finished, unless --restart); ``opts``: the
    command's options as given.  Returns the analysis directory."""
    from kdlens.explain.inputs import run_analysis
    from kdlens.train.threads import set_threads

    identity = {k: v for k, v in opts.items() if k not in _NOT_IDENTITY}
    resolved = {**opts, "out": str(opts.get("out"))}
    if setup is not None:
        from kdlens.distill.cache import weights_hash

        identity.update(dataset=setup.data.name, data_fingerprint=setup.data.fingerprint,
                        teachers=[[name, weights_hash(m)] for name, m in setup.teachers.items()])
        resolved["data"] = {"name": setup.data.name, "root": opts.get("root")}
        subjects = [*(opts.get("teacher") or []), *([opts["weights"]] if opts.get("weights") else [])]

    def run(out_dir: Path) -> dict[str, Any]:
        set_threads(opts.get("threads"), log=not opts.get("quiet"))
        summary = body(out_dir) or {}
        return {"command": command, **({"dataset": setup.data.name} if setup is not None else {}), **summary}

    outcome = run_analysis("softlabels", subjects or [], identity, resolved, store, run, command=command,
                           restart=bool(opts.get("restart")), log=typer.echo)
    return outcome.path


def _write_sweep(out_dir: Path, stem: str, result: Any, meta: dict[str, Any]) -> None:
    """Writes a student sweep's rows (``stem``.csv) and summary (``stem``.json), and says so."""
    _write_csv(out_dir / f"{stem}.csv", result.rows())
    _write_json(out_dir / f"{stem}.json", {**meta, **result.to_dict()})
    typer.echo(f"{len(result.rows())} students in {result.seconds:.1f}s; wrote {stem}.png/.csv/.json to {out_dir}")


def _logits(setup: _Setup) -> dict[str, Any]:
    from kdlens.explain.softlabels import teacher_logits

    return {name: teacher_logits(model, setup.train, setup.device) for name, model in setup.teachers.items()}


# ----------------------------------------------------------------------------------------------
# common options
# ----------------------------------------------------------------------------------------------
TEACHER = typer.Option(None, "--teacher", help="teacher run directory or checkpoint file (repeatable)")
TEACHER_MODEL = typer.Option(
    None, "--teacher-model", help="teacher model reference (zoo name, torchvision:NAME, timm:NAME, pkg.module:Class): "
    "the architecture of bare checkpoint files, and of --weights"
)
WEIGHTS = typer.Option(
    None, "--weights", help="weights file of a teacher trained outside kdlens (with --teacher-model REF; "
    "without --teacher it needs --dataset)"
)
DATASET = typer.Option(
    None, help="dataset: a catalog name (digits, fashion-mnist, mnist, cifar10, …), folder:DIR or "
    "python:pkg.module:make (default: the teacher runs'; required with checkpoint files or only --weights)"
)
ALLOW_MISMATCH = typer.Option(False, "--allow-dataset-mismatch", help=ALLOW_MISMATCH_HELP)
ROOT = typer.Option(None, help="dataset root directory")
OUT = typer.Option(DEFAULT_STORE, help=STORE_HELP)
RESTART = typer.Option(False, "--restart", help=RESTART_HELP)
THREADS = typer.Option(None, "--threads", help=THREADS_HELP)
QUIET = typer.Option(False, "--quiet", help="no progress bars or thread line")
DEVICE = typer.Option("auto", help="auto | cpu | cuda")
TRAIN_SUBSET = typer.Option(None, "--train-subset", help="use N random training examples (seeded) as the transfer set")
SEED = typer.Option(0, help="seed of the subset, the students' initialisation and the batch order")


@softlabels_app.command("entropy")
@user_errors_exit_2
def entropy_cmd(
    teacher: list[str] = TEACHER,
    teacher_model: str = TEACHER_MODEL,
    weights: str = WEIGHTS,
    dataset: str = DATASET,
    root: str = ROOT,
    allow_dataset_mismatch: bool = ALLOW_MISMATCH,
    split: str = typer.Option("train", help="train | test: the examples whose soft labels are measured"),
    temperatures: str = typer.Option(None, help="comma-separated T (default 1…20 with 3,6,…,18,20)"),
    ls_alphas: str = typer.Option(None, "--ls-alphas", help="α_LS values for the label-smoothing curve (default 0…1)"),
    label_t: float = typer.Option(1.0, "--label-T", help="temperature of the confidence/similarity label tables"),
    examples: str = typer.Option(None, help="example indices for a soft-label table (default: first of each class)"),
    out: str = OUT,
    restart: bool = RESTART,
    threads: int = THREADS,
    device: str = DEVICE,
    train_subset: int = TRAIN_SUBSET,
    seed: int = SEED,
    quiet: bool = QUIET,
) -> None:
    """Soft-label entropy vs temperature per teacher, and label smoothing's entropy vs α_LS."""
    opts = dict(locals())  # the options as given: recorded with the analysis
    from kdlens.explain.softlabels import (
        DEFAULT_LS_ALPHAS,
        DEFAULT_TEMPERATURES,
        entropy_by_temperature,
        label_smoothing_entropy_curve,
        label_variance,
        soft_label_table,
    )
    from kdlens.figures.softlabels import plot_entropy_curves
    from kdlens.figures.softlabels_extra import plot_class_entropy_curves
    from kdlens.figures.style import paper_style

    ts = _temperatures(temperatures) if temperatures is not None else list(DEFAULT_TEMPERATURES)
    alphas = _alphas(ls_alphas) if ls_alphas is not None else list(DEFAULT_LS_ALPHAS)
    _temperatures(str(label_t), "--label-T")
    if split not in ("train", "test"):
        raise KdlensError(f"--split must be 'train' or 'test', got {split!r}")
    chosen = _numbers(examples, "--examples", int)
    refs, dataset, own, store = _inputs(teacher, teacher_model, weights, dataset, allow_dataset_mismatch, out)
    setup = _setup(refs, teacher_model, weights, dataset, root, train_subset, seed, device, own)
    data = setup.train if split == "train" else setup.test
    bad = [i for i in chosen if not 0 <= i < len(data)]
    if bad:
        raise KdlensError(f"--examples: indices {bad} out of range 0..{len(data) - 1} of the {split} split")
    if not chosen:
        labels = data.labels.numpy()
        chosen = [int(np.flatnonzero(labels == c)[0]) for c in range(data.num_classes) if (labels == c).any()]

    def body(out_dir: Path) -> dict[str, Any]:
        from kdlens.explain.softlabels import teacher_logits

        tables, rows, var_rows, table_rows, summary = {}, [], [], [], {}
        for name, model in setup.teachers.items():
            z = teacher_logits(model, data, setup.device)
            table = entropy_by_temperature(z, data.labels, ts, class_names=data.classes)
            tables[name] = table
            rows += table.rows(name)
            var_rows += [{"teacher": name, **r} for r in label_variance(z, data.labels, label_t).rows(data.classes)]
            table_rows += [{"teacher": name, **r} for r in soft_label_table(z, data.labels, chosen, [label_t], data.classes)]
            summary[name] = {"temperatures": table.temperatures, "mean_entropy": table.mean,
                             "per_class_entropy": table.per_class}
        ls_curve = label_smoothing_entropy_curve(alphas, data.num_classes)
        rows += [{"teacher": "label smoothing", "alpha_ls": a, "class": "all", "class_id": -1, "mean_entropy": float(h)}
                 for a, h in zip(alphas, ls_curve)]
        plot_entropy_curves(tables, (alphas, ls_curve), title=f"soft-label entropy ({dataset}, {split})",
                            path=out_dir / "entropy.png")
        with paper_style():
            plot_class_entropy_curves(tables, title=f"entropy per class ({dataset}, {split})",
                                      path=out_dir / "entropy_per_class.png")
        _write_csv(out_dir / "entropy.csv", rows)
        _write_csv(out_dir / "label_variance.csv", var_rows)
        _write_csv(out_dir / "soft_label_table.csv", table_rows)
        _write_json(out_dir / "entropy.json", {
            "dataset": dataset, "split": split, "log_k": float(np.log(data.num_classes)), "teachers": summary,
            "label_smoothing": {"alphas": alphas, "entropy": ls_curve}, "label_T": label_t, "examples": chosen,
        })
        typer.echo(f"wrote entropy.png, entropy_per_class.png, entropy.csv, label_variance.csv, soft_label_table.csv, entropy.json to {out_dir}")
        return {"split": split, "temperatures": [float(t) for t in ts],
                "mean_entropy": {n: [float(v) for v in t["mean_entropy"]] for n, t in summary.items()}}

    _record("entropy", opts, store, body, setup)


EPOCHS = typer.Option(2, help="student epochs")
BATCH = typer.Option(128, "--batch-size", help="student batch size")
LR = typer.Option(0.05, help="student learning rate (SGD, momentum 0.9, wd 5e-4, constant)")
CHUNK = typer.Option(None, "--chunk-size", help="students per forward pass (default: all)")
BACKEND = typer.Option("grouped", help="grouped | vmap")
STUDENT = typer.Option("thesis_student", help="student model")


@softlabels_app.command("missing-class")
@user_errors_exit_2
def missing_class_cmd(
    teacher: list[str] = TEACHER,
    teacher_model: str = TEACHER_MODEL,
    weights: str = WEIGHTS,
    dataset: str = DATASET,
    root: str = ROOT,
    allow_dataset_mismatch: bool = ALLOW_MISMATCH,
    student: str = STUDENT,
    classes: str = typer.Option(None, help="classes to remove, one at a time (default: all)"),
    temperatures: str = typer.Option(THESIS_T, help="distillation temperatures"),
    ls_alphas: str = typer.Option(None, "--ls-alphas", help="α_LS of the label-smoothing control (e.g. 0.1,0.5)"),
    batches: str = typer.Option("shared", help="shared (masked full-set batches) | own (each student its subset loader)"),
    epochs: int = EPOCHS,
    batch_size: int = BATCH,
    lr: float = LR,
    chunk_size: int = CHUNK,
    backend: str = BACKEND,
    out: str = OUT,
    restart: bool = RESTART,
    threads: int = THREADS,
    device: str = DEVICE,
    train_subset: int = TRAIN_SUBSET,
    seed: int = SEED,
    quiet: bool = QUIET,
) -> None:
    """Missing-class test: accuracy on a class removed from the transfer set, class × T per teacher."""
    opts = dict(locals())  # the options as given: recorded with the analysis
    from kdlens.explain.softlabels import missing_class_test
    from kdlens.figures.softlabels import plot_missing_class_heatmaps

    ts = _temperatures(temperatures)
    alphas = _alphas(ls_alphas)
    _check_student(student)
    refs, dataset, own, store = _inputs(teacher, teacher_model, weights, dataset, allow_dataset_mismatch, out)
    setup = _setup(refs, teacher_model, weights, dataset, root, train_subset, seed, device, own)
    chosen = _classes(classes, setup.train.classes)
    settings = _settings(epochs, batch_size, lr, seed, chunk_size, backend, setup.device, quiet, batches)

    def body(out_dir: Path) -> dict[str, Any]:
        result = missing_class_test(student, setup.train, setup.test, _logits(setup), chosen, ts, alphas, settings)
        plot_missing_class_heatmaps(result, title=f"missing-class test ({dataset}, {student})",
                                    path=out_dir / "missing_class.png")
        _write_sweep(out_dir, "missing_class", result,
                     {"dataset": dataset, "student": student, "epochs": epochs, "batches": batches})

    _record("missing-class", opts, store, body, setup)


@softlabels_app.command("transfer-set")
@user_errors_exit_2
def transfer_set_cmd(
    teacher: list[str] = TEACHER,
    teacher_model: str = TEACHER_MODEL,
    weights: str = WEIGHTS,
    dataset: str = DATASET,
    root: str = ROOT,
    allow_dataset_mismatch: bool = ALLOW_MISMATCH,
    student: str = STUDENT,
    ns: str = typer.Option("5,10,20,50,100,200,500,1000,2000", help="examples per class"),
    temperature: float = typer.Option(9.0, "--T", help="temperature of the entropy ranking"),
    distill_t: float = typer.Option(None, "--distill-T", help="distillation temperature (default: --T)"),
    random_seeds: str = typer.Option("0", "--random-seeds", help="seeds of the random-N baseline ('' for none)"),
    min_steps: int = typer.Option(0, "--min-steps", help="train small sets for at least this many steps"),
    epochs: int = EPOCHS,
    batch_size: int = BATCH,
    lr: float = LR,
    chunk_size: int = CHUNK,
    backend: str = BACKEND,
    out: str = OUT,
    restart: bool = RESTART,
    threads: int = THREADS,
    device: str = DEVICE,
    train_subset: int = TRAIN_SUBSET,
    seed: int = SEED,
    quiet: bool = QUIET,
) -> None:
    """Entropy-ranked transfer sets: accuracy vs top-N per class, with a random-N baseline."""
    opts = dict(locals())  # the options as given: recorded with the analysis
    from kdlens.explain.softlabels import entropy_ranked_transfer_sets
    from kdlens.figures.softlabels import plot_image_grid, plot_transfer_set_curves

    counts = _numbers(ns, "--ns", int)
    if not counts or min(counts) < 1:
        raise KdlensError(f"--ns: give positive examples-per-class counts, got {ns!r}")
    (rank_t,) = _temperatures(str(temperature), "--T")
    if distill_t is not None:
        _temperatures(str(distill_t), "--distill-T")
    seeds = _numbers(random_seeds, "--random-seeds", int)
    if min_steps < 0:
        raise KdlensError(f"--min-steps must be >= 0, got {min_steps}")
    _check_student(student)
    refs, dataset, own, store = _inputs(teacher, teacher_model, weights, dataset, allow_dataset_mismatch, out)
    setup = _setup(refs, teacher_model, weights, dataset, root, train_subset, seed, device, own)
    smallest = int(setup.train.class_counts().min())
    if max(counts) > smallest:
        raise KdlensError(f"--ns: {max(counts)} examples per class asked, but the smallest class of the transfer set "
                          f"has {smallest}; allowed: N <= {smallest}")
    settings = _settings(epochs, batch_size, lr, seed, chunk_size, backend, setup.device, quiet)

    def body(out_dir: Path) -> dict[str, Any]:
        result = entropy_ranked_transfer_sets(student, setup.train, setup.test, _logits(setup), counts, rank_t,
                                              distill_t, seeds, min_steps, settings)
        plot_transfer_set_curves(result, title=f"{dataset}, {student}", path=out_dir / "transfer_set.png")
        for name, idx in result.top_examples.items():
            plot_image_grid(setup.train.images, idx, setup.train.classes,
                            title=f"highest-entropy examples at T = {rank_t:g} ({name})",
                            path=out_dir / f"transfer_set_top_entropy_{name}.png")
        _write_sweep(out_dir, "transfer_set", result, {"dataset": dataset, "student": student})

    _record("transfer-set", opts, store, body, setup)


@softlabels_app.command("projection")
@user_errors_exit_2
def projection_cmd(
    teacher: list[str] = TEACHER,
    teacher_model: str = TEACHER_MODEL,
    weights: str = WEIGHTS,
    dataset: str = DATASET,
    root: str = ROOT,
    allow_dataset_mismatch: bool = ALLOW_MISMATCH,
    classes: str = typer.Option("0,1,2", help="three class ids"),
    split: str = typer.Option("test", help="train | test"),
    max_per_class: int = typer.Option(300, "--max-per-class", help="examples per class to project"),
    include_bias: bool = typer.Option(False, "--include-bias/--no-include-bias",
                                      help="templates [w_k, b_k] and activations [x, 1]"),
    out: str = OUT,
    restart: bool = RESTART,
    threads: int = THREADS,
    device: str = DEVICE,
    seed: int = SEED,
    quiet: bool = QUIET,
) -> None:
    """Penultimate activations projected onto the plane of three class templates (Müller et al. 2019)."""
    opts = dict(locals())  # the options as given: recorded with the analysis
    from kdlens.data.augment import normalize
    from kdlens.explain.inputs import rows_in_memory
    from kdlens.explain.softlabels import TemplateProjection, penultimate_activations
    from kdlens.figures.softlabels import plot_projections

    if split not in ("train", "test"):
        raise KdlensError(f"--split must be 'train' or 'test', got {split!r}")
    _positive(max_per_class, "--max-per-class")
    refs, dataset, own, store = _inputs(teacher, teacher_model, weights, dataset, allow_dataset_mismatch, out)
    setup = _setup(refs, teacher_model, weights, dataset, root, None, seed, device, own)
    data = setup.data.split(split)  # as given (maybe streamed): only the projected examples are read
    chosen = _classes(classes, data.classes)
    if chosen is None or len(chosen) != 3:
        raise KdlensError(f"--classes: give exactly three distinct class ids, got {classes!r}")
    labels = data.labels.numpy()
    rng = np.random.default_rng(seed)
    idx = np.sort(np.concatenate([
        rng.permutation(np.flatnonzero(labels == c))[:max_per_class] for c in chosen
    ]))

    def body(out_dir: Path) -> dict[str, Any]:
        sample = rows_in_memory(data, idx)
        x = normalize(sample.images, sample.mean, sample.std).to(setup.device)
        panels, rows, summary = {}, [], {}
        for name, model in setup.teachers.items():
            proj = TemplateProjection(chosen, include_bias=include_bias).fit(model)
            coords = proj.transform(penultimate_activations(model, x))
            panels[name] = (coords, labels[idx], proj.template_coords_)
            rows += [{"teacher": name, "index": int(i), "class_id": int(labels[i]), "class": data.classes[labels[i]],
                      "x": float(cx), "y": float(cy)} for i, (cx, cy) in zip(idx, coords)]
            summary[name] = {"template_coords": proj.template_coords_}
        plot_projections(panels, chosen, data.classes, title=f"penultimate layer, templates of classes {chosen}",
                         path=out_dir / "projection.png")
        _write_csv(out_dir / "projection.csv", rows)
        _write_json(out_dir / "projection.json", {"dataset": dataset, "split": split, "classes": chosen,
                                                  "class_names": [data.classes[c] for c in chosen],
                                                  "include_bias": include_bias, "teachers": summary})
        typer.echo(f"wrote projection.png, projection.csv, projection.json to {out_dir}")

    _record("projection", opts, store, body, setup)


@softlabels_app.command("noise")
@user_errors_exit_2
def noise_cmd(
    teacher: list[str] = TEACHER,
    teacher_model: str = TEACHER_MODEL,
    weights: str = WEIGHTS,
    dataset: str = DATASET,
    root: str = ROOT,
    allow_dataset_mismatch: bool = ALLOW_MISMATCH,
    student: str = STUDENT,
    scales: str = typer.Option("0,0.01,0.02,0.05,0.1,0.2,0.5", help="noise scales s (>= 0)"),
    noises: str = typer.Option("uniform,normal", help="uniform (U(-s, s)) and/or normal (N(0, s²))"),
    temperature: float = typer.Option(4.0, "--T", help="distillation temperature of the teachers' soft labels"),
    ls_alphas: str = typer.Option("0.1", "--ls-alphas", help="α_LS of the label-smoothing sources ('' for none)"),
    classes: str = typer.Option(None, help="remove each of these classes in turn: missing-class accuracy vs noise"),
    seeds: str = typer.Option("0", help="noise seeds (repetitions)"),
    batches: str = typer.Option("shared", help="shared | own (see missing-class)"),
    epochs: int = EPOCHS,
    batch_size: int = BATCH,
    lr: float = LR,
    chunk_size: int = CHUNK,
    backend: str = BACKEND,
    out: str = OUT,
    restart: bool = RESTART,
    threads: int = THREADS,
    device: str = DEVICE,
    train_subset: int = TRAIN_SUBSET,
    seed: int = SEED,
    quiet: bool = QUIET,
) -> None:
    """Noise in soft labels (§4.8): student accuracy vs noise scale, teacher and LS soft labels; noise
    redrawn every step, clipped at 0 and renormalised."""
    opts = dict(locals())  # the options as given: recorded with the analysis
    from kdlens.explain.softlabels.noise import check_noise_scales, check_noises, noise_values, soft_label_noise_sweep
    from kdlens.figures.softlabels_extra import plot_noise_sweep
    from kdlens.figures.style import paper_style

    def checked(check: Any, values: list[Any], what: str) -> Any:
        try:
            return check(values)
        except KdlensError as exc:
            raise KdlensError(f"{what}: {exc}") from None

    scale_list = checked(check_noise_scales, _numbers(scales, "--scales"), "--scales")
    noise_list = checked(check_noises, [n.strip() for n in noises.split(",") if n.strip()], "--noises")
    (temp,) = _temperatures(str(temperature), "--T")
    alphas, seed_list = _alphas(ls_alphas), _numbers(seeds, "--seeds", int)
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise KdlensError(f"--seeds: give distinct integer seeds, got {seeds!r}")
    _check_student(student)
    refs, dataset, own, store = _inputs(teacher, teacher_model, weights, dataset, allow_dataset_mismatch, out)
    setup = _setup(refs, teacher_model, weights, dataset, root, train_subset, seed, device, own)
    removed = _classes(classes, setup.train.classes)
    settings = _settings(epochs, batch_size, lr, seed, chunk_size, backend, setup.device, quiet, batches)

    def body(out_dir: Path) -> dict[str, Any]:
        result = soft_label_noise_sweep(student, setup.train, setup.test, _logits(setup), scale_list, noise_list, temp,
                                        alphas, removed, seed_list, settings)
        rows = result.rows()
        with paper_style():
            plot_noise_sweep(result, noise_values(rows, result.scales),
                             noise_values(rows, result.scales, "missing_class_acc") if removed else None,
                             title=f"noise in soft labels ({dataset}, {student})", path=out_dir / "noise.png")
        _write_sweep(out_dir, "noise", result, {"dataset": dataset, "student": student, "epochs": epochs, "batches": batches})

    _record("noise", opts, store, body, setup)


@softlabels_app.command("pretraining")
@user_errors_exit_2
def pretraining_cmd(
    model: str = typer.Option("thesis_teacher_small", help="teacher model (zoo name or reference)"),
    dataset: str = typer.Option("digits", help="dataset of the teachers and the transfer set"),
    root: str = ROOT,
    batch_sizes: str = typer.Option("16,32,64,128,256,512,1024,2048,4096,8192", "--batch-sizes",
                                    help="teacher batch sizes, one teacher run each"),
    teacher_epochs: int = typer.Option(10, "--teacher-epochs", help="epochs of every teacher run (weights kept per epoch)"),
    measure: str = typer.Option(None, "--measure-epochs", help="epochs to measure (default: every one)"),
    temperatures: str = typer.Option(None, help="temperatures of the entropy table (default 1…20)"),
    temperature: float = typer.Option(9.0, "--T", help="temperature of the entropy that chooses the teacher"),
    student: str = typer.Option("baseline_student", help="student distilled from every teacher ('none': skip)"),
    student_t: float = typer.Option(None, "--student-T", help="the students' distillation temperature (default --T)"),
    tolerance: float = typer.Option(1.0, help="teachers within this many accuracy points of the best are eligible"),
    teacher_set: list[str] = typer.Option(None, "--set", help="teacher config override key=value (repeatable, e.g. optim.lr=0.01)"),
    runs: str = typer.Option(None, help="run store of the teachers (default: the run store --out)"),
    epochs: int = EPOCHS,
    batch_size: int = BATCH,
    lr: float = LR,
    chunk_size: int = CHUNK,
    backend: str = BACKEND,
    out: str = OUT,
    restart: bool = RESTART,
    threads: int = THREADS,
    device: str = DEVICE,
    train_subset: int = TRAIN_SUBSET,
    seed: int = SEED,
    quiet: bool = QUIET,
) -> None:
    """Teacher pre-training (ch. 6): batch size × epochs → soft-label entropy and the student's accuracy;
    prints which batch size and epochs to choose by entropy. --epochs/--batch-size/--lr are the students'."""
    opts = dict(locals())  # the options as given: recorded with the analysis
    from kdlens.config.loading import apply_overrides
    from kdlens.figures.softlabels_extra import plot_pretraining
    from kdlens.figures.style import paper_style
    from kdlens.studies.pretraining import check_batch_sizes, check_epochs, recommendation_text, run_pretraining_sweep

    sizes = check_batch_sizes(_numbers(batch_sizes, "--batch-sizes", int))
    _positive(teacher_epochs, "--teacher-epochs")
    measured = check_epochs(_numbers(measure, "--measure-epochs", int) if measure else teacher_epochs)
    if max(measured) > teacher_epochs:
        raise KdlensError(f"--measure-epochs: {max(measured)} is past --teacher-epochs {teacher_epochs}")
    temps = _temperatures(temperatures) if temperatures is not None else None
    (temp,) = _temperatures(str(temperature), "--T")
    if student_t is not None:
        _temperatures(str(student_t), "--student-T")
    use_student = None if student.lower() == "none" else student
    if use_student is not None:
        _check_student(use_student)
    from kdlens.store.analysis import check_store

    store = check_store(out)
    base = apply_overrides({"model": {"name": model}, "data": {"name": dataset, "root": root}, "seed": seed,
                            "device": device}, list(teacher_set or []))
    settings = _settings(epochs, batch_size, lr, seed, chunk_size, backend, "cpu", quiet)
    from kdlens.train.trainer import resolve_device

    settings.device = str(resolve_device(device))
    from kdlens.studies.pretraining import teacher_configs

    teacher_configs(base, sizes, teacher_epochs, runs or str(store))  # checked before the analysis is recorded

    def body(out_dir: Path) -> dict[str, Any]:
        result = run_pretraining_sweep(base, sizes, list(measured), temps, temp, use_student, student_t, settings, tolerance,
                                       runs or str(store), train_subset, seed, progress=not quiet,
                                       log=None if quiet else typer.echo)
        with paper_style():
            plot_pretraining(result, title=f"teacher pre-training ({model} on {dataset})", path=out_dir / "pretraining.png")
        _write_csv(out_dir / "pretraining.csv", result.rows())
        _write_json(out_dir / "pretraining.json", {"model": model, "dataset": dataset, **result.to_dict()})
        typer.echo(recommendation_text(result.recommendation))
        typer.echo(f"{len(sizes)} teachers in {result.seconds_teachers:.1f}s, students in {result.seconds_students:.1f}s; "
                   f"wrote pretraining.png/.csv/.json to {out_dir}")

    _record("pretraining", opts, store, body, subjects=[model])
