"""Lee & Wallraven 2021 (*Visualizing the embedding space to explain the effect of knowledge
distillation*) as a study step.

``embedding`` (needs the undistilled ``ud`` and distilled ``d`` students of one label budget
and fold, e.g. ``each: [data.budget, data.fold]``): activations of both models at the
extraction points A–E on a seeded subset of the test set
(:func:`kdlens.explain.embed.point_activations`), each embedded in 2-D by every method in
``methods`` (Ivis by default, t-SNE optional), with

* the embedding quality (trustworthiness, continuity, kNN preservation, kNN accuracy);
* the converged Ivis loss ``loss_`` (Table 2);
* the class-area ratio per class (Gaussian KDE, 90 % highest-density region; Figs. 7–8);
* the output correlation within superclasses at E (Fig. 5; Fashion-MNIST / CIFAR-100 groups,
  or ``superclasses: {name: [classes…]}`` in the params).

Files: ``metrics.csv`` (model, point, method, …), ``class_areas.csv``, ``superclass.csv``,
``embeddings.npz``, ``scatter_METHOD.png`` (UD row over D row, one column per point),
``class_area_METHOD.png``, ``density_METHOD.png`` (one class at the last conv point, UD vs D
side by side) and ``ivis_loss.png``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from kdlens.studies.papers import StepContext, load_run_model, register_step, run_dataset

PARAMS = ("models", "methods", "points", "n", "reduce", "seed", "mass", "k", "method_params", "superclasses",
          "density_class")


@register_step("embedding")
def embedding_step(ctx: StepContext) -> dict[str, Any]:
    """UD vs D embedded at A–E (Ivis / t-SNE): quality, Ivis loss, class-area ratio, superclass r²; needs ud, d."""
    from kdlens.explain.embed import (
        class_area_ratios,
        embedding_quality,
        make_embedder,
        point_activations,
        superclass_correlation,
        superclass_groups,
        superclass_owner,
    )
    from kdlens.figures.embed import (
        plot_class_area_boxplots,
        plot_embedding_grid,
        plot_ivis_loss,
    )
    from kdlens.store import atomic_write_bytes

    ctx.check_params(PARAMS)
    roles: dict[str, str] = ctx.param("models", {"UD": "ud", "D": "d"})
    methods = list(ctx.param("methods", ["ivis"]))
    points = ctx.param("points", "A,B,C,D,E")
    n = int(ctx.param("n", 1000))
    seed = int(ctx.param("seed", 0))
    mass = float(ctx.param("mass", 0.9))
    k = int(ctx.param("k", 10))
    method_params: dict[str, dict[str, Any]] = ctx.param("method_params", {}) or {}
    first = ctx.need(next(iter(roles.values())))
    test = run_dataset(first, "test")
    groups = ctx.param("superclasses")
    if groups is None:
        try:
            groups = superclass_groups(test)
        except Exception:
            groups = None
    if groups:
        superclass_owner(groups, test.num_classes)  # a bad grouping fails before the embeddings, not after
    rows: list[dict[str, Any]] = []
    area_rows: list[dict[str, Any]] = []
    sc_rows: list[dict[str, Any]] = []
    emb: dict[str, dict[str, dict[str, np.ndarray]]] = {m: {} for m in methods}
    layers: dict[str, dict[str, str]] = {}
    labels = None
    arrays: dict[str, np.ndarray] = {}
    for role, group in roles.items():
        dep = ctx.need(group)
        model = load_run_model(dep, test)
        acts = point_activations(model, test, points=points, n=n, reduce=ctx.param("reduce", "flatten"), seed=seed)
        labels = acts.labels
        arrays["labels"] = acts.labels
        layers[role] = acts.layers
        for method in methods:
            emb[method][role] = {}
            for point, x in acts.features.items():
                est = make_embedder(method, seed=seed, **method_params.get(method, {}))
                y = est.fit_transform(x)
                emb[method][role][point] = y
                arrays[f"{method}/{role}/{point}"] = y
                q = embedding_quality(x, y, labels=acts.labels, k=min(k, max(1, len(y) // 2 - 1)), seed=seed)
                areas = class_area_ratios(y, acts.labels, mass=mass)
                rows.append({"model": role, "run": dep.id, "point": point, "layer": acts.layers[point],
                             "features": int(x.shape[1]), "method": method, **q,
                             "class_area_ratio": float(areas.mean),
                             "ivis_loss": getattr(est, "loss_", None), "ivis_epochs": getattr(est, "n_epochs_", None)})
                area_rows += [{"model": role, "point": point, "method": method, "class": int(c), "ratio": float(r)}
                              for c, r in zip(areas.classes, areas.ratios, strict=True)]
        if groups:
            logits = _logits(model, test, acts.indices)
            sc = superclass_correlation(logits, groups)
            sc_rows.append({"model": role, "run": dep.id, "within_r2": sc.within, "between_r2": sc.between,
                            **{f"r2_{g}": v for g, v in sc.per_group.items()}})
    ctx.write_csv("metrics.csv", rows)
    ctx.write_csv("class_areas.csv", area_rows)
    if sc_rows:
        ctx.write_csv("superclass.csv", sc_rows)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k.replace("/", "__"): v for k, v in arrays.items()})
    atomic_write_bytes(ctx.out_dir / "embeddings.npz", buf.getvalue())
    classes = list(getattr(test, "classes", []) or []) or None
    for method in methods:
        titles = {role: {p: f"{p}: {layers[role][p]}" for p in emb[method][role]} for role in emb[method]}
        ctx.save_figure(f"scatter_{method}.png", plot_embedding_grid(emb[method], labels, classes, titles=titles,
                                                                     point_size=2.0))
        ratios = {role: {p: [r["ratio"] for r in area_rows if r["model"] == role and r["point"] == p
                             and r["method"] == method] for p in emb[method][role]} for role in emb[method]}
        ctx.save_figure(f"class_area_{method}.png", plot_class_area_boxplots(
            ratios, title=f"Class-area ratio per extraction point ({method})"))
        cls = int(ctx.param("density_class", 0))
        conv_points = [p for p in "ABC" if p in next(iter(emb[method].values()))] or list(next(iter(emb[method].values())))
        point = conv_points[-1]
        fig = _density_pair({role: emb[method][role][point] for role in emb[method]}, labels, cls, mass,
                            classes[cls] if classes else None, point)
        ctx.save_figure(f"density_{method}.png", fig)
    if "ivis" in methods:
        losses = {role: {r["point"]: r["ivis_loss"] for r in rows if r["model"] == role and r["method"] == "ivis"}
                  for role in roles}
        ctx.save_figure("ivis_loss.png", plot_ivis_loss(losses))
    summary: dict[str, Any] = {"n": int(len(labels)) if labels is not None else 0, "methods": methods}
    for r in rows:
        summary[f"{r['method']}/{r['model']}/{r['point']}/class_area_ratio"] = r["class_area_ratio"]
        if r["ivis_loss"] is not None:
            summary[f"{r['method']}/{r['model']}/{r['point']}/ivis_loss"] = r["ivis_loss"]
    for r in sc_rows:
        summary[f"superclass/{r['model']}/within_r2"] = r["within_r2"]
    return summary


def _logits(model: Any, data: Any, indices: np.ndarray):
    import torch

    from kdlens.data import normalize

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(indices), 500):
            idx = torch.as_tensor(indices[start:start + 500])
            out.append(model(normalize(data.images[idx], data.mean, data.std)).float())
    return torch.cat(out).numpy()


def _density_pair(embeddings: dict[str, np.ndarray], labels: np.ndarray, cls: int, mass: float,
                  class_name: str | None, point: str) -> Any:
    """UD and D density figures (Fig. 7) side by side in one figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from kdlens.explain.embed import class_density
    from kdlens.figures.embed import plot_class_density

    panels = []
    for role, y in embeddings.items():
        f = plot_class_density(y, class_density(y, labels, cls, mass=mass), class_name=f"{role} {point}, {class_name or f'class {cls}'}")
        buf = io.BytesIO()
        f.savefig(buf, format="png", dpi=80)
        buf.seek(0)
        import matplotlib.image as mpimg

        panels.append(mpimg.imread(buf))
    fig = Figure(figsize=(4.2 * len(panels), 4.0), dpi=90)
    FigureCanvasAgg(fig)
    for i, img in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(img)
        ax.set_axis_off()
    fig.subplots_adjust(left=0, right=1, top=1, bottom=0, wspace=0.02)
    return fig


@register_step("limited-label")
def limited_label_step(ctx: StepContext) -> dict[str, Any]:
    """Teacher, UD and D per label budget and fold in one task (Lee & Wallraven Table 1).

    Calls :func:`kdlens.studies.limited_label.run_limited_label_study` (teacher, UD and D per budget and fold, recorded in the study's run store).  The grid form
    (``teacher`` / ``ud`` / ``d`` groups, as in ``examples/embedding.yaml``) runs the same runs as
    separate, parallel tasks; this step is the compact form.  Writes ``limited_label.csv``."""
    from kdlens.studies.limited_label import run_limited_label_study

    allowed = ("dataset", "budgets", "folds", "teacher", "student", "student_epochs", "unlabeled_limit",
               "temperature", "teacher_init", "labeled_epochs_override", "extra")
    ctx.check_params(allowed)
    params = dict(ctx.params)
    rows = run_limited_label_study(out=str(ctx.study_dir), progress=False, **params)
    ctx.write_csv("limited_label.csv", rows)
    return {"rows": len(rows), "budgets": sorted({r["budget"] for r in rows})}
