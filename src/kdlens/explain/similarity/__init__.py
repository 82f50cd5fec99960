"""Representation similarity between layers: CKA (linear, RBF, unbiased, minibatch),
HSIC, and CCA-based measures (R²_CCA, SVCCA, PWCCA), plus all-pairs layer matrices.

Pure functions of N×C numpy arrays or torch tensors (N examples, C features — for conv
layers take the spatial mean first, as in PURSUhInT).  All arithmetic is float64.
Bad input (non-finite values, mismatched N, N ≤ C for CCA, …) raises
:class:`kdlens.errors.KdlensError` — a similarity is never NaN.

=====================  =====================================================
``linear_cka``         Kornblith et al. 2019 (feature-space form when N > C)
``rbf_cka``            Kornblith et al. 2019 (σ = fraction of median distance)
``hsic``               Gretton et al. 2005 (biased), Song et al. 2012 (unbiased)
``MinibatchCKA``       Nguyen et al. 2021
``cca_r2``             Yanai's GCD / Kornblith et al. 2019; PURSUhInT
``svcca``              Raghu et al. 2017
``pwcca``              Morcos et al. 2018
``similarity_matrix``  every layer pair, per-layer work done once
=====================  =====================================================
"""

from kdlens.explain.similarity._base import SIMILARITY_METRICS, PairwiseMetric, register_metric
from kdlens.explain.similarity.cca import cca_r2, pwcca, svcca
from kdlens.explain.similarity.cka import MinibatchCKA, linear_cka, rbf_cka
from kdlens.explain.similarity.hsic import hsic, linear_gram, median_pairwise_distance, rbf_gram
from kdlens.explain.similarity.matrix import metric_names, similarity_matrix

__all__ = [
    "linear_cka",
    "rbf_cka",
    "hsic",
    "MinibatchCKA",
    "cca_r2",
    "svcca",
    "pwcca",
    "similarity_matrix",
    "metric_names",
    "linear_gram",
    "rbf_gram",
    "median_pairwise_distance",
    "SIMILARITY_METRICS",
    "PairwiseMetric",
    "register_metric",
]
