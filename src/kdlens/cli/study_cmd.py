"""``kdlens study …``: the papers' experiments as grids of recorded, resumable runs."""

from __future__ import annotations

import typer

from kdlens.cli.errors import user_errors_exit_2

study_app = typer.Typer(no_args_is_help=True, help="Run a study (a grid of recorded runs; re-running skips finished runs).")


def _ints(text: str) -> list[int]:
    from kdlens.errors import KdlensError

    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise KdlensError(f"expected comma-separated integers, got {text!r}") from None


@study_app.command("limited-label")
@user_errors_exit_2
def limited_label(
    scale: str = typer.Option("cpu", help="cpu: Fashion-MNIST sized for a CPU (the defaults below) | paper: Lee & "
                              "Wallraven's CIFAR-100 protocol (WRN-28-1 student, ImageNet ResNet-18 teacher, SGD "
                              "0.1 ×0.2/60 epochs, flips, budgets 400…20,000 × 5 folds; needs --data-root and "
                              "--teacher-weights files, see README)"),
    dataset: str = typer.Option(None, help="dataset (default: fashion-mnist; paper: cifar100)"),
    budgets: str = typer.Option(None, help="balanced label budgets (default: 100,500,1000,5000; paper: "
                                "400,2500,5000,10000,20000)"),
    folds: int = typer.Option(None, help="folds per budget (default: 3; paper: 5)"),
    teacher: str = typer.Option(None, "--teacher-model", help="teacher model reference (zoo name, "
                                "torchvision:NAME, …) trained on each fold's labels; see --teacher-init "
                                "(default: thesis_teacher_small; paper: resnet18)"),
    student: str = typer.Option(None, help="student model reference (default: thesis_student; paper: wrn_28_1)"),
    student_epochs: int = typer.Option(None, help="epochs over the unlabeled set for the distilled student "
                                       "(default: 3; paper: 200)"),
    labeled_epochs: int = typer.Option(None, "--labeled-epochs", help="epochs of the teacher and UD on the "
                                       "labeled set (default: min(200, max(10, 20000/budget)); paper: 200)"),
    unlabeled_limit: int = typer.Option(None, help="cap the unlabeled set (random, seeded)"),
    teacher_init: str = typer.Option(None, "--teacher-init", help="fine-tune the teacher from this run directory "
                                     "or checkpoint file"),
    teacher_pretrain: str = typer.Option("none", "--teacher-pretrain", help="none | disjoint: pre-train the "
                                         "teacher on a stratified reserve of the training set (all labels) that "
                                         "no fold's labeled set or unlabeled pool contains, then fine-tune it "
                                         "per budget"),
    pretrain_fraction: float = typer.Option(0.2, help="share of the training set reserved for --teacher-pretrain "
                                            "disjoint"),
    pretrain_epochs: int = typer.Option(None, help="epochs of the pre-training on the reserve (default: the "
                                        "labeled-epoch rule at the reserve's size)"),
    data_root: str = typer.Option(None, "--data-root", help="folder holding the dataset files (paper: "
                                  "DIR/cifar-100-python/{train,test,meta}; default: $KDLENS_DATA_ROOT or "
                                  "~/.cache/kdlens/datasets)"),
    teacher_weights: str = typer.Option(None, "--teacher-weights", help="paper: torchvision resnet18 ImageNet "
                                        "state_dict (default: torch hub's checkpoints/resnet18-f37072fd.pth)"),
    teacher_upsample: int = typer.Option(None, "--teacher-upsample", help="paper: side the teacher resizes the "
                                         "32×32 inputs to (default 224)"),
    teacher_cache: str = typer.Option("auto", help="teacher-output cache for the distilled student: auto | on | off"),
    out: str = typer.Option("runs/limited-label", help="run store of the study's runs (reused when done)"),
    bf16: bool = typer.Option(False, "--bf16/--no-bf16", help="bf16 autocast and channels-last (fast only on CPUs "
                              "with native bf16: AVX-512-BF16/AMX)"),
    semi: str = typer.Option(None, help="semi-supervised baselines to run beside UD and D, comma-separated: "
                             "pseudo_label, pi_model, mean_teacher, mixmatch, fixmatch, or all"),
    compare_scratch: bool = typer.Option(False, "--compare-scratch", help="with --teacher-pretrain or "
                                         "--teacher-init: also a teacher from scratch and its distilled student "
                                         "per cell, on the same folds (Table 1's two D columns)"),
    evaluations: int = typer.Option(10, help="test-set evaluations per run, the last epoch always (1: only the "
                                    "final accuracy the table uses — on small budgets the test set otherwise costs "
                                    "more than the training)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars or run lines"),
) -> None:
    """Lee & Wallraven 2021 Table 1: undistilled vs distilled student and teacher per label budget
    (and, with --semi, the semi-supervised baselines on the same folds)."""
    if not quiet:  # before the heavy imports: a line within a second of starting
        typer.echo(f"limited-label ({scale} scale): teacher, undistilled and distilled student per budget and fold → {out}")
    from kdlens.errors import KdlensError
    from kdlens.studies.limited_label import limited_label_table, run_limited_label_study, semi_methods
    from kdlens.studies.limited_label_paper import scale_settings

    if scale == "paper" and teacher_init is not None:
        raise KdlensError("--scale paper fine-tunes the ImageNet ResNet-18 of --teacher-weights; --teacher-init "
                          "is for the cpu scale")
    settings = scale_settings(scale, data_root, teacher_weights, teacher_upsample)
    given = {"dataset": dataset, "budgets": None if budgets is None else _ints(budgets), "folds": folds,
             "teacher": teacher, "student": student, "student_epochs": student_epochs,
             "labeled_epochs_override": labeled_epochs, "teacher_init": teacher_init}
    settings.update({k: v for k, v in given.items() if v is not None})
    spread = settings.pop("spread", "std")
    extra = {**settings.pop("extra", {}), "bf16": bf16, "channels_last": bf16}
    rows = run_limited_label_study(**settings, unlabeled_limit=unlabeled_limit, teacher_cache=teacher_cache,
                                   out=out, extra=extra, semi=semi_methods(semi), teacher_pretrain=teacher_pretrain,
                                   pretrain_fraction=pretrain_fraction, pretrain_epochs=pretrain_epochs,
                                   compare_scratch=compare_scratch, evaluations=evaluations, progress=not quiet, log=None if quiet else typer.echo)
    typer.echo(limited_label_table(rows, spread=spread))
    if not quiet:
        typer.echo(f"figure: {out}/limited_label.png · rows: {out}/limited_label.json")


@study_app.command("kd-vs-alone")
@user_errors_exit_2
def kd_vs_alone(
    teacher: str = typer.Option(..., help="teacher run directory"),
    dataset: str = typer.Option(None, help="dataset of both students (default: the teacher run's)"),
    student: str = typer.Option("cnn_student", help="student model reference"),
    method: str = typer.Option("kd", help="distillation method of the distilled student"),
    seeds: str = typer.Option("0,1,2", help="seeds, comma-separated (one pair of runs each)"),
    epochs: int = typer.Option(5, help="epochs of every student"),
    out: str = typer.Option("runs/kd-vs-alone", help="run store of the students"),
    bf16: bool = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: precision auto)"),
    gamma: float = typer.Option(None, help="CE weight γ of the distilled student (default: the method's)"),
    alpha: float = typer.Option(None, help="logit-loss weight α (default: the method's)"),
    beta: float = typer.Option(None, help="hint-loss weight β (default: the method's)"),
    temperature: float = typer.Option(None, "--T", help="KD temperature (default: the method's, 4 for kd)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """The same student alone vs distilled, mean ± std over seeds."""
    if not quiet:  # before the heavy imports: a line within a second of starting
        typer.echo(f"kd-vs-alone: {student} alone vs distilled ({method}) from {teacher}, seeds {seeds}, "
                   f"{epochs} epochs each → {out}")
    from kdlens.studies.kd_vs_alone import kd_vs_alone_table, kd_vs_alone_verdict, run_kd_vs_alone, teacher_accuracy
    from kdlens.train.teacher import teacher_training_data

    weights = {k: v for k, v in (("gamma", gamma), ("alpha", alpha), ("beta", beta)) if v is not None}
    if temperature is not None:
        weights["loss"] = {"T": temperature}
    if dataset is None:
        dataset = (teacher_training_data(teacher) or {}).get("name") or "fashion-mnist"
    extra = {} if bf16 is None else {"bf16": bf16, "channels_last": bf16}
    rows = run_kd_vs_alone(teacher, dataset, student, method, _ints(seeds), epochs, out,
                           progress=not quiet, extra=extra, distill_extra=weights, log=None if quiet else typer.echo)
    typer.echo(kd_vs_alone_table(rows, method))
    typer.echo(kd_vs_alone_verdict(rows, teacher_accuracy(teacher)))


@study_app.command("run")
@user_errors_exit_2
def run(
    file: str = typer.Argument(..., help="study YAML (examples/softlabel.yaml, hints.yaml, embedding.yaml)"),
    scale: str = typer.Option(None, help="smoke | small | cpu | full: the scales of the example studies "
                              "(a study file names its own under `scales`; default: its default_scale)"),
    workers: int = typer.Option(None, help="tasks at a time (default: CPU cores)"),
    executor: str = typer.Option("local", help="local | ray"),
    address: str = typer.Option(None, help="Ray cluster address (with --executor ray; default: a local instance)"),
    out: str = typer.Option(None, help="study directory (default: the file's out/SCALE)"),
    set_: list[str] = typer.Option(None, "--set", help="override a key of the study file, e.g. defaults.data.name=fashion-mnist"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="run failed tasks again"),
    wait: bool = typer.Option(False, "--wait", help="if another runner holds this study, wait for it instead of exiting"),
    show_config: bool = typer.Option(False, "--print-config", help="print every task's resolved config "
                                      "(YAML, scale and --set applied) and exit; nothing runs"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
) -> None:
    """Run a study: expand its grid, skip tasks already done, run the rest (dependencies first).

    Every task's config is checked before anything runs.  Ctrl-C, SIGTERM and SIGHUP stop the
    workers, mark the tasks in flight interrupted and say in one line what was kept; running
    the same command again resumes."""
    from kdlens.studies.grid import StudyInterrupted, load_study, run_study

    study = load_study(file, scale, out, set_ or [])
    if show_config:
        import yaml

        typer.echo(yaml.safe_dump({"study": str(study.directory), "tasks": [t.to_dict() for t in study.tasks]},
                                  sort_keys=False).rstrip())
        raise typer.Exit(0)

    def waiting(holder) -> None:
        typer.echo(f"waiting for {holder.describe()}, which is running study {study.directory} …", err=True)

    try:
        summary = run_study(study, workers=workers, executor=executor, address=address,
                            retry_failed=retry_failed, progress=not quiet, wait=wait, on_wait=waiting)
    except StudyInterrupted as exc:
        import gc

        typer.echo(str(exc), err=True)
        gc.freeze()  # exit at once: the final collection of torch's objects takes ~0.5 s on 2 cores
        raise typer.Exit(code=exc.exit_code) from None
    typer.echo(
        f"study {study.name} ({study.scale}): {summary.done}/{len(study.tasks)} done "
        f"({summary.skipped} already done, {summary.ran} run now), {summary.failed} failed, "
        f"{summary.blocked} blocked, {summary.seconds:.1f} s; {study.directory}"
    )
    if not summary.ok:
        typer.echo(f"see `kdlens study status {study.directory}` for the reasons")
        raise typer.Exit(code=1)


@study_app.command("status")
@user_errors_exit_2
def status(
    file: str = typer.Argument(..., help="study YAML or study directory"),
    scale: str = typer.Option(None, help="smoke | small | cpu | full (with a YAML file: one of its scales)"),
    out: str = typer.Option(None, help="study directory (default: the file's out/SCALE)"),
    set_: list[str] = typer.Option(None, "--set", help="the same overrides as given to `study run`"),
    all_: bool = typer.Option(False, "--all", help="list every task, not only the unfinished ones"),
) -> None:
    """Show a study's tasks: done / running / failed (with reasons) / blocked / pending."""
    from pathlib import Path

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from kdlens.studies.grid import load_study, open_study, status_rows

    study = open_study(file) if Path(file).is_dir() else load_study(file, scale, out, set_ or [])
    rows = status_rows(study)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    table = Table("task", "kind", "status", "acc", "top-5", "seconds", "reason",
                  title=f"study {study.name} ({study.scale}) · {study.directory}", title_justify="left")
    colour = {"done": "green", "failed": "red", "blocked": "yellow", "running": "cyan"}
    for r in rows:
        if not all_ and r["status"] == "done":
            continue
        acc = "" if r["final_acc"] is None else f"{r['final_acc']:.2f}"
        acc5 = "" if r.get("final_acc5") is None else f"{r['final_acc5']:.2f}"
        secs = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        st = r["status"]
        table.add_row(escape(r["task"]), r["kind"], f"[{colour.get(st, 'white')}]{st}[/]", acc, acc5, secs,
                      escape(r["reason"]))
    console = Console()
    console.print(table)
    for r in rows:  # in full: the table's reason column is narrow
        if r["status"] == "failed" and r["reason"]:
            console.print(f"failed {r['task']}: {r['reason']}", markup=False, highlight=False)
    console.print(" · ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f" · total {len(rows)}")


@study_app.command("steps")
def steps() -> None:
    """List the kinds a study group can have: train, distill and the registered steps."""
    import inspect

    from rich.console import Console
    from rich.table import Table

    from kdlens.studies.papers import STEPS

    table = Table("kind", "what it does")
    table.add_row("train", "a supervised run (kdlens train); config: a TrainConfig")
    table.add_row("distill", "a distillation run (kdlens distill); config: a DistillConfig, teacher.run: \"${GROUP}\"")
    for name in STEPS.names():
        doc = (inspect.getdoc(STEPS.get(name)) or "").split("\n\n")[0]
        table.add_row(name, " ".join(doc.split()))
    Console().print(table)
