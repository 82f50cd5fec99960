"""PURSUhInT hint-point search: teacher + data → layer representations → similarity → hints.

Keser et al. 2022, *PURSUhInT: In search of informative hint points based on layer
clustering for knowledge distillation* (Expert Systems with Applications):

* step 1 — run the teacher on N training samples (N = 10,000 in the paper; a fixed,
  seeded random sample here) and reduce every candidate layer (each residual sub-block)
  to an N×C matrix by the spatial mean (:func:`kdlens.explain.representations.layer_representations`);
* step 2 — the L×L similarity of all layer pairs (linear CKA, Kornblith et al. 2019, or
  R²_CCA, the mean squared canonical correlation; :func:`kdlens.explain.similarity.similarity_matrix`),
  k-means over the layers with distance 1 − similarity, initial centres evenly spaced
  over the layer order, and the layer at each cluster's centre as hint point
  (:func:`kdlens.explain.hints.select_hint_points`).

The paper's Table 1 reports 941 s for step 1 and 336 s (R²_CCA) / 4,797 s (CKA) for step
2 on resnet110; here step 2 uses the feature-space forms (C×C products instead of N×N
Gram matrices), see ``benchmarks/hint_search.py``.

:func:`find_hint_points` is the pure composition (a model and a tensor of images in);
:func:`auto_hint_layers` is what ``kdlens distill --hints auto`` uses: it reuses a saved
search for the same teacher weights and settings (from ``kdlens hints`` or an earlier
``auto``) and otherwise runs and saves one.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from kdlens.errors import KdlensError, unknown_name
from kdlens.explain.hints import CLUSTER_ALGORITHMS, HINT_RULES, HintSelection, select_hint_points
from kdlens.explain.representations import (
    REPRESENTATION_FORMS,
    candidate_layers,
    indices_sha256,
    layer_representations,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kdlens.data import Dataset

__all__ = [
    "BF16_TOLERANCE",
    "DEFAULT_N",
    "PRECISIONS",
    "STEP1_PARALLEL",
    "bf16_similarity_change",
    "HintSearchResult",
    "auto_hint_layers",
    "check_search_options",
    "conventional_indices",
    "dataset_key",
    "dataset_prepare",
    "find_saved_search",
    "find_hint_points",
    "format_members",
    "sample_indices",
]

#: PURSUhInT uses N = 10,000 training samples for the layer representations.
DEFAULT_N = 10_000
_RESULT_VERSION = 1
#: R²_CCA runs with eps=0 unless told otherwise: CCA on each layer's non-degenerate
#: subspace (pseudo-inverse whitening), identical to plain CCA for full-rank layers, and
#: defined for layers with dead (always-zero) ReLU channels, which real teachers have.
_CCA_METRICS = ("cca", "cca_r2")
#: step-1 forward precisions: "fp32" (default; the reference values) or "bf16" (bfloat16
#: autocast, accepted only after :func:`bf16_similarity_change` passes on a check sample).
PRECISIONS = ("fp32", "bf16")
#: how step 1 uses the CPU: "batches" (default; one single-threaded worker per torch thread,
#: each running whole batches — robust on a shared CPU) or "intra-op" (one forward pass at
#: a time over torch's intra-op threads).  Same values either way.
STEP1_PARALLEL = ("batches", "intra-op")
#: at most this many batch workers (each holds a copy of the model).
_MAX_WORKERS = 8
#: the largest change of any similarity entry a bf16 forward may cause (issue 16).
BF16_TOLERANCE = 1e-3
#: examples in the bf16 check sample (fewer if the search uses fewer).
BF16_CHECK_N = 1000


# ----------------------------------------------------------------------- helpers
def sample_indices(pool: int | Sequence[int] | np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """A deterministic sample of ``n`` rows from ``pool`` (a size or an index array),
    sorted ascending; the whole pool when ``n`` ≥ its size.  Same (pool, n, seed) → same rows."""
    rows = np.arange(int(pool), dtype=np.int64) if np.isscalar(pool) else np.asarray(pool, dtype=np.int64).reshape(-1)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise KdlensError(f"n (samples for the layer representations) must be a positive integer; got {n!r}")
    if rows.size == 0:
        raise KdlensError("the sample pool is empty: no training examples to compute representations on")
    if n >= rows.size:
        return np.sort(rows)
    rng = np.random.default_rng(seed)
    return np.sort(rows[rng.choice(rows.size, size=int(n), replace=False)])


def dataset_prepare(ds: Dataset) -> Callable[[Tensor], Tensor]:
    """The evaluation transform of a dataset's images: scale to [0, 1] and normalise with
    the training mean/std (the same as the distillation eval path)."""
    from kdlens.data import normalize

    mean, std = ds.mean, ds.std
    return lambda x: normalize(x, mean, std)


def dataset_key(ds: Dataset) -> dict[str, Any]:
    """What identifies a dataset split and its transform in caches and saved searches."""
    return {"dataset": ds.name, "split": ds.split or "train",
            "transform": f"normalize(mean={ds.mean}, std={ds.std})"}


def conventional_indices(model: nn.Module, layers: Sequence[str], example: Tensor | None = None) -> list[int]:
    """0-based positions in ``layers`` of the conventional hint points (last sub-block
    before each downsampling, plus the last block; resnet110 → 17, 35, 53), matched by
    block name for either tap form.  Points not among ``layers`` are left out."""
    from kdlens.models import conventional_hint_layers

    try:
        conv = conventional_hint_layers(model, example)
    except KdlensError:
        return []
    base = [name.removesuffix(".preact") for name in layers]
    return [base.index(c) for c in conv if c in base]


def format_members(members: Sequence[int]) -> str:
    """0-based layer indices → 1-based ranges, e.g. [0, 1, 2, 5] → "1–3, 6"."""
    parts: list[str] = []
    members = sorted(int(m) for m in members)
    i = 0
    while i < len(members):
        j = i
        while j + 1 < len(members) and members[j + 1] == members[j] + 1:
            j += 1
        parts.append(f"{members[i] + 1}" if i == j else f"{members[i] + 1}–{members[j] + 1}")
        i = j + 1
    return ", ".join(parts)


def _check_k(k: Any, n_layers: int, model: nn.Module) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= n_layers:
        raise KdlensError(
            f"k={k!r} hint points cannot be chosen from the {n_layers} candidate layers of "
            f"{type(model).__name__}; use an integer 1 ≤ k ≤ {n_layers} (PURSUhInT uses k = 3)."
        )
    return int(k)


# ------------------------------------------------------------------------ result
@dataclass
class HintSearchResult:
    """Outcome of :func:`find_hint_points`.

    ``selection``: clusters and hint points (:class:`~kdlens.explain.hints.HintSelection`);
    ``similarity``: the L×L layer similarity; ``layer_names``: the L candidate layers;
    ``conventional``: 0-based indices of the conventional hint points among them;
    ``timings``: seconds for ``step1_representations``, ``step2_similarity``,
    ``step2_clustering``, ``step2`` (their sum) and ``total``; ``n``: samples used;
    ``weights_sha256`` / ``data``: what the search was run on; ``cache``: whether step 1
    came from the representation cache ("hit" / "miss" / "off").
    """

    selection: HintSelection
    similarity: np.ndarray
    layer_names: tuple[str, ...]
    conventional: tuple[int, ...]
    metric: str
    rule: str
    form: str
    k: int
    n: int
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    weights_sha256: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    cache: str = "off"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The hint layers' tap names, shallow to deep."""
        return [self.layer_names[i] for i in self.selection.indices]

    @property
    def conventional_names(self) -> list[str]:
        return [self.layer_names[i] for i in self.conventional]

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per cluster: 1-based cluster number, members, hint, and the conventional
        point with the same rank (if any) for comparison."""
        rows = []
        for c, members in enumerate(self.selection.clusters):
            hint = self.selection.indices[c]
            conv = self.conventional[c] if c < len(self.conventional) else None
            rows.append({
                "cluster": c + 1,
                "members": format_members(members),
                "size": len(members),
                "hint": hint + 1,
                "layer": self.layer_names[hint],
                "conventional": None if conv is None else conv + 1,
                "conventional_layer": None if conv is None else self.layer_names[conv],
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _RESULT_VERSION,
            "selection": self.selection.to_dict(),
            "hint_layers": self.names,
            "conventional": {
                "indices": list(self.conventional),
                "indices_1based": [i + 1 for i in self.conventional],
                "names": self.conventional_names,
            },
            "metric": self.metric,
            "rule": self.rule,
            "form": self.form,
            "k": self.k,
            "n": self.n,
            "seed": self.seed,
            "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
            "weights_sha256": self.weights_sha256,
            "data": self.data,
            "cache": self.cache,
            "layer_names": list(self.layer_names),
            "similarity": np.asarray(self.similarity, dtype=float).round(8).tolist(),
            **({"extra": self.extra} if self.extra else {}),
        }

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HintSearchResult:
        try:
            selection = HintSelection.from_json(json.dumps(d["selection"]))
            return cls(
                selection=selection,
                similarity=np.asarray(d["similarity"], dtype=np.float64),
                layer_names=tuple(d["layer_names"]),
                conventional=tuple(int(i) for i in d["conventional"]["indices"]),
                metric=str(d["metric"]), rule=str(d["rule"]), form=str(d["form"]),
                k=int(d["k"]), n=int(d["n"]), seed=int(d["seed"]),
                timings=dict(d.get("timings", {})), weights_sha256=d.get("weights_sha256"),
                data=dict(d.get("data", {})), cache=str(d.get("cache", "off")), extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise KdlensError(f"not a valid hint-search JSON ({type(err).__name__}: {err}); "
                              "write one with `kdlens hints` or HintSearchResult.save().") from None

    @classmethod
    def from_json(cls, text: str) -> HintSearchResult:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise KdlensError(f"not a valid hint-search JSON: {err}") from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> HintSearchResult:
        return cls.from_json(Path(path).read_text())

    def figure(self, title: str | None = None) -> Figure:
        """Heatmap of the similarity with cluster boundaries, the hint points (red circles)
        and the conventional points (white crosses)."""
        from kdlens.figures.similarity import plot_similarity_heatmap

        fig = plot_similarity_heatmap(
            self.similarity, self.selection,
            title=title or f"{self.metric} ({self.form}-activation), k={self.k}, rule={self.rule}",
        )
        if self.conventional:
            ax = fig.axes[0]
            conv = list(self.conventional)
            ax.scatter(conv, conv, marker="x", s=40, color="white", linewidths=1.5, label="conventional", zorder=4)
            ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
        return fig

    def save(self, out_dir: str | Path, figure: bool = True, title: str | None = None) -> dict[str, Path]:
        """Write ``hints.json`` (and ``hints.png``) atomically into ``out_dir``."""
        from kdlens.store import atomic_write_bytes, atomic_write_text

        out = Path(out_dir)
        paths = {"json": out / "hints.json"}
        png = None
        if figure:
            buffer = io.BytesIO()
            self.figure(title).savefig(buffer, format="png")
            png = buffer.getvalue()
        atomic_write_text(paths["json"], self.to_json())
        if png is not None:
            paths["png"] = out / "hints.png"
            atomic_write_bytes(paths["png"], png)
        return paths


# ------------------------------------------------------------------------- search
def check_search_options(metric: str, rule: str, form: str, algorithm: str | None = None) -> None:
    """Unknown similarity metric, hint rule, tap form or clustering algorithm → KdlensError
    with the allowed names."""
    from kdlens.explain.similarity import metric_names

    if algorithm is not None and algorithm not in CLUSTER_ALGORITHMS:
        raise unknown_name("layer clustering algorithm", algorithm, CLUSTER_ALGORITHMS)
    if metric not in metric_names():
        raise unknown_name("similarity metric", metric, metric_names())
    if rule not in HINT_RULES:
        raise unknown_name("hint rule", rule, ["centroid", "centre", "medoid", "last"])
    if form not in REPRESENTATION_FORMS:
        raise unknown_name("tap form", form, REPRESENTATION_FORMS)


def find_hint_points(
    model: nn.Module,
    images: Tensor,
    prepare: Callable[[Tensor], Tensor] | None,
    k: int = 3,
    metric: str = "cka",
    rule: str = "centroid",
    form: str = "post",
    n: int = DEFAULT_N,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    blas_threads: int | None = 1,
    *,
    pool: Sequence[int] | np.ndarray | None = None,
    data_key: Mapping[str, Any] | None = None,
    layers: Sequence[str] | None = None,
    batch_size: int = 250,
    algorithm: str = "pursuhint",
    metric_options: Mapping[str, Any] | None = None,
    progress: bool = False,
    precision: str = "fp32",
    bf16_tolerance: float = BF16_TOLERANCE,
    bf16_check_n: int = BF16_CHECK_N,
    parallel: str = "batches",
) -> HintSearchResult:
    """PURSUhInT hint-point search on ``model`` (Keser et al. 2022).

    ``images``: all candidate inputs (e.g. the training split's uint8 images);
    ``prepare``: batch → model input (e.g. :func:`dataset_prepare`); ``pool``: the rows
    that may be sampled (default all); ``n``: samples, drawn deterministically with
    ``seed`` (:func:`sample_indices`; all of the pool when it is smaller).
    ``k``: number of hint points; ``metric``: a :func:`~kdlens.explain.similarity.metric_names`
    name ("cka" = linear CKA, "cca" = R²_CCA, …); ``rule``: "centroid" (the authors'
    centre layers, default), "centre", "medoid" or "last"; ``algorithm``: "pursuhint" (the
    authors' layer-centroid clustering, default), "profiles", "kmedoids" or "uniform" (k equal
    consecutive groups — the paper's similarity-blind baseline); ``form``: "post" or "pre" activation taps; ``layers``: candidate layers
    (default one per sub-block).  ``cache_dir``: representation cache (see
    :mod:`kdlens.explain.representations`; ``data_key`` identifies the data there).
    ``blas_threads``: BLAS threads for step 2 (1 is fastest on a busy shared CPU).
    ``metric_options`` go to the metric; R²_CCA defaults to ``eps=0`` (CCA on each layer's
    column space, so rank-deficient layers — dead ReLU channels — are allowed; same value
    as plain CCA for full-rank layers).

    Step 1 runs under ``torch.inference_mode()`` with channels-last batches of
    ``batch_size``; in ``precision="fp32"`` (default) its values are bit-identical to a plain
    ``no_grad`` forward.  ``parallel``: "batches" (default for fp32 on a CPU: as many
    single-threaded workers as ``torch.get_num_threads()``, at most 8, each running whole
    batches on a copy of the model, see :mod:`kdlens.explain.parallel_representations`;
    about 2× faster than intra-op threads on the loaded 2-core machine here, same values)
    or "intra-op" (one forward pass at a time over torch's threads; always used on a GPU
    and for bf16).

    ``precision="bf16"``: bfloat16 autocast for the forward pass, faster only where the
    hardware has bf16 arithmetic (a GPU, avx512_bf16/AMX CPUs); several times *slower* on
    AVX2-only CPUs (benchmarks/RESULTS.md).  It is checked first: on ``bf16_check_n`` of the
    sampled examples the similarity matrices from fp32 and bf16 representations are
    compared, and a change of ``bf16_tolerance`` (1e-3) or more in any entry raises
    :class:`~kdlens.errors.KdlensError` before the full pass.  The measured change is kept
    in ``result.extra["bf16_check"]``.

    Inputs are checked before any forward pass; bad ones raise
    :class:`~kdlens.errors.KdlensError`.
    """
    from kdlens.explain.similarity import similarity_matrix

    t_start = time.perf_counter()
    check_search_options(metric, rule, form, algorithm)
    _check_precision(precision, bf16_tolerance, bf16_check_n)
    if parallel not in STEP1_PARALLEL:
        raise unknown_name("step-1 parallelism", parallel, STEP1_PARALLEL)
    names = list(layers) if layers is not None else candidate_layers(model, form)
    k = _check_k(k, len(names), model)
    rows = sample_indices(len(images) if pool is None else pool, n, seed)
    if rows.max() >= len(images) or rows.min() < 0:
        raise KdlensError(f"pool indices out of range: allowed 0..{len(images) - 1}")

    from kdlens.distill.cache import weights_hash

    w_hash = weights_hash(model)
    info: dict[str, Any] = {}
    options = dict(metric_options or {})
    if metric in _CCA_METRICS:
        options.setdefault("eps", 0.0)
    extra: dict[str, Any] = {"metric_options": options} if options else {}
    t_check = time.perf_counter()
    if precision == "bf16":
        check_rows = sample_indices(rows, bf16_check_n, seed)
        change = bf16_similarity_change(model, images, prepare, names, form, check_rows, metric, options,
                                        batch_size=batch_size, blas_threads=blas_threads)
        extra.update(precision="bf16", bf16_check={"n": int(check_rows.size), "max_abs_change": change,
                                                   "tolerance": float(bf16_tolerance)})
        if not change < bf16_tolerance:
            raise KdlensError(
                f"a bf16 forward pass moves the {metric} layer similarity by up to {change:.2e} on a check sample of "
                f"{check_rows.size} examples (tolerance {bf16_tolerance:g}); use precision='fp32' (the default) for this "
                "teacher, or a looser bf16_tolerance if that change is acceptable"
            )
    t0 = time.perf_counter()
    if parallel == "batches" and precision == "fp32" and _device(model).type == "cpu":
        from kdlens.explain.parallel_representations import layer_representations_parallel

        reps = layer_representations_parallel(
            model, images, prepare, layers=names, indices=rows, batch_size=batch_size,
            workers=min(torch.get_num_threads(), _MAX_WORKERS), form=form, cache_dir=cache_dir, data_key=data_key,
            progress=progress, info=info,
        )
    else:
        with torch.inference_mode():
            reps = layer_representations(
                model, images, prepare, layers=names, form=form, indices=rows, batch_size=batch_size,
                cache_dir=cache_dir, data_key=data_key, progress=progress, info=info, bf16=precision == "bf16",
            )
    t1 = time.perf_counter()
    S = similarity_matrix(reps, metric, blas_threads=blas_threads, **options)
    t2 = time.perf_counter()
    selection = select_hint_points(S, k, rule=rule, names=names, metric=metric, algorithm=algorithm)
    t3 = time.perf_counter()

    example = None
    if getattr(model, "hint_stages", None) is None:  # foreign model: stages by a dry run
        from kdlens.data import to_float

        example = images[torch.from_numpy(rows[:2]).to(images.device)].to(_device(model))
        example = prepare(example) if prepare is not None else to_float(example)
    conv = conventional_indices(model, names, example)
    data = dict(data_key or {})
    data.update(n=int(rows.size), seed=int(seed), indices_sha256=indices_sha256(rows))
    return HintSearchResult(
        selection=selection, similarity=S, layer_names=tuple(names), conventional=tuple(conv),
        metric=metric, rule=selection.rule, form=form, k=k, n=int(rows.size), seed=int(seed),
        timings={
            **({"step1_bf16_check": t0 - t_check} if precision == "bf16" else {}),
            "step1_representations": t1 - t0,
            "step2_similarity": t2 - t1,
            "step2_clustering": t3 - t2,
            "step2": t3 - t1,
            "total": time.perf_counter() - t_start,
        },
        weights_sha256=w_hash, data=data, cache=info.get("cache", "off"),
        extra=extra,
    )


def _check_precision(precision: str, tolerance: float, check_n: int) -> None:
    if precision not in PRECISIONS:
        raise unknown_name("step-1 precision", precision, PRECISIONS)
    if not (isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool) and tolerance > 0):
        raise KdlensError(f"bf16_tolerance must be a positive number (default {BF16_TOLERANCE:g}); got {tolerance!r}")
    if isinstance(check_n, bool) or not isinstance(check_n, (int, np.integer)) or check_n < 2:
        raise KdlensError(f"bf16_check_n must be an integer ≥ 2 (default {BF16_CHECK_N}); got {check_n!r}")


def bf16_similarity_change(
    model: nn.Module,
    images: Tensor,
    prepare: Callable[[Tensor], Tensor] | None,
    layers: Sequence[str],
    form: str,
    rows: np.ndarray,
    metric: str = "cka",
    metric_options: Mapping[str, Any] | None = None,
    *,
    batch_size: int = 250,
    blas_threads: int | None = 1,
) -> float:
    """max_ij |S_bf16[i, j] − S_fp32[i, j]|: how far a bfloat16-autocast forward pass moves
    the L×L layer similarity, both computed on the same ``rows`` of ``images``."""
    from kdlens.explain.similarity import similarity_matrix

    options = dict(metric_options or {})
    with torch.inference_mode():
        fp32 = layer_representations(model, images, prepare, layers=layers, form=form, indices=rows,
                                     batch_size=batch_size)
        bf16 = layer_representations(model, images, prepare, layers=layers, form=form, indices=rows,
                                     batch_size=batch_size, bf16=True)
    s32 = similarity_matrix(fp32, metric, blas_threads=blas_threads, **options)
    s16 = similarity_matrix(bf16, metric, blas_threads=blas_threads, **options)
    return float(np.max(np.abs(s16 - s32)))


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


# --------------------------------------------------------------- distill --hints auto
def _matches(d: Mapping[str, Any], weights: str, dataset: str, k: int, metric: str, rule: str, form: str) -> bool:
    return (
        d.get("weights_sha256") == weights
        and (d.get("extra") or {}).get("precision", "fp32") == "fp32"  # auto reuses only fp32 searches
        and (d.get("data") or {}).get("dataset") == dataset
        and d.get("k") == k and d.get("metric") == metric and d.get("rule") == rule and d.get("form") == form
    )


def find_saved_search(
    paths: Sequence[str | Path], weights: str, dataset: str, k: int, metric: str, rule: str, form: str
) -> tuple[HintSearchResult, Path] | None:
    """The first readable saved search among ``paths`` (``hints.json`` files or folders of
    them) made for these teacher weights, dataset and settings."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.glob("*.json"))
        elif p.is_file():
            files.append(p)
    for f in files:
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and _matches(d, weights, dataset, k, metric, rule, form):
            try:
                return HintSearchResult.from_dict(d), f
            except KdlensError:
                continue
    return None


def auto_hint_layers(
    model: nn.Module,
    train: Dataset,
    *,
    pool: Sequence[int] | np.ndarray | None = None,
    k: int | None = None,
    cache_dir: str | Path,
    teacher_ref: str | Path | None = None,
    metric: str = "cka",
    rule: str = "centroid",
    form: str = "post",
    n: int = DEFAULT_N,
    seed: int = 0,
    progress: bool = False,
) -> list[str]:
    """Teacher hint layers for ``--hints auto``: PURSUhInT centres of k clusters (k =
    number of conventional points unless given; linear CKA; post-activation).

    Reuses a saved search for the same teacher weights, dataset and settings — first the
    finished ``kdlens hints`` analyses (``STORE/hints-…/hints.json``) of the run store that
    holds the teacher run and of the one that holds ``cache_dir``, then
    ``<teacher run>/hints/hints.json`` (where older kdlens wrote them), then ``cache_dir`` —
    and otherwise runs :func:`find_hint_points` (representations cached under the teacher
    run's ``hints/cache`` when it exists, else ``cache_dir/reps``, where ``kdlens hints``
    caches them too) and saves the result in ``cache_dir``.
    """
    from kdlens.distill.cache import weights_hash
    from kdlens.store.analysis import finished_analyses, store_holding

    names = candidate_layers(model, form)
    if k is None:
        k = len(conventional_indices(model, names)) or 3
    k = _check_k(k, len(names), model)
    weights = weights_hash(model)
    cache = Path(cache_dir)
    run_hints = Path(teacher_ref) / "hints" if teacher_ref is not None and Path(teacher_ref).is_dir() else None
    stores = dict.fromkeys(s for s in (store_holding(Path(teacher_ref).parent) if run_hints is not None else None,
                                       store_holding(cache)) if s is not None)
    searched = [folder / "hints.json" for store in stores for folder in finished_analyses(store, "hints")]
    searched += [run_hints / "hints.json"] if run_hints is not None else []
    found = find_saved_search([*searched, cache], weights, train.name, k, metric, rule, form)
    if found is not None:
        result, path = found
        if progress:
            print(f"hint points (auto, reused {path}): {', '.join(map(str, result.selection.indices_1based))} = {result.names}")
    else:
        reps_cache = run_hints / "cache" if run_hints is not None and (run_hints / "cache").is_dir() else cache / "reps"
        result = find_hint_points(
            model, train.images, dataset_prepare(train), k=k, metric=metric, rule=rule, form=form, n=n,
            seed=seed, cache_dir=reps_cache, pool=pool, data_key=dataset_key(train), progress=progress,
        )
        from kdlens.store import atomic_write_text

        atomic_write_text(cache / f"hints-{weights[:16]}-{train.name}-k{k}-{metric}-{result.rule}-{form}.json", result.to_json())
        if progress:
            print(f"hint points (auto, searched in {result.timings['total']:.1f} s): "
                  f"{', '.join(map(str, result.selection.indices_1based))} = {result.names}")
    known = set(names)
    bad = [h for h in result.names if h not in known]
    if bad:
        raise KdlensError(f"saved hint search names layers {bad} that the teacher does not have; delete it and rerun")
    return result.names
