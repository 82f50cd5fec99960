"""``kdlens embed``: embed a trained model's activations at points A–E, with metrics and plots;
``kdlens embed toy``: the Fig. 1 quadrant toy (t-SNE vs Ivis: is the global layout kept?).

Everything the user gave is checked before any work (method and its parameters, points,
--images, run directories and their checkpoints, the dataset against the runs', points present
in the model); a mistake prints one message and exits 2 with nothing written.  The result is an
analysis in the run store (``--out``, default ``runs``): ``STORE/embed-METHOD-RUN-HASH/``.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import time
from pathlib import Path
from typing import Any

import typer

from kdlens.cli.errors import user_errors_exit_2
from kdlens.cli.explain_options import (
    ALLOW_MISMATCH_HELP,
    DEFAULT_STORE,
    RESTART_HELP,
    STORE_HELP,
    refuse_renamed,
    renamed_option,
)
from kdlens.cli.options import THREADS_HELP
from kdlens.errors import KdlensError

OPTIONAL_MODULES = {"tsne": ("openTSNE", "kdlens[embed]"), "umap": ("umap", "kdlens[umap]")}
METRIC_COLUMNS = ("trustworthiness", "continuity", "knn_preservation", "knn_accuracy", "distance_spearman",
                  "class_area_ratio", "ivis_loss", "ivis_epochs", "seconds")


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["epochs=50", "k=30"]`` → ``{"epochs": 50, "k": 30}`` (values read as YAML scalars)."""
    import yaml

    params: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise KdlensError(f"--param must look like key=value (e.g. --param epochs=50); got {item!r}")
        key, value = item.split("=", 1)
        params[key.strip()] = yaml.safe_load(value)
    return params


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    from kdlens.store import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    atomic_write_text(path, buf.getvalue())


@user_errors_exit_2
def embed(
    ctx: typer.Context,
    run: list[str] = typer.Option(
        None, "--run", help="run directory (repeat for side-by-side, e.g. undistilled then distilled)"
    ),
    teacher_model: str = typer.Option(
        None, "--teacher-model", "--model", help="model reference of a model trained outside kdlens (zoo name, "
        "torchvision:NAME, timm:NAME, pkg.module:Class), with --weights; shown beside any --run"
    ),
    weights: str = typer.Option(
        None, "--weights", help="weights file of that model (with --teacher-model REF; without --run it needs "
        "--dataset)"
    ),
    points: str = typer.Option("A,B,C,D,E", help="extraction points, e.g. A,B,C,D,E"),
    method: str = typer.Option("ivis", help="ivis | tsne | umap | pca"),
    images: int = typer.Option(2000, "--images", help="test images to embed (seeded random subset; all of the "
                               "test split when it has fewer)"),
    pool: bool = typer.Option(False, "--pool/--flatten", help="spatial mean pooling of conv activations, or flatten (paper)"),
    out: str = typer.Option(DEFAULT_STORE, help=STORE_HELP),
    seed: int = typer.Option(0, help="seed of the subset and of the embedding"),
    param: list[str] = typer.Option(None, "--param", help="method parameter key=value, repeatable (e.g. epochs=100)"),
    neighbours: int = typer.Option(10, "--neighbours", help="neighbours for trustworthiness / continuity / kNN "
                                   "preservation"),
    mass: float = typer.Option(0.9, help="probability mass of the class regions (class-area ratio)"),
    density_class: str = typer.Option(
        None, "--density-class", help="also draw this class's density (KDE and its --mass region against that of "
        "all points; Lee & Wallraven Fig. 7) at every point: a class name or index of the dataset; writes "
        "RUN/density_METHOD.png (one panel per point) and density_class.csv"
    ),
    dataset: str = typer.Option(
        None, help="dataset: a catalog name, folder:DIR or python:pkg.module:make (default: the runs'; "
        "required without --run)"
    ),
    root: str = typer.Option(None, help="dataset root (default: the run's)"),
    allow_dataset_mismatch: bool = typer.Option(False, "--allow-dataset-mismatch", help=ALLOW_MISMATCH_HELP),
    device: str = typer.Option("cpu", help="device for the model forward passes"),
    threads: int = typer.Option(None, "--threads", help=THREADS_HELP),
    restart: bool = typer.Option(False, "--restart", help=RESTART_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress lines (notes about the input still show)"),
    old_k: str = renamed_option("--k", "--neighbours"),
    old_n: str = renamed_option("--n", "--images"),
) -> None:
    """Embed activations at extraction points A–E (Lee & Wallraven 2021): npz, metrics CSV, plots.

    Models: run directories (--run) and/or a model trained outside kdlens (--teacher-model REF
    --weights PATH).  Of a large (streamed) dataset only the --images sampled test images are
    read.  Writes to STORE/embed-METHOD-RUN-HASH/, recorded in the run store (--out).
    `kdlens embed toy` embeds the Fig. 1 quadrant toy instead (no model).
    """
    if ctx.invoked_subcommand is not None:
        return  # `kdlens embed toy …`: the subcommand does the work
    import numpy as np

    from kdlens.distill.cache import weights_hash
    from kdlens.explain.embed import (
        class_area_ratios,
        embedding_quality,
        make_embedder,
        parse_points,
        point_activations,
        select_points,
        superclass_correlation,
        superclass_groups,
    )
    from kdlens.explain.embed.methods import EMBEDDERS
    from kdlens.explain.embed.points import subsample
    from kdlens.explain.inputs import (
        check_model_options,
        choose_dataset,
        example_batch,
        is_streamed,
        load_explained_model,
        open_data,
        rows_in_memory,
        run_analysis,
    )
    from kdlens.store import RunDir, atomic_write_bytes
    from kdlens.store.analysis import check_store, distinct_names
    from kdlens.train.teacher import resolve_checkpoint
    from kdlens.train.threads import choose_threads, set_threads

    say = (lambda *a: None) if quiet else typer.echo
    # ---- validate everything first
    refuse_renamed({"--k": (old_k, "--neighbours", "neighbours of the embedding metrics; --k meant clusters in "
                            "kdlens hints"),
                    "--n": (old_n, "--images", "test images to embed; --n meant training samples in kdlens hints")})
    EMBEDDERS.get(method)
    if method in OPTIONAL_MODULES and importlib.util.find_spec(OPTIONAL_MODULES[method][0]) is None:
        mod, extra = OPTIONAL_MODULES[method]
        raise KdlensError(f"method {method!r} needs the optional package {mod}: pip install '{extra}'")
    params = {"seed": seed, **parse_params(param)}
    make_embedder(method, **params)  # unknown parameters fail here
    wanted = parse_points(points)
    if images < 10:
        raise KdlensError(f"--images must be at least 10 test images; got {images}")
    if not 0 < mass < 1:
        raise KdlensError(f"--mass must be in (0, 1); got {mass}")
    _check_neighbours(neighbours, images)
    choose_threads(threads)  # --threads < 1 → error here
    run = list(run or [])
    if teacher_model is not None and weights is None and run:
        raise KdlensError(f"--teacher-model {teacher_model!r} needs --weights PATH (a run directory names its own "
                          "architecture)")
    check_model_options(run, teacher_model, weights, ref_flag="--run", ref_forms="a run directory", dataset=dataset)
    store = check_store(out)
    configs = []
    for r in run:
        if not (Path(r) / "config.yaml").is_file():
            raise KdlensError(f"--run {r}: no such run directory (a run directory holds config.yaml and checkpoints/last.pt)")
        resolve_checkpoint(r)
        configs.append(RunDir(Path(r)).read_config())
    name, own = choose_dataset(run, dataset, allow_dataset_mismatch, ref_flag="--run")
    data = open_data(name, root, own or (configs[0] if configs else None))
    split = data.split("test")
    if images > len(split):
        typer.echo(f"note: --images {images}, but the test split of {name} has {len(split)} images: embedding all "
                   f"{len(split)}")
    count = min(images, len(split))
    _check_neighbours(neighbours, count)
    density = None if density_class is None else resolve_class(density_class, list(split.classes))
    models = {}
    sources = [(r, None) for r in run] + ([(None, weights)] if weights is not None else [])
    names = distinct_names([r if r is not None else w for r, w in sources], "run")
    for label, (r, w) in zip(names, sources, strict=True):
        model = load_explained_model(r, split, teacher_model if w is not None else None, w).model
        select_points(model, wanted, example_batch(split, 1))
        models[label] = model
    # a streamed split (large folder, a user's Dataset): decode only the sampled test images
    sample = subsample(split.labels, count, seed) if is_streamed(split) else None
    test = rows_in_memory(split, sample) if sample is not None else split
    try:
        groups = superclass_groups(test)
    except KdlensError:
        groups = None

    identity = {
        "models": [[label, weights_hash(m)] for label, m in models.items()],
        "data": {"name": name, "split": "test", "fingerprint": data.fingerprint, "classes": list(split.classes)},
        "points": wanted, "method": method, "params": params, "images": count, "pool": pool, "seed": seed,
        "neighbours": neighbours, "mass": mass, **({"density_class": density} if density is not None else {}),
    }
    first = configs[0].get("model", {}).get("name") if configs else teacher_model
    resolved = {
        "runs": run, "teacher_model": teacher_model, "weights": weights, "model": {"name": first},
        "data": {"name": name, "root": root}, "allow_dataset_mismatch": allow_dataset_mismatch, "points": wanted,
        "method": method, "params": params, "images": images, "pool": pool, "seed": seed, "neighbours": neighbours,
        "mass": mass, "density_class": density_class, "device": device, "threads": threads, "out": str(out),
    }

    # ---- work
    def body(out_dir: Path) -> dict:
        set_threads(threads, log=not quiet)
        rows, area_rows, sc_rows = [], [], []
        embeddings: dict[str, dict[str, np.ndarray]] = {}
        labels = None
        for label, model in models.items():
            t0 = time.perf_counter()
            acts = point_activations(model, test, points=[*wanted, *(["E"] if "E" not in wanted else [])],
                                     n=count if sample is None else None,
                                     reduce="mean" if pool else "flatten", device=device, seed=seed)
            labels = acts.labels
            say(f"{label}: activations of {len(acts.indices)} test images in {time.perf_counter() - t0:.1f} s")
            embeddings[label] = {}
            indices = acts.indices if sample is None else sample[acts.indices]  # rows of the test split
            buf: dict[str, np.ndarray] = {"labels": acts.labels, "indices": indices}
            for p in wanted:
                x = acts.features[p]
                t0 = time.perf_counter()
                est = make_embedder(method, **params)
                emb = est.fit_transform(x)
                secs = time.perf_counter() - t0
                embeddings[label][p] = emb
                buf[p] = emb
                q = embedding_quality(x, emb, labels=acts.labels, k=neighbours, seed=seed)
                areas = class_area_ratios(emb, acts.labels, mass=mass) if emb.shape[1] == 2 else None
                loss = getattr(est, "loss_", None)
                rows.append([label, p, acts.layers[p], x.shape[1], method, q["trustworthiness"], q["continuity"],
                             q["knn_preservation"], q["knn_accuracy"], q["distance_spearman"],
                             None if areas is None else areas.mean, loss, getattr(est, "n_epochs_", None), secs])
                if areas is not None:
                    area_rows += [[label, p, int(c), float(rv)] for c, rv in zip(areas.classes, areas.ratios, strict=True)]
                say(f"  {p} ({acts.layers[p]}, {x.shape[1]} features): {method} {secs:.1f} s, "
                    f"T={q['trustworthiness']:.3f}, kNN-pres={q['knn_preservation']:.3f}"
                    + ("" if areas is None else f", class-area={areas.mean:.3f}")
                    + ("" if loss is None else f", ivis loss={loss:.4f}"))
            bio = io.BytesIO()
            np.savez(bio, **buf)
            atomic_write_bytes(out_dir / label / "embeddings.npz", bio.getvalue())
            if groups is not None:
                sc = superclass_correlation(acts.features["E"], groups)
                sc_rows.append([label, sc.within, sc.between, *sc.per_group.values()])

        header = ["run", "point", "layer", "features", "method", *METRIC_COLUMNS]
        _write_csv(out_dir / "metrics.csv", header, rows)
        if area_rows:
            _write_csv(out_dir / "class_areas.csv", ["run", "point", "class", "ratio"], area_rows)
        if sc_rows and groups is not None:
            _write_csv(out_dir / "superclass.csv", ["run", "within_r2", "between_r2", *groups], sc_rows)
        _figures(out_dir, method, embeddings, labels, test.classes, rows, area_rows)
        if density is not None:
            _density_figures(out_dir, method, embeddings, labels, density, list(test.classes), mass)
        return {"dataset": name, "method": method, "points": wanted, "runs": list(models), "images": count}

    outcome = run_analysis("embed", [r if r is not None else w for r, w in sources], identity, resolved, store, body,
                           command=method, restart=restart, log=typer.echo)
    if not outcome.skipped:
        say(f"wrote {outcome.path}/metrics.csv, embeddings and plots")


def _check_neighbours(k: int, n: int) -> None:
    if k < 1 or k >= n / 2:
        raise KdlensError(f"--neighbours must be in 1..{(n - 1) // 2} for {n} images; got {k}")


def _figures(out_dir: Path, method: str, embeddings: dict, labels: Any, classes: list[str],
             rows: list[list[Any]], area_rows: list[list[Any]]) -> None:
    from kdlens.figures.embed import plot_class_area_boxplots, plot_embedding_grid, plot_ivis_loss

    if all(e.shape[1] >= 2 for per in embeddings.values() for e in per.values()):
        titles = {r[0]: {} for r in rows}
        for r in rows:
            titles[r[0]][r[1]] = f"{r[1]}: {r[2]}"
        plot_embedding_grid(embeddings, labels, classes, titles=titles, path=out_dir / f"scatter_{method}.png")
    if area_rows:
        ratios: dict[str, dict[str, list[float]]] = {}
        for run, point, _, ratio in area_rows:
            ratios.setdefault(run, {}).setdefault(point, []).append(ratio)
        plot_class_area_boxplots(ratios, path=out_dir / f"class_area_{method}.png")
    if method == "ivis":
        losses = {r[0]: {} for r in rows}
        for r in rows:
            losses[r[0]][r[1]] = r[11]
        plot_ivis_loss(losses, path=out_dir / "ivis_loss.png")


def resolve_class(value: str, classes: list[str]) -> int:
    """``--density-class``: a class name of the dataset (exact, then ignoring case) or its index."""
    from kdlens.errors import close_matches

    names = [str(c) for c in classes]
    if value in names:
        return names.index(value)
    if value.strip().lstrip("-").isdigit():
        index = int(value)
        if 0 <= index < len(names):
            return index
    folded = [n.casefold() for n in names]
    if value.casefold() in folded:
        return folded.index(value.casefold())
    hint = close_matches(value, names)
    listed = ", ".join(f"{i} {n!r}" for i, n in enumerate(names))
    raise KdlensError(f"--density-class {value!r} is no class of this dataset"
                      + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                      + f"; give a name or an index 0..{len(names) - 1}: {listed}")


def _density_figures(out_dir: Path, method: str, embeddings: dict, labels: Any, cls: int, classes: list[str],
                     mass: float) -> None:
    """Fig. 7 for ``--density-class``: per run, one panel per point with the class's density and
    its ``mass`` region against that of all points; the numbers in ``density_class.csv``."""
    import numpy as np

    from kdlens.explain.embed import class_density
    from kdlens.figures.embed import plot_class_density_panels

    name = str(classes[cls]) if cls < len(classes) else str(cls)
    shown = f"class {name}" if name.isdigit() else name
    count = int((np.asarray(labels) == cls).sum())
    rows: list[list[Any]] = []
    for run, per_point in embeddings.items():
        panels = {}
        for point, emb in per_point.items():
            if emb.shape[1] != 2:
                rows.append([run, point, cls, name, count, None, f"{emb.shape[1]}-D embedding: no 2-D density"])
                continue
            try:
                dens = class_density(emb, labels, cls, mass=mass)
            except KdlensError as exc:  # too few (or collinear) points of the class in the subset
                rows.append([run, point, cls, name, count, None, str(exc)])
                continue
            panels[f"point {point}: {shown}"] = (emb, dens)
            rows.append([run, point, cls, name, count, dens.ratio, ""])
        if panels:
            plot_class_density_panels(panels, labels=labels, title=f"{run}: density of {shown} ({method})",
                                      path=out_dir / run / f"density_{method}.png")
    _write_csv(out_dir / "density_class.csv", ["run", "point", "class", "class_name", "points", "area_ratio", "note"],
               rows)


@user_errors_exit_2
def toy(
    samples: int = typer.Option(1000, "--samples", help="points of uniform noise on [-1, 1]^2 (at least 20); "
                                "the paper's scale: --samples 2000 --perplexity 150"),
    methods: str = typer.Option("tsne,ivis", "--methods", help="embedding methods, comma-separated: tsne, ivis, "
                                "umap, pca (each panel beside the original plane)"),
    perplexity: float = typer.Option(
        30.0, "--perplexity", help="t-SNE perplexity. t-SNE takes the 3·perplexity nearest neighbours of every "
        "point, so it needs more than 3·perplexity points: the default 30 (openTSNE's) works from about 100 "
        "points; the paper's Fig. 1 used 150 (needs more than 450 points)"),
    ivis_k: int = typer.Option(30, "--ivis-k", help="Ivis neighbours per point (Ivis's own default 150 needs "
                               "thousands of points; 30 keeps a toy of a few hundred points local)"),
    param: list[str] = typer.Option(None, "--param", help="method parameter METHOD.KEY=VALUE, repeatable (e.g. "
                                    "ivis.epochs=100, tsne.n_iter=300)"),
    seed: int = typer.Option(0, help="seed of the noise and of the embeddings"),
    out: str = typer.Option(DEFAULT_STORE, help=STORE_HELP),
    threads: int = typer.Option(None, "--threads", help=THREADS_HELP),
    restart: bool = typer.Option(False, "--restart", help=RESTART_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Fig. 1 of Lee & Wallraven 2021: 2-D uniform noise coloured by quadrant, mapped to 15-D, embedded back into 2-D by t-SNE and Ivis — is the quadrants' global layout kept?

    Writes toy.png (plane + each embedding), toy_distances.png (distance correlations), toy_scores.json / .csv (global_structure = Spearman ρ of pairwise distances, centroid_correlation, layout_preserved) and toy_embeddings.npz to STORE/embed-toy-quadrants-nN-HASH/ (--out).
    """  # noqa: E501  (one line per paragraph: the help text is reflowed, not the source's line breaks)
    from kdlens.explain.inputs import run_analysis
    from kdlens.store.analysis import check_store
    from kdlens.studies.papers.embedding_toy import check_toy_settings, toy_method_params, write_toy_check
    from kdlens.train.progress import TrainingProgress
    from kdlens.train.threads import choose_threads, set_threads

    # ---- validate everything first
    names = [m.strip() for m in methods.split(",") if m.strip()]
    if len(set(names)) != len(names):
        raise KdlensError(f"--methods names a method twice: {methods!r}")
    for m in names:
        if m in OPTIONAL_MODULES and importlib.util.find_spec(OPTIONAL_MODULES[m][0]) is None:
            mod, extra = OPTIONAL_MODULES[m]
            raise KdlensError(f"method {m!r} needs the optional package {mod}: pip install '{extra}'")
    extra_params: dict[str, dict[str, Any]] = {}
    for key, value in parse_params(param).items():
        if "." not in key:
            raise KdlensError(f"--param must name its method: METHOD.KEY=VALUE (e.g. ivis.epochs=100); got {key!r}")
        m, k = key.split(".", 1)
        extra_params.setdefault(m, {})[k] = value
    if "ivis" in names:
        extra_params["ivis"] = {"k": ivis_k, **extra_params.get("ivis", {})}
    method_params = toy_method_params(names, perplexity, extra_params, seed)
    for m in set(extra_params) - set(names):
        method_params[m] = extra_params[m]  # named for a method not run: check_toy_settings says so
    check_toy_settings(samples, names, method_params)
    choose_threads(threads)
    store = check_store(out)
    identity = {"toy": "quadrants", "n": samples, "seed": seed, "methods": names, "params": method_params}
    resolved = {**identity, "perplexity": perplexity, "ivis_k": ivis_k, "threads": threads, "out": str(out)}

    # ---- work
    def body(out_dir: Path) -> dict:
        set_threads(threads, log=not quiet)
        with TrainingProgress("embed toy", len(names), enabled=not quiet, phase=names[0]) as bar:
            def on_method(method: str, when: str) -> None:
                if when == "start":
                    bar.phase(method)
                else:
                    bar.advance(1)

            return write_toy_check(out_dir, n=samples, seed=seed, methods=names, method_params=method_params,
                                   on_method=on_method)

    outcome = run_analysis("embed", [f"quadrants-n{samples}"], identity, resolved, store, body, command="toy",
                           restart=restart, log=typer.echo)
    if not outcome.skipped:
        scores = outcome.metrics or {}
        for m in names:
            if f"{m}/global_structure" in scores:
                kept = "kept" if scores[f"{m}/layout_preserved"] else "lost"
                typer.echo(f"{m}: global structure ρ = {scores[f'{m}/global_structure']:.3f}, centroid r = "
                           f"{scores[f'{m}/centroid_correlation']:.3f}, layout {kept}")
        typer.echo(f"wrote {outcome.path}/toy.png, toy_distances.png, toy_scores.json/.csv")


embed_app = typer.Typer()  # `kdlens embed [OPTIONS]` as before (the callback), `kdlens embed toy` beside it
embed_app.callback(invoke_without_command=True)(embed)
embed_app.command("toy")(toy)
