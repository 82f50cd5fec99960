"""Embedding-space explanation of knowledge distillation (Lee & Wallraven 2021).

* :class:`Ivis` — Ivis in PyTorch (Szubert et al. 2019); ``embed(x, method=…)`` runs Ivis,
  t-SNE (openTSNE), UMAP (umap-learn, optional) or PCA behind one call (:mod:`.methods`).
* :mod:`.knn` — neighbour back-ends (exact torch, Annoy, NN-descent, precomputed).
* :func:`point_activations` — activations at the extraction points A–E of any model (:mod:`.points`).
* :mod:`.quality` — trustworthiness, continuity, kNN preservation, kNN accuracy, distance Spearman.
* :func:`class_area_ratio` — HDR area of each class relative to all points (§5.4);
  :func:`class_density` — one class's KDE and HDR for Fig. 7.
* :func:`superclass_correlation` — output r² within superclasses (§5.2).
* :func:`run_toy_check` — the Fig. 1 quadrant toy and its global-structure scores.

>>> from kdlens.explain.embed import embed, point_activations, embedding_quality
>>> acts = point_activations(model, test_set, points="A,B,C,D,E", n=2000)
>>> y = embed(acts.features["C"], method="ivis", seed=0)
"""

from kdlens.explain.embed.class_area import (
    ClassAreas,
    ClassDensity,
    class_area_ratio,
    class_area_ratios,
    class_density,
    hdr_area,
)
from kdlens.explain.embed.ivis import Ivis, pn_triplet_loss, triplet_loss
from kdlens.explain.embed.knn import (
    KNN_BACKENDS,
    AnnoyKNN,
    ExactKNN,
    KNNIndex,
    Neighbors,
    NNDescentKNN,
    PrecomputedKNN,
    nearest_neighbors,
)
from kdlens.explain.embed.methods import (
    EMBEDDERS,
    PCAEmbedder,
    TSNEEmbedder,
    UMAPEmbedder,
    embed,
    list_methods,
    make_embedder,
)
from kdlens.explain.embed.points import PointActivations, parse_points, point_activations, select_points
from kdlens.explain.embed.quality import (
    continuity,
    distance_spearman,
    embedding_quality,
    knn_classifier_accuracy,
    knn_preservation,
    trustworthiness,
)
from kdlens.explain.embed.superclass import (
    FASHION_MNIST_GROUPS,
    SuperclassCorrelation,
    output_correlation,
    superclass_correlation,
    superclass_owner,
    superclass_groups,
)
from kdlens.explain.embed.toy import ToyResult, global_structure_score, quadrant_toy, run_toy_check

__all__ = [
    "EMBEDDERS",
    "FASHION_MNIST_GROUPS",
    "KNN_BACKENDS",
    "AnnoyKNN",
    "ClassAreas",
    "ClassDensity",
    "ExactKNN",
    "Ivis",
    "KNNIndex",
    "NNDescentKNN",
    "Neighbors",
    "PCAEmbedder",
    "PointActivations",
    "PrecomputedKNN",
    "SuperclassCorrelation",
    "TSNEEmbedder",
    "ToyResult",
    "UMAPEmbedder",
    "class_area_ratio",
    "class_area_ratios",
    "class_density",
    "continuity",
    "distance_spearman",
    "embed",
    "embedding_quality",
    "global_structure_score",
    "hdr_area",
    "knn_classifier_accuracy",
    "knn_preservation",
    "list_methods",
    "make_embedder",
    "nearest_neighbors",
    "output_correlation",
    "parse_points",
    "point_activations",
    "pn_triplet_loss",
    "quadrant_toy",
    "run_toy_check",
    "select_points",
    "superclass_correlation",
    "superclass_owner",
    "superclass_groups",
    "trustworthiness",
    "triplet_loss",
]
