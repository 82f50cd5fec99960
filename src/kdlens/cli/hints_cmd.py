"""``kdlens hints``: PURSUhInT hint-point search on a trained teacher (Keser et al. 2022)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kdlens.cli.errors import user_errors_exit_2


@user_errors_exit_2
def hints(
    teacher: str = typer.Option(
        None, help="teacher run directory or checkpoint file (or --teacher-model REF --weights PATH)"
    ),
    k: int = typer.Option(3, "--k", help="number of hint points (clusters)"),
    metric: str = typer.Option("cka", help="layer similarity: cka (linear CKA) | cca (R²_CCA) | rbf_cka | svcca | pwcca …"),
    rule: str = typer.Option("centroid", help="hint point of a cluster: centroid (the authors' centre layer) "
                             "| centre (nearest the mean index) | medoid | last"),
    algorithm: str = typer.Option("pursuhint", help="layer clustering: pursuhint (the authors' layer "
                                  "centroids) | profiles (k-means on 1−S rows) | kmedoids"),
    n: int = typer.Option(10_000, "--n", help="training samples for the layer representations (PURSUhInT: 10,000)"),
    form: str = typer.Option("post", help="post | pre (activation taps)"),
    dataset: str = typer.Option(
        None, help="dataset: a catalog name, folder:DIR or python:pkg.module:make (default: the teacher run's; "
        "required with --weights)"
    ),
    root: str = typer.Option(None, help="dataset root (default: the teacher run's)"),
    teacher_model: str = typer.Option(
        None, "--teacher-model", help="teacher model reference (zoo name, torchvision:NAME, timm:NAME, "
        "pkg.module:Class): the architecture of a bare checkpoint file, or with --weights a model trained outside kdlens"
    ),
    weights: str = typer.Option(
        None, "--weights", help="weights file of a teacher trained outside kdlens (with --teacher-model REF; "
        "needs --dataset and --out)"
    ),
    checkpoint: str = typer.Option("last", help="which checkpoint of a run: last | best"),
    seed: int = typer.Option(0, help="seed of the sample of training examples"),
    batch_size: int = typer.Option(250, "--batch-size"),
    blas_threads: int = typer.Option(1, "--blas-threads", help="BLAS threads for the similarity step"),
    torch_threads: int = typer.Option(
        None, "--torch-threads", help="torch intra-op threads for the teacher's forward passes (1 is fastest on a busy CPU)"
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    out: str = typer.Option(
        None, help="output folder (default: TEACHER_RUN/hints, or next to a checkpoint file; required with --weights)"
    ),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Find informative hint points by clustering the teacher's layers (PURSUhInT).

    The teacher is a run directory or checkpoint file (--teacher), or a model trained outside
    kdlens (--teacher-model REF --weights PATH, with --dataset and --out).  --dataset takes a
    catalog name or a dataset reference (folder:DIR, python:pkg.module:make); of a large
    (streamed) dataset only the --n sampled examples are read.

    Prints the clusters and hint points next to the conventional ones and writes
    hints.json and hints.png to --out.  Representations are cached under --out/cache.
    """
    from kdlens.errors import KdlensError, unknown_name
    from kdlens.explain.hint_search import check_search_options, dataset_prepare, find_hint_points, sample_indices
    from kdlens.explain.inputs import (
        check_model_options,
        is_streamed,
        load_explained_model,
        open_data,
        rows_in_memory,
        sample_key,
    )
    from kdlens.explain.representations import candidate_layers
    from kdlens.store import RunDir
    from kdlens.train.teacher import resolve_checkpoint
    from kdlens.train.trainer import resolve_device

    # ---- everything is checked before any work or any file is written
    check_search_options(metric, rule, form)
    if checkpoint not in ("last", "best"):
        raise unknown_name("checkpoint", checkpoint, ["last", "best"])
    if torch_threads is not None and torch_threads < 1:
        raise KdlensError(f"--torch-threads must be ≥ 1; got {torch_threads}")
    if n < 1:
        raise KdlensError(f"--n must be a positive number of samples; got {n}")
    check_model_options([teacher] if teacher else [], teacher_model, weights, allow_both=False,
                        dataset=dataset, out=out)
    ckpt = run_dir = None
    if weights is None:
        ckpt, _, _ = resolve_checkpoint(teacher, checkpoint)  # missing teacher → error here
        run_dir = RunDir(teacher) if Path(teacher).is_dir() else None
    run_cfg = run_dir.read_config() if run_dir is not None else {}
    if dataset is None and run_cfg.get("data", {}).get("name") is None:
        raise KdlensError(f"teacher {teacher!r} is a checkpoint file: give --dataset (and --teacher-model)")
    data = open_data(dataset, root, run_cfg)
    name = data.name
    train = data.split("train")
    pool = None
    if run_dir is not None and name == run_cfg.get("data", {}).get("name"):
        split = run_dir.path / "splits" / "train.npy"
        if split.exists():
            pool = run_dir.load_split("train")  # the examples the teacher was trained on
    loaded = load_explained_model(teacher, train, teacher_model, weights, which=checkpoint)
    model = loaded.model.to(resolve_device(device))
    layers = candidate_layers(model, form)
    if not 1 <= k <= len(layers):
        raise KdlensError(
            f"--k {k}: {loaded.name} has {len(layers)} candidate layers; use 1 ≤ k ≤ {len(layers)} (PURSUhInT: k = 3)"
        )
    if out is not None:
        out_dir = Path(out)
    else:
        out_dir = run_dir.path / "hints" if run_dir is not None else ckpt.parent / "hints"
    if is_streamed(train):  # a streamed split (large folder, a user's Dataset): decode only the sampled examples
        rows = sample_indices(len(train) if pool is None else pool, n, seed)
        data_key = sample_key(train, data.fingerprint, rows)
        train, pool = rows_in_memory(train, rows), None
    else:
        data_key = sample_key(train, data.fingerprint)

    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    result = find_hint_points(
        model, train.images, dataset_prepare(train), k=k, metric=metric, rule=rule, form=form, n=n, algorithm=algorithm,
        seed=seed, cache_dir=out_dir / "cache", blas_threads=blas_threads, pool=pool,
        data_key=data_key, batch_size=batch_size, progress=not quiet,
    )
    result.extra["teacher"] = {"ref": teacher, "model": loaded.name, "checkpoint": str(loaded.checkpoint),
                               **({"weights": str(weights)} if weights is not None else {})}
    paths = result.save(out_dir, title=f"{loaded.name} on {name}: {metric} ({form}), k={k}, {result.rule}")

    console = Console()
    table = Table("cluster", "members (1-based)", "size", "hint", "layer", "conventional", "conv. layer",
                  title=f"PURSUhInT hint points of {loaded.name} ({metric}, {form}-activation, rule {result.rule}, N={result.n})")
    for row in result.table_rows():
        table.add_row(
            str(row["cluster"]), row["members"], str(row["size"]), str(row["hint"]), row["layer"],
            "" if row["conventional"] is None else str(row["conventional"]), row["conventional_layer"] or "",
        )
    console.print(table)
    t = result.timings
    console.print(
        f"hint points {', '.join(map(str, result.selection.indices_1based))} "
        f"(conventional {', '.join(str(i + 1) for i in result.conventional) or '—'}); "
        f"step 1 (representations, cache {result.cache}) {t['step1_representations']:.1f} s, "
        f"step 2 (similarity + clustering) {t['step2']:.2f} s",
        highlight=False,
    )
    console.print(f"wrote {paths['json']} and {paths['png']}", highlight=False)
