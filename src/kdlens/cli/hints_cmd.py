"""``kdlens hints``: PURSUhInT hint-point search on a trained teacher (Keser et al. 2022)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kdlens.cli.errors import user_errors_exit_2
from kdlens.cli.options import THREADS_HELP
from kdlens.cli.explain_options import (
    ALLOW_MISMATCH_HELP,
    DEFAULT_STORE,
    RESTART_HELP,
    STORE_HELP,
    refuse_renamed,
    renamed_option,
)


@user_errors_exit_2
def hints(
    teacher: str = typer.Option(
        None, help="teacher run directory or checkpoint file (or --teacher-model REF --weights PATH)"
    ),
    clusters: int = typer.Option(3, "--clusters", help="number of hint points: clusters of layers (PURSUhInT: 3)"),
    metric: str = typer.Option("cka", help="layer similarity: cka (linear CKA) | cca (R²_CCA) | rbf_cka | svcca | pwcca …"),
    rule: str = typer.Option("centroid", help="hint point of a cluster: centroid (the authors' centre layer) "
                             "| centre (nearest the mean index) | medoid | last"),
    algorithm: str = typer.Option("pursuhint", help="layer clustering: pursuhint (the authors' layer "
                                  "centroids) | profiles (k-means on 1−S rows) | kmedoids | uniform (PURSUhInT's "
                                  "baseline: k equal consecutive groups, their centres)"),
    precision: str = typer.Option("fp32", help="fp32 | bf16: the teacher's forward pass; bf16 is checked first on "
                                  "1,000 samples (similarities must move < 1e-3) and is fast only on CPUs with "
                                  "native bf16"),
    parallel: str = typer.Option("batches", help="batches (one single-threaded worker per thread, each on its own "
                                 "batches; CPU fp32 default) | intra-op (torch's threads inside each layer); same "
                                 "values"),
    samples: int = typer.Option(10_000, "--samples", help="training samples for the layer representations "
                                "(PURSUhInT: 10,000)"),
    form: str = typer.Option("post", help="post | pre (activation taps)"),
    dataset: str = typer.Option(
        None, help="dataset: a catalog name, folder:DIR or python:pkg.module:make (default: the teacher run's; "
        "required with a checkpoint file or --weights)"
    ),
    root: str = typer.Option(None, help="dataset root (default: the teacher run's)"),
    allow_dataset_mismatch: bool = typer.Option(False, "--allow-dataset-mismatch", help=ALLOW_MISMATCH_HELP),
    teacher_model: str = typer.Option(
        None, "--teacher-model", help="teacher model reference (zoo name, torchvision:NAME, timm:NAME, "
        "pkg.module:Class): the architecture of a bare checkpoint file, or with --weights a model trained outside kdlens"
    ),
    weights: str = typer.Option(
        None, "--weights", help="weights file of a teacher trained outside kdlens (with --teacher-model REF; "
        "needs --dataset)"
    ),
    checkpoint: str = typer.Option("last", help="which checkpoint of a run: last | best"),
    seed: int = typer.Option(0, help="seed of the sample of training examples"),
    batch_size: int = typer.Option(250, "--batch-size", help="examples per forward pass of the teacher"),
    blas_threads: int = typer.Option(1, "--blas-threads", help="BLAS threads for the similarity step"),
    threads: int = typer.Option(None, "--threads", help=THREADS_HELP),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    out: str = typer.Option(DEFAULT_STORE, help=STORE_HELP),
    restart: bool = typer.Option(False, "--restart", help=RESTART_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar or thread line"),
    old_k: str = renamed_option("--k", "--clusters"),
    old_n: str = renamed_option("--n", "--samples"),
    old_threads: str = renamed_option("--torch-threads", "--threads"),
) -> None:
    """Find informative hint points by clustering the teacher's layers (PURSUhInT).

    The teacher is a run directory or checkpoint file (--teacher), or a model trained outside
    kdlens (--teacher-model REF --weights PATH, with --dataset).  --dataset takes a catalog
    name or a dataset reference (folder:DIR, python:pkg.module:make); of a large (streamed)
    dataset only the --samples sampled examples are read.

    Prints the clusters and hint points next to the conventional ones and writes hints.json
    and hints.png to STORE/hints-TEACHER-HASH/, recorded in the run store (--out); a later
    `kdlens distill --hints auto` on the same teacher reuses it.  Representations are cached
    under STORE/cache/hint-search/reps (shared with distill).
    """
    from kdlens.distill.cache import weights_hash
    from kdlens.errors import KdlensError, unknown_name
    from kdlens.explain.hint_search import (
        PRECISIONS,
        STEP1_PARALLEL,
        HintSearchResult,
        check_search_options,
        dataset_prepare,
        find_hint_points,
        sample_indices,
    )
    from kdlens.explain.inputs import (
        check_model_options,
        choose_dataset,
        is_streamed,
        load_explained_model,
        open_data,
        rows_in_memory,
        run_analysis,
        sample_key,
    )
    from kdlens.explain.representations import candidate_layers, indices_sha256
    from kdlens.store import RunDir
    from kdlens.store.analysis import check_store
    from kdlens.train.teacher import resolve_checkpoint
    from kdlens.train.threads import choose_threads, set_threads
    from kdlens.train.trainer import resolve_device

    # ---- everything is checked before any work or any file is written
    refuse_renamed({"--k": (old_k, "--clusters", "number of hint points; --k meant neighbours in kdlens embed"),
                    "--n": (old_n, "--samples", "training samples; --n meant test images in kdlens embed"),
                    "--torch-threads": (old_threads, "--threads", "torch CPU threads, as in train and distill")})
    check_search_options(metric, rule, form)
    if checkpoint not in ("last", "best"):
        raise unknown_name("checkpoint", checkpoint, ["last", "best"])
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, list(PRECISIONS))
    if parallel not in STEP1_PARALLEL:
        raise unknown_name("parallel", parallel, list(STEP1_PARALLEL))
    choose_threads(threads)  # --threads < 1 → error here
    if samples < 1:
        raise KdlensError(f"--samples must be a positive number of training samples; got {samples}")
    if batch_size < 1:
        raise KdlensError(f"--batch-size must be ≥ 1; got {batch_size}")
    check_model_options([teacher] if teacher else [], teacher_model, weights, allow_both=False, dataset=dataset)
    store = check_store(out)
    run_dir = None
    if weights is None:
        resolve_checkpoint(teacher, checkpoint)  # missing teacher → error here
        run_dir = RunDir(teacher) if Path(teacher).is_dir() else None
    run_cfg = run_dir.read_config() if run_dir is not None else {}
    name, _ = choose_dataset([teacher] if weights is None else [], dataset, allow_dataset_mismatch)
    data = open_data(name, root, run_cfg)
    train = data.split("train")
    pool = None
    if run_dir is not None and name == run_cfg.get("data", {}).get("name"):
        split = run_dir.path / "splits" / "train.npy"
        if split.exists():
            pool = run_dir.load_split("train")  # the examples the teacher was trained on
    loaded = load_explained_model(teacher, train, teacher_model, weights, which=checkpoint)
    model = loaded.model.to(resolve_device(device))
    layers = candidate_layers(model, form)
    if not 1 <= clusters <= len(layers):
        raise KdlensError(f"--clusters {clusters}: {loaded.name} has {len(layers)} candidate layers; use "
                          f"1 ≤ k ≤ {len(layers)} (PURSUhInT: k = 3)")
    if is_streamed(train):  # a streamed split (large folder, a user's Dataset): decode only the sampled examples
        rows = sample_indices(len(train) if pool is None else pool, samples, seed)
        data_key = sample_key(train, data.fingerprint, rows)
        train, pool = rows_in_memory(train, rows), None
    else:
        data_key = sample_key(train, data.fingerprint)

    identity = {
        "teacher": {"model": loaded.name, "weights_sha256": weights_hash(loaded.model)},
        "data": data_key, "pool_sha256": None if pool is None else indices_sha256(pool),
        "clusters": clusters, "metric": metric, "rule": rule, "algorithm": algorithm, "samples": samples,
        "form": form, "seed": seed, **({"precision": precision} if precision != "fp32" else {}),
    }
    resolved = {
        "teacher": {"run": teacher, "model": teacher_model, "weights": weights, "checkpoint": checkpoint},
        "model": {"name": loaded.name}, "data": {"name": name, "root": root},
        "allow_dataset_mismatch": allow_dataset_mismatch, "clusters": clusters, "metric": metric, "rule": rule,
        "algorithm": algorithm, "samples": samples, "form": form, "seed": seed, "batch_size": batch_size,
        "blas_threads": blas_threads, "threads": threads, "device": device, "out": str(out),
        "precision": precision, "parallel": parallel,
    }
    title = f"{loaded.name} on {name}: {metric} ({form}), k={clusters}"

    def body(out_dir: Path) -> dict:
        set_threads(threads, log=not quiet)
        result = find_hint_points(
            model, train.images, dataset_prepare(train), k=clusters, metric=metric, rule=rule, form=form, n=samples,
            algorithm=algorithm, seed=seed, cache_dir=store / "cache" / "hint-search" / "reps",
            blas_threads=blas_threads, pool=pool, data_key=data_key, batch_size=batch_size, progress=not quiet,
            precision=precision, parallel=parallel,
        )
        result.extra["teacher"] = {"ref": teacher, "model": loaded.name, "checkpoint": str(loaded.checkpoint),
                                   **({"weights": str(weights)} if weights is not None else {})}
        result.save(out_dir, title=f"{title}, {result.rule}")
        return {"model": loaded.name, "dataset": name, "clusters": clusters, "metric": metric,
                "hint_layers": result.names, "hint_points": list(result.selection.indices_1based),
                "conventional": [i + 1 for i in result.conventional]}

    outcome = run_analysis("hints", [teacher or weights], identity, resolved, store, body, restart=restart,
                           log=typer.echo)
    result = HintSearchResult.load(outcome.path / "hints.json")
    _print_table(result, loaded.name, metric, form)
    if not outcome.skipped:
        t = result.timings
        Console().print(
            f"step 1 (representations, cache {result.cache}) {t['step1_representations']:.1f} s, "
            f"step 2 (similarity + clustering) {t['step2']:.2f} s", highlight=False,
        )
        Console().print(f"wrote {outcome.path / 'hints.json'} and {outcome.path / 'hints.png'}", highlight=False)


def _print_table(result, model_name: str, metric: str, form: str) -> None:
    console = Console()
    table = Table("cluster", "members (1-based)", "size", "hint", "layer", "conventional", "conv. layer",
                  title=f"PURSUhInT hint points of {model_name} ({metric}, {form}-activation, rule {result.rule}, "
                  f"N={result.n})")
    for row in result.table_rows():
        table.add_row(
            str(row["cluster"]), row["members"], str(row["size"]), str(row["hint"]), row["layer"],
            "" if row["conventional"] is None else str(row["conventional"]), row["conventional_layer"] or "",
        )
    console.print(table)
    console.print(
        f"hint points {', '.join(map(str, result.selection.indices_1based))} "
        f"(conventional {', '.join(str(i + 1) for i in result.conventional) or '—'})",
        highlight=False,
    )
