"""One call for every embedding method: ``embed(x, method="ivis" | "tsne" | "umap" | "pca")``.

Each method is an estimator with ``fit`` / ``transform`` / ``fit_transform`` and a learned
``embedding_`` (``make_embedder(method, **kw)``), found through the ``EMBEDDERS`` registry,
so any layer's activations can be embedded by any method:

* ``ivis`` — :class:`~kdlens.explain.embed.ivis.Ivis` (Szubert et al. 2019).
* ``tsne`` — openTSNE (Poličar, Stražar & Zupan 2024, *openTSNE: a modular Python library
  for t-SNE dimensionality reduction and embedding*, JSS), FFT-accelerated interpolation
  (Linderman et al. 2019) for the gradients, PCA initialisation, openTSNE's ``transform`` for
  new points. Its neighbour search goes through a kdlens back-end (``knn="auto"`` as for Ivis:
  exact torch search up to 20,000 points or above 256 dimensions, where openTSNE's own Annoy
  default degenerates), so ``transform`` works with every back-end.
* ``umap`` — umap-learn (McInnes, Healy & Melville 2018), an optional extra; with d > 256 its
  neighbours come from the exact torch back-end (``precomputed_knn``), so ``transform`` is then
  unavailable (UMAP needs its own search index for new points).
* ``pca`` — principal components by a (randomised for large data) SVD of the centred data.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from kdlens.errors import KdlensError
from kdlens.explain.embed.ivis import Ivis
from kdlens.explain.embed.knn import KNNIndex, as_float_matrix, make_knn_index
from kdlens.registry import Registry

__all__ = ["EMBEDDERS", "PCAEmbedder", "TSNEEmbedder", "UMAPEmbedder", "embed", "list_methods", "make_embedder"]

EMBEDDERS: Registry[type] = Registry("embedding method")
EMBEDDERS.register("ivis")(Ivis)


class _Embedder:
    """Shared ``fit_transform`` and parameter handling of the wrappers."""

    method: ClassVar[str] = ""

    def fit(self, x: Any, y: Any = None) -> _Embedder:  # pragma: no cover - interface
        raise NotImplementedError

    def fit_transform(self, x: Any, y: Any = None) -> np.ndarray:
        return self.fit(x, y).embedding_

    def _check_fitted(self) -> None:
        if not hasattr(self, "embedding_"):
            raise KdlensError(f"this {self.method} embedder is not fitted yet: call fit(x) first")


@EMBEDDERS.register("pca")
class PCAEmbedder(_Embedder):
    """PCA: project the centred data on its top ``n_components`` right singular vectors.

    Exact for min(n, d) ≤ 2,000 (float64 eigen-decomposition of the smaller of X Xᵀ and Xᵀ X,
    which gives the singular vectors of the centred X), else the randomised range finder of Halko,
    Martinsson & Tropp (2011) via ``torch.svd_lowrank`` with ``n_oversamples`` extra columns
    and 4 power iterations. Signs are fixed so that each component's largest-magnitude loading
    is positive (deterministic output). ``explained_variance_ratio_`` as in scikit-learn.
    """

    method = "pca"

    def __init__(self, n_components: int = 2, seed: int = 0, n_oversamples: int = 10) -> None:
        self.n_components = n_components
        self.seed = seed
        self.n_oversamples = n_oversamples

    def fit(self, x: Any, y: Any = None) -> PCAEmbedder:
        import torch

        x = as_float_matrix(x)
        n, d = x.shape
        q = int(self.n_components)
        if not 1 <= q <= min(n, d):
            raise KdlensError(f"PCA n_components must be in 1..{min(n, d)}; got {self.n_components}")
        self.mean_ = x.mean(0, dtype=np.float64).astype(np.float32)
        xc = x - self.mean_
        total = float((xc.astype(np.float64) ** 2).sum()) / max(n - 1, 1)
        if min(n, d) <= 2000:
            xd = xc.astype(np.float64)
            if n <= d:  # eigen-decomposition of the n × n Gram matrix X Xᵀ = U S² Uᵀ, V = Xᵀ U / S
                evals, evecs = np.linalg.eigh(xd @ xd.T)
                order = np.argsort(evals)[::-1][:q]
                s = np.sqrt(np.clip(evals[order], 0, None))
                comps = (xd.T @ evecs[:, order] / np.where(s > 0, s, 1.0)).T
            else:  # of the d × d scatter matrix Xᵀ X = V S² Vᵀ
                evals, evecs = np.linalg.eigh(xd.T @ xd)
                order = np.argsort(evals)[::-1][:q]
                s = np.sqrt(np.clip(evals[order], 0, None))
                comps = evecs[:, order].T
        else:
            gen_state = torch.random.get_rng_state()
            torch.manual_seed(int(self.seed))
            try:
                _, s_t, v = torch.svd_lowrank(torch.from_numpy(xc), q=q + int(self.n_oversamples), niter=4)
            finally:
                torch.random.set_rng_state(gen_state)
            comps, s = v[:, :q].T.double().numpy(), s_t[:q].double().numpy()
        signs = np.sign(comps[np.arange(q), np.abs(comps).argmax(1)])
        signs[signs == 0] = 1
        self.components_ = (comps * signs[:, None]).astype(np.float32)
        self.explained_variance_ = s**2 / max(n - 1, 1)
        self.explained_variance_ratio_ = self.explained_variance_ / total if total > 0 else np.zeros(q)
        self.embedding_ = xc @ self.components_.T
        return self

    def transform(self, x: Any) -> np.ndarray:
        self._check_fitted()
        x = as_float_matrix(x)
        return (x - self.mean_) @ self.components_.T


def _openTSNE_index(index: KNNIndex, data: np.ndarray, k: int) -> Any:
    """Wrap a kdlens back-end as an openTSNE ``KNNIndex`` (build on ``data``, query new points)."""
    from openTSNE.nearest_neighbors import KNNIndex as OpenTSNEIndex

    class KdlensIndex(OpenTSNEIndex):
        VALID_METRICS = ["euclidean", "angular"]

        def build(self):
            nb = index.build(self.data, self.k)
            return nb.indices, nb.distances

        def query(self, query, k):
            nb = index.query(query, k)
            return nb.indices, nb.distances

    return KdlensIndex(data, k, metric=index.metric)


@EMBEDDERS.register("tsne")
class TSNEEmbedder(_Embedder):
    """t-SNE (van der Maaten & Hinton 2008) through openTSNE.

    ``perplexity`` 30, ``n_iter`` 500 after 250 early-exaggeration iterations, PCA
    initialisation (Kobak & Linderman 2021), ``learning_rate="auto"`` (n / 12) and
    ``negative_gradient_method="auto"`` (Barnes–Hut below 10,000 points, FFT interpolation
    from there; Linderman et al. 2019) are openTSNE's defaults — forcing ``"fft"`` cost ≈ 20 s
    at 300 points here where Barnes–Hut took 1–3 s, and so is ``n_jobs=1``: on a shared two-core machine two threads made
    ``transform`` of 7 points take 8 s instead of 0.06 s here; pass ``n_jobs=2`` (or −1) on an
    idle machine. ``knn``: kdlens back-end for the 3·perplexity neighbours, Euclidean.
    ``transform(x)`` places new points into the fixed embedding (openTSNE's method).
    """

    method = "tsne"

    def __init__(
        self,
        n_components: int = 2,
        perplexity: float = 30.0,
        n_iter: int = 500,
        early_exaggeration_iter: int = 250,
        learning_rate: float | str = "auto",
        initialization: str = "pca",
        knn: str | KNNIndex = "auto",
        seed: int = 0,
        n_jobs: int = 1,
        verbose: bool = False,
        negative_gradient_method: str = "auto",
    ) -> None:
        self.n_components = n_components
        self.perplexity = perplexity
        self.n_iter = n_iter
        self.early_exaggeration_iter = early_exaggeration_iter
        self.learning_rate = learning_rate
        self.initialization = initialization
        self.knn = knn
        self.seed = seed
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.negative_gradient_method = negative_gradient_method

    def fit(self, x: Any, y: Any = None) -> TSNEEmbedder:
        try:
            from openTSNE import TSNE, affinity
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise KdlensError("method 'tsne' needs openTSNE: pip install 'kdlens[embed]'") from exc
        x = as_float_matrix(x)
        n, d = x.shape
        perplexity = min(float(self.perplexity), (n - 1) / 3.0)
        k = min(n - 1, int(3 * perplexity))
        t0 = time.perf_counter()
        index = make_knn_index(self.knn, n, d, **({} if isinstance(self.knn, KNNIndex) else
                                                   {"metric": "euclidean", "seed": self.seed}))
        aff = affinity.PerplexityBasedNN(
            perplexity=perplexity, knn_index=_openTSNE_index(index, x, k), n_jobs=self.n_jobs,
            random_state=self.seed, verbose=self.verbose,
        )
        tsne = TSNE(
            n_components=int(self.n_components), n_iter=int(self.n_iter),
            early_exaggeration_iter=int(self.early_exaggeration_iter), learning_rate=self.learning_rate,
            negative_gradient_method=self.negative_gradient_method, n_jobs=self.n_jobs, random_state=self.seed, verbose=self.verbose,
        )
        init = self.initialization
        self.model_ = tsne.fit(x, affinities=aff, initialization=init)
        self.embedding_ = np.asarray(self.model_, dtype=np.float32)
        self.kl_divergence_ = float(getattr(self.model_, "kl_divergence", np.nan))
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def transform(self, x: Any) -> np.ndarray:
        self._check_fitted()
        return np.asarray(self.model_.transform(as_float_matrix(x)), dtype=np.float32)


@EMBEDDERS.register("umap")
class UMAPEmbedder(_Embedder):
    """UMAP (McInnes, Healy & Melville 2018) through umap-learn (optional: ``kdlens[umap]``).

    umap-learn's defaults (15 neighbours, ``min_dist`` 0.1, spectral initialisation). With
    ``seed`` set umap-learn runs single-threaded and reproducibly; ``seed=None`` lets it use all
    cores. For more than 256 dimensions the neighbours are computed by the exact kdlens back-end
    and handed over as ``precomputed_knn`` (then no ``transform``).
    """

    method = "umap"

    def __init__(
        self,
        n_components: int = 2,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        metric: str = "euclidean",
        seed: int | None = 0,
        verbose: bool = False,
    ) -> None:
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.seed = seed
        self.verbose = verbose

    def fit(self, x: Any, y: Any = None) -> UMAPEmbedder:
        try:
            import umap
        except ImportError as exc:
            raise KdlensError("method 'umap' needs umap-learn, an optional extra: pip install 'kdlens[umap]'") from exc
        x = as_float_matrix(x)
        n, d = x.shape
        k = min(int(self.n_neighbors), n - 1)
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {}
        if d > 256 and self.metric == "euclidean":
            nb = make_knn_index("exact").build(x, k - 1)  # umap counts the point itself
            idx = np.concatenate([np.arange(n)[:, None], nb.indices], 1)
            dist = np.concatenate([np.zeros((n, 1), np.float32), nb.distances], 1)
            kwargs["precomputed_knn"] = (idx, dist, None)
        self.model_ = umap.UMAP(
            n_components=int(self.n_components), n_neighbors=k, min_dist=self.min_dist, metric=self.metric,
            random_state=self.seed, n_jobs=1 if self.seed is not None else -1, verbose=self.verbose, **kwargs,
        )
        self.embedding_ = np.asarray(self.model_.fit_transform(x), dtype=np.float32)
        self.precomputed_knn_ = bool(kwargs)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def transform(self, x: Any) -> np.ndarray:
        self._check_fitted()
        if self.precomputed_knn_:
            raise KdlensError("this UMAP model was fitted on precomputed neighbours (d > 256) and cannot transform new points")
        return np.asarray(self.model_.transform(as_float_matrix(x)), dtype=np.float32)


def list_methods() -> list[str]:
    """The embedding method names: ivis, pca, tsne, umap."""
    return EMBEDDERS.names()


def make_embedder(method: str = "ivis", **params: Any) -> Any:
    """An unfitted estimator for ``method`` with ``params`` (unknown parameters → clear error)."""
    cls = EMBEDDERS.get(method)
    try:
        return cls(**params)
    except TypeError as exc:
        import inspect

        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise KdlensError(f"bad parameter for embedding method {method!r}: {exc}. Allowed: {', '.join(allowed)}") from None


def embed(x: Any, method: str = "ivis", y: Any = None, **params: Any) -> np.ndarray:
    """Embed the rows of ``x`` with ``method``; returns an n × n_components float32 array.

    ``params`` go to the method's estimator (e.g. ``n_components``, ``seed``, ``epochs`` for
    Ivis, ``perplexity`` for t-SNE); ``y`` only matters to supervised Ivis.
    """
    return make_embedder(method, **params).fit_transform(x, y)
