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
    dataset: str = typer.Option("fashion-mnist"),
    budgets: str = typer.Option("100,500,1000,5000", help="balanced label budgets"),
    folds: int = typer.Option(3),
    teacher: str = typer.Option("thesis_teacher_small"),
    student: str = typer.Option("thesis_student"),
    student_epochs: int = typer.Option(3, help="epochs over the unlabeled set for the distilled student"),
    unlabeled_limit: int = typer.Option(None, help="cap the unlabeled set (random, seeded)"),
    teacher_init: str = typer.Option(None, help="fine-tune the teacher from this run/checkpoint"),
    teacher_cache: str = typer.Option("auto", help="teacher-output cache for the distilled student: auto | on | off"),
    out: str = typer.Option("runs/limited-label"),
    bf16: bool = typer.Option(False, "--bf16/--no-bf16"),
) -> None:
    """Lee & Wallraven 2021 Table 1: undistilled vs distilled student and teacher per label budget."""
    from kdlens.studies.limited_label import limited_label_table, run_limited_label_study

    rows = run_limited_label_study(dataset, _ints(budgets), folds, teacher, student, student_epochs,
                                   unlabeled_limit, teacher_init=teacher_init, teacher_cache=teacher_cache, out=out,
                                   extra={"bf16": bf16, "channels_last": bf16})
    typer.echo(limited_label_table(rows))


@study_app.command("kd-vs-alone")
@user_errors_exit_2
def kd_vs_alone(
    teacher: str = typer.Option(..., help="teacher run directory"),
    dataset: str = typer.Option("fashion-mnist"),
    student: str = typer.Option("thesis_student"),
    method: str = typer.Option("kd"),
    seeds: str = typer.Option("0,1,2"),
    epochs: int = typer.Option(5),
    out: str = typer.Option("runs/kd-vs-alone"),
    bf16: bool = typer.Option(False, "--bf16/--no-bf16"),
) -> None:
    """The same student alone vs distilled, mean ± std over seeds."""
    from kdlens.studies.kd_vs_alone import kd_vs_alone_table, run_kd_vs_alone

    rows = run_kd_vs_alone(teacher, dataset, student, method, _ints(seeds), epochs, out,
                           extra={"bf16": bf16, "channels_last": bf16})
    typer.echo(kd_vs_alone_table(rows, method))
