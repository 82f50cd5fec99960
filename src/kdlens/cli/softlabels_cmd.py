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
(:mod:`kdlens.train.vectorized`); the teacher's logits are computed once per command. The
analyses themselves are :mod:`kdlens.studies.softlabel_analyses`; this module parses options.
"""

from __future__ import annotations

from typing import Any

import typer

from kdlens.cli import list_options as lists
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
    from kdlens.explain.softlabels import DEFAULT_LS_ALPHAS, DEFAULT_TEMPERATURES
    from kdlens.studies import softlabel_analyses as sa

    ts = lists.temperatures(temperatures) if temperatures is not None else list(DEFAULT_TEMPERATURES)
    alphas = lists.ls_alphas(ls_alphas) if ls_alphas is not None else list(DEFAULT_LS_ALPHAS)
    lists.temperatures(str(label_t), "--label-T")
    if split not in ("train", "test"):
        raise KdlensError(f"--split must be 'train' or 'test', got {split!r}")
    chosen = lists.numbers(examples, "--examples", int)
    inputs, store = sa.load_inputs(teacher, teacher_model, weights, dataset, allow_dataset_mismatch, out, root,
                                   train_subset, seed, device)
    data = inputs.train if split == "train" else inputs.test
    bad = [i for i in chosen if not 0 <= i < len(data)]
    if bad:
        raise KdlensError(f"--examples: indices {bad} out of range 0..{len(data) - 1} of the {split} split")
    chosen = chosen or sa.default_examples(data)
    sa.record("entropy", opts, store, lambda out_dir: sa.entropy_analysis(
        inputs, out_dir, split, ts, alphas, label_t, chosen, log=typer.echo), inputs, log=typer.echo)


EPOCHS = typer.Option(2, help="student epochs")
BATCH = typer.Option(128, "--batch-size", help="student batch size")
LR = typer.Option(0.05, help="student learning rate (SGD, momentum 0.9, wd 5e-4, constant)")
CHUNK = typer.Option(None, "--chunk-size", help="students per forward pass (default: all)")
BACKEND = typer.Option("grouped", help="grouped | vmap")
STUDENT = typer.Option("cnn_student", help="student model (the thesis's own: vats_student_fmnist, vats_baseline_28, …)")


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
    from kdlens.studies import softlabel_analyses as sa

    ts, alphas = lists.temperatures(temperatures), lists.ls_alphas(ls_alphas)
    sa.check_student(student)
    inputs, store = sa.load_inputs(teacher, teacher_model, weights, dataset, allow_dataset_mismatch, out, root,
                                   train_subset, seed, device)
    chosen = lists.class_ids(classes, inputs.train.classes)
    settings = sa.sweep_settings(epochs, batch_size, lr, seed, chunk_size, backend, inputs.device, quiet, batches)
    sa.record("missing-class", opts, store, lambda out_dir: sa.missing_class_analysis(
        inputs, out_dir, student, chosen, ts, alphas, settings, log=typer.echo), inputs, log=typer.echo)


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
    from kdlens.studies import softlabel_analyses as sa

    counts = lists.numbers(ns, "--ns", int)
    if not counts or min(counts) < 1:
        raise KdlensError(f"--ns: give positive examples-per-class counts, got {ns!r}")
    (rank_t,) = lists.temperatures(str(temperature), "--T")
    if distill_t is not None:
        lists.temperatures(str(distill_t), "--distill-T")
    seeds = lists.numbers(random_seeds, "--random-seeds", int)
    if min_steps < 0:
        raise KdlensError(f"--min-steps must be >= 0, got {min_steps}")
    sa.check_student(student)
    inputs, store = sa.load_inputs(teacher, teacher_model, weights, dataset, allow_dataset_mismatch, out, root,
                                   train_subset, seed, device)
    smallest = int(inputs.train.class_counts().min())
    if max(counts) > smallest:
        raise KdlensError(f"--ns: {max(counts)} examples per class asked, but the smallest class of the transfer set "
                          f"has {smallest}; allowed: N <= {smallest}")
    settings = sa.sweep_settings(epochs, batch_size, lr, seed, chunk_size, backend, inputs.device, quiet)
    sa.record("transfer-set", opts, store, lambda out_dir: sa.transfer_set_analysis(
        inputs, out_dir, student, counts, rank_t, distill_t, seeds, min_steps, settings, log=typer.echo),
        inputs, log=typer.echo)


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
    from kdlens.studies import softlabel_analyses as sa

    if split not in ("train", "test"):
        raise KdlensError(f"--split must be 'train' or 'test', got {split!r}")
    sa.check_positive(max_per_class, "--max-per-class")
    inputs, store = sa.load_inputs(teacher, teacher_model, weights, dataset, allow_dataset_mismatch, out, root,
                                   None, seed, device)
    data = inputs.data.split(split)
    chosen = lists.class_ids(classes, data.classes)
    if chosen is None or len(chosen) != 3:
        raise KdlensError(f"--classes: give exactly three distinct class ids, got {classes!r}")
    index = sa.projection_sample(data.labels.numpy(), chosen, max_per_class, seed)
    sa.record("projection", opts, store, lambda out_dir: sa.projection_analysis(
        inputs, out_dir, split, chosen, index, include_bias, log=typer.echo), inputs, log=typer.echo)


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
    from kdlens.explain.softlabels.noise import check_noise_scales, check_noises
    from kdlens.studies import softlabel_analyses as sa

    def checked(check: Any, values: list[Any], what: str) -> Any:
        try:
            return check(values)
        except KdlensError as exc:
            raise KdlensError(f"{what}: {exc}") from None

    scale_list = checked(check_noise_scales, lists.numbers(scales, "--scales"), "--scales")
    noise_list = checked(check_noises, [n.strip() for n in noises.split(",") if n.strip()], "--noises")
    (temp,) = lists.temperatures(str(temperature), "--T")
    alphas, seed_list = lists.ls_alphas(ls_alphas), lists.numbers(seeds, "--seeds", int)
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise KdlensError(f"--seeds: give distinct integer seeds, got {seeds!r}")
    sa.check_student(student)
    inputs, store = sa.load_inputs(teacher, teacher_model, weights, dataset, allow_dataset_mismatch, out, root,
                                   train_subset, seed, device)
    removed = lists.class_ids(classes, inputs.train.classes)
    settings = sa.sweep_settings(epochs, batch_size, lr, seed, chunk_size, backend, inputs.device, quiet, batches)
    sa.record("noise", opts, store, lambda out_dir: sa.noise_analysis(
        inputs, out_dir, student, scale_list, noise_list, temp, alphas, removed, seed_list, settings, log=typer.echo),
        inputs, log=typer.echo)


@softlabels_app.command("pretraining")
@user_errors_exit_2
def pretraining_cmd(
    model: str = typer.Option("cnn_teacher_small", help="teacher model (zoo name or reference)"),
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
    from kdlens.store.analysis import check_store
    from kdlens.studies import softlabel_analyses as sa
    from kdlens.studies.pretraining import check_batch_sizes, check_epochs, teacher_configs
    from kdlens.train.trainer import resolve_device

    sizes = check_batch_sizes(lists.numbers(batch_sizes, "--batch-sizes", int))
    sa.check_positive(teacher_epochs, "--teacher-epochs")
    measured = check_epochs(lists.numbers(measure, "--measure-epochs", int) if measure else teacher_epochs)
    if max(measured) > teacher_epochs:
        raise KdlensError(f"--measure-epochs: {max(measured)} is past --teacher-epochs {teacher_epochs}")
    temps = lists.temperatures(temperatures) if temperatures is not None else None
    (temp,) = lists.temperatures(str(temperature), "--T")
    if student_t is not None:
        lists.temperatures(str(student_t), "--student-T")
    use_student = None if student.lower() == "none" else student
    if use_student is not None:
        sa.check_student(use_student)
    store = check_store(out)
    base = apply_overrides({"model": {"name": model}, "data": {"name": dataset, "root": root}, "seed": seed,
                            "device": device}, list(teacher_set or []))
    settings = sa.sweep_settings(epochs, batch_size, lr, seed, chunk_size, backend, "cpu", quiet)
    settings.device = str(resolve_device(device))
    teacher_store = runs or str(store)
    teacher_configs(base, sizes, teacher_epochs, teacher_store)  # checked before the analysis is recorded
    sa.record("pretraining", opts, store, lambda out_dir: sa.pretraining_analysis(
        out_dir, base, sizes, measured, temps, temp, use_student, student_t, settings, tolerance, teacher_store,
        train_subset, seed, quiet, log=typer.echo), subjects=[model], log=typer.echo)
