"""Lee & Wallraven 2021, Fig. 1 as files: the quadrant toy re-embedded by t-SNE and Ivis.

2-D uniform noise coloured by quadrant, mapped to 15-D (:mod:`kdlens.explain.embed.toy`), then
embedded back into 2-D by each method; does the embedding keep the global layout?
:func:`write_toy_check` writes into a directory:

* ``toy.png`` — the plane coloured by quadrant, then each method's embedding, with its scores;
* ``toy_distances.png`` — the distance correlations: pairwise distances in the plane vs in the
  embedding (Spearman ρ = ``global_structure``) and the quadrant-centroid distances (Pearson
  r = ``centroid_correlation``);
* ``toy_scores.json`` / ``toy_scores.csv`` — per method ``global_structure``,
  ``centroid_correlation``, ``layout_preserved`` (the diagonal quadrant pairs are the two most
  distant centroid pairs), ``seconds`` and the method's parameters;
* ``toy_embeddings.npz`` — ``xy``, ``quadrant`` and each method's embedding.

Used by ``kdlens embed toy`` (an analysis in the run store) and the study step ``embed-toy``
(the Fig. 1 section of the report; the demo runs it on a few hundred points).

t-SNE's perplexity: the paper used 150 (:data:`PAPER_PERPLEXITY`); t-SNE needs
3·perplexity < points (openTSNE's neighbour count), so a toy of a few hundred points takes
openTSNE's default 30 (:data:`DEFAULT_PERPLEXITY`).

Measured here (``kdlens embed toy --samples 2000 --perplexity 150``, seeds 0–2): t-SNE kept the
layout as well as Ivis — ρ 0.990–0.991 and centroid r 0.962–0.969 for t-SNE (PCA or random
initialisation), ρ 0.982–0.990 and r 0.962–0.996 for Ivis; at 300 points and perplexity 30
both kept it too (ρ 0.975 / 0.971).  The paper's contrast (t-SNE losing the global layout) did
not appear with openTSNE at these settings.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdlens.errors import KdlensError
from kdlens.studies.papers import StepContext, register_step, tidy_csv

PAPER_PERPLEXITY = 150.0
DEFAULT_PERPLEXITY = 30.0
#: Ivis settings for a toy of a few hundred to a few thousand points (Ivis's own k = 150 needs
#: many more points; the toy's 15 smooth dimensions converge in tens of epochs)
TOY_IVIS = {"k": 30, "epochs": 200, "patience": 10}
SCORE_COLUMNS = ("global_structure", "centroid_correlation", "layout_preserved")


def toy_method_params(methods: Sequence[str], perplexity: float, params: Mapping[str, Mapping[str, Any]] | None = None,
                      seed: int = 0) -> dict[str, dict[str, Any]]:
    """Each method's keyword arguments for the toy: t-SNE's ``perplexity``, :data:`TOY_IVIS`,
    then ``params[method]`` on top."""
    params = params or {}
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        base: dict[str, Any] = {"seed": seed}
        if m == "tsne":
            base["perplexity"] = float(perplexity)
        if m == "ivis":
            base.update(TOY_IVIS)
        out[m] = {**base, **dict(params.get(m, {}))}
    return out


def check_toy_settings(n: int, methods: Sequence[str], method_params: Mapping[str, Mapping[str, Any]]) -> None:
    """Every mistake before any work: too few points, unknown methods or parameters, a
    perplexity or Ivis k the points cannot carry."""
    from kdlens.explain.embed.methods import EMBEDDERS, make_embedder

    if n < 20:
        raise KdlensError(f"the toy needs at least 20 points (5 a quadrant on average); got {n}")
    if not methods:
        raise KdlensError("no embedding method given (e.g. tsne,ivis)")
    for m in methods:
        EMBEDDERS.get(m)  # unknown method: close matches
        make_embedder(m, **method_params.get(m, {}))  # unknown parameters fail here
    extra = set(method_params) - set(methods)
    if extra:
        raise KdlensError(f"parameters given for {sorted(extra)}, which are not among the methods {list(methods)}")
    perp = method_params.get("tsne", {}).get("perplexity")
    if "tsne" in methods and perp is not None and not 0 < 3 * float(perp) < n:
        raise KdlensError(f"t-SNE perplexity {perp} needs more than {int(3 * float(perp))} points (3·perplexity "
                          f"neighbours each); the toy has {n}: lower the perplexity (e.g. {max(1, (n - 1) // 3 // 2)}) "
                          "or use more points")
    k = method_params.get("ivis", {}).get("k")
    if "ivis" in methods and k is not None and not 1 <= float(k) < n:
        raise KdlensError(f"Ivis k = {k} neighbours needs more points than the toy's {n}: k must be in 1..{n - 1}")


def write_toy_check(out_dir: str | Path, n: int = 1000, seed: int = 0, methods: Sequence[str] = ("tsne", "ivis"),
                    method_params: Mapping[str, Mapping[str, Any]] | None = None,
                    on_method: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Embed the toy with each method and write the files listed in the module docstring.

    ``method_params``: method → keyword arguments (:func:`toy_method_params`); ``on_method(method,
    when)`` is called with ``"start"`` / ``"done"`` around each method (progress).  Returns the
    summary: ``{method/score: value}`` and ``n``.
    """
    from kdlens.explain.embed.methods import make_embedder
    from kdlens.explain.embed.toy import quadrant_toy, score_toy_embedding, toy_distance_panel
    from kdlens.figures.embed import plot_toy_check, plot_toy_distances
    from kdlens.store import atomic_write_bytes, atomic_write_text

    out_dir = Path(out_dir)
    method_params = {m: dict((method_params or {}).get(m, {"seed": seed})) for m in methods}
    check_toy_settings(n, methods, method_params)
    x15, xy, quadrant = quadrant_toy(n, seed)
    results, rows = {}, []
    for m in methods:
        if on_method:
            on_method(m, "start")
        t0 = time.perf_counter()
        emb = make_embedder(m, **method_params[m]).fit_transform(x15)
        seconds = time.perf_counter() - t0
        res = score_toy_embedding(m, emb, xy, quadrant, seed)
        results[m] = res
        rows.append({"method": m, "global_structure": res.global_structure,
                     "centroid_correlation": res.centroid_correlation, "layout_preserved": bool(res.layout_preserved),
                     "seconds": seconds, "n": n, "seed": seed, "params": method_params[m]})
        if on_method:
            on_method(m, "done")
    buf = io.BytesIO()
    np.savez_compressed(buf, xy=xy, quadrant=quadrant, **{m: r.embedding for m, r in results.items()})
    atomic_write_bytes(out_dir / "toy_embeddings.npz", buf.getvalue())
    atomic_write_text(out_dir / "toy_scores.json", json.dumps({"n": n, "seed": seed, "methods": rows}, indent=1,
                                                              default=str))
    atomic_write_text(out_dir / "toy_scores.csv", tidy_csv(rows, _cell))
    _save_png(out_dir / "toy.png", plot_toy_check(results, xy, quadrant))
    panels = {m: toy_distance_panel(r, xy, quadrant, seed=seed) for m, r in results.items()}
    _save_png(out_dir / "toy_distances.png", plot_toy_distances(panels))
    summary: dict[str, Any] = {"n": n}
    for r in rows:
        summary.update({f"{r['method']}/{c}": r[c] for c in SCORE_COLUMNS})
    return summary


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, default=str)
    return v


def _save_png(path: Path, fig: Any) -> None:
    from kdlens.figures.style import figure_bytes
    from kdlens.store import atomic_write_bytes

    atomic_write_bytes(path, figure_bytes(fig, "png"))


@register_step("embed-toy")
def toy_step(ctx: StepContext) -> dict[str, Any]:
    """Fig. 1: the quadrant toy re-embedded by t-SNE and Ivis (global layout kept?); needs nothing.

    Params: ``n`` (points, default 400), ``methods`` (default tsne, ivis), ``perplexity``
    (default 30; the paper's 150 needs > 450 points), ``seed``, ``method_params`` (method →
    keyword arguments on top of :data:`TOY_IVIS`)."""
    ctx.check_params(("n", "methods", "perplexity", "seed", "method_params"))
    methods = list(ctx.param("methods", ["tsne", "ivis"]))
    seed = int(ctx.param("seed", 0))
    params = toy_method_params(methods, float(ctx.param("perplexity", DEFAULT_PERPLEXITY)),
                               ctx.param("method_params", {}) or {}, seed)
    return write_toy_check(ctx.out_dir, n=int(ctx.param("n", 400)), seed=seed, methods=methods, method_params=params)
