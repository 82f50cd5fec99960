"""``kdlens demo``: the main job on the embedded data (grows as the studies land)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from kdlens.config import TrainConfig, validate
from kdlens.train.run import run_training

DEMO_MODELS = (("teacher", "thesis_teacher_small", 15), ("student", "thesis_student", 15))


def run_demo(out: str = "runs/demo", dataset: str = "digits", progress: bool = True) -> dict[str, float]:
    console = Console()
    accuracies: dict[str, float] = {}
    table = Table("role", "model", "final test acc", "best test acc", "run")
    for role, model, epochs in DEMO_MODELS:
        cfg = validate(
            TrainConfig,
            {"model": {"name": model}, "data": {"name": dataset}, "epochs": epochs, "out": out,
             "name": f"demo-{role}"},
        )
        outcome = run_training(cfg, progress=progress)
        m = outcome.metrics
        accuracies[role] = m["final_acc"]
        table.add_row(role, model, f"{m['final_acc']:.2f}%", f"{m['best_acc']:.2f}%", str(outcome.path))
    console.print(table)
    console.print(f"Runs and metrics are under [bold]{out}[/] (see `kdlens runs --out {out}`).")
    return accuracies
