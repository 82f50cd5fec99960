"""``kdlens demo`` (what ``make demo`` runs): the three papers' studies at smoke scale on the
embedded ``digits`` data, then one self-contained HTML report.

* ``examples/softlabel.yaml`` — soft-label entropy vs T, missing-class test, entropy-ranked
  transfer sets, penultimate projections (Vats 2021);
* ``examples/hints.yaml`` — layer similarity, clusters and hint points, conventional vs proposed
  hint points for AT+KD and FitNet+KD (Keser et al. 2022);
* ``examples/embedding.yaml`` — limited labels: UD vs D students, embeddings at A–E, Ivis loss,
  class-area ratio, superclass correlation (Lee & Wallraven 2021).

Every run is recorded in the studies' run stores, so a second ``kdlens demo`` only rebuilds the
report.  ``dataset="fashion-mnist"`` runs the same grids on Fashion-MNIST (when the Debian
package ``dataset-fashion-mnist`` is installed) — the same smoke scale, so it is quick but the
numbers are those of short training.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from kdlens.errors import KdlensError

DEMO_STUDIES = ("softlabel", "hints", "embedding")


def examples_dir() -> Path:
    """The ``examples/`` folder of the kdlens checkout (the working directory's or the package's)."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if all((base / "examples" / f"{name}.yaml").is_file() for name in DEMO_STUDIES):
            return base / "examples"
    raise KdlensError(
        "kdlens demo needs the example studies examples/{softlabel,hints,embedding}.yaml of the kdlens "
        "repository; run it from the repository root (`make demo`)"
    )


def demo_overrides(dataset: str) -> list[str]:
    if dataset == "digits":
        return []
    over = [f"defaults.data.name={dataset}"]
    # the illustrative digit groups do not apply: use the dataset's own superclasses
    return over


def run_demo(
    out: str = "runs/demo",
    dataset: str = "digits",
    progress: bool = True,
    scale: str = "smoke",
    workers: int | None = None,
    threads: int | None = 1,
) -> Path:
    """Run the three studies at ``scale`` into ``OUT/NAME`` and write ``OUT/report.html``.

    ``threads``: torch threads of each task (1: small models gain nothing from more threads,
    and a busy CPU loses a lot with them); ``workers``: tasks at a time (default 1).
    """
    import torch

    from kdlens.data import load_dataset
    from kdlens.report.html import write_report
    from kdlens.studies.grid import load_study, run_study

    console = Console(stderr=True)
    load_dataset(dataset, "test")  # a missing dataset fails here, before any work
    folder = examples_dir()
    studies = []
    for name in DEMO_STUDIES:
        over = demo_overrides(dataset)
        if dataset != "digits" and name == "embedding":
            over.append("groups.embedding.params.superclasses=null")
        studies.append(load_study(folder / f"{name}.yaml", scale, Path(out) / name, over))
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    start = time.time()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    summaries: dict[str, Any] = {}
    try:
        for study in studies:
            if progress:
                console.print(f"[bold]{study.name}[/]: {study.spec.description}", highlight=False)
            summaries[study.name] = run_study(study, workers=workers or 1, progress=progress, console=console)
    finally:
        torch.set_num_threads(before)
    report = write_report([s.directory for s in studies], out=Path(out) / "report.html",
                          title=f"kdlens demo: three studies of knowledge distillation on {dataset}")
    seconds = time.time() - start
    failed = sum(s.failed + s.blocked for s in summaries.values())
    if progress:
        console.print(
            f"demo finished in {seconds / 60:.1f} min (load average {load:.1f} at the start, "
            f"{os.cpu_count()} cores); {failed} task(s) failed or blocked — `kdlens study status {Path(out)}/NAME` "
            "lists them" if failed else
            f"demo finished in {seconds / 60:.1f} min (load average {load:.1f} at the start, {os.cpu_count()} cores)",
            highlight=False,
        )
    print(report)
    return report
