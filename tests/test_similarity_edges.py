"""Numerical edge cases of the similarity metrics (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

from kdlens.errors import KdlensError
from kdlens.explain.similarity import cca_r2, linear_cka, svcca


@pytest.mark.parametrize("scale", [1e150, 1e155, 1e-150, 1e-160])
def test_scale_invariance_survives_float64_extremes(scale):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 6)), rng.normal(size=(200, 5))
    y[:, 0] += x[:, 0]
    for metric in (linear_cka, cca_r2, svcca):
        reference = metric(x, y)
        scaled = metric(x * scale, y / scale if scale > 1 else y * scale)
        assert np.isfinite(scaled) and scaled == pytest.approx(reference, rel=1e-9), metric.__name__


def test_cca_with_eps_zero_refuses_representations_that_span_the_samples():
    rng = np.random.default_rng(0)
    wide, other = rng.normal(size=(40, 64)), rng.normal(size=(40, 8))
    with pytest.raises(KdlensError, match=r"N=40.*N > C"):
        cca_r2(wide, other, eps=0.0)
    assert 0.0 < cca_r2(wide, other, eps=1e-2) < 1.0  # ridge CCA is defined
