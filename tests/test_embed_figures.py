"""Embedding figures write PNGs (Agg) and check their input."""

from __future__ import annotations

import numpy as np
import pytest

from kdlens.errors import KdlensError
from kdlens.explain.embed import class_density
from kdlens.explain.embed.toy import ToyResult
from kdlens.figures.embed import (
    plot_class_area_boxplots,
    plot_class_density,
    plot_embedding_grid,
    plot_ivis_loss,
    plot_toy_check,
)

PNG = b"\x89PNG\r\n\x1a\n"


def emb(seed=0, n=90):
    rng = np.random.default_rng(seed)
    lab = np.arange(n) % 3
    return rng.normal(size=(n, 2)) + lab[:, None] * 3, lab


def test_grid_ud_vs_d(tmp_path):
    e, lab = emb()
    fig = plot_embedding_grid({"UD": {"A": e, "E": e}, "D": {"A": e, "E": e}}, lab, ["a", "b", "c"],
                              path=tmp_path / "grid.png")
    assert (tmp_path / "grid.png").read_bytes()[:8] == PNG
    assert len([ax for ax in fig.axes if ax.has_data()]) == 4
    with pytest.raises(KdlensError, match="shape"):
        plot_embedding_grid({"UD": {"A": e[:10]}}, lab)


def test_boxplots_density_loss_toy(tmp_path):
    plot_class_area_boxplots({"UD": {"A": [0.3, 0.4, 0.5], "B": [0.2, 0.3]}, "D": {"A": [0.2, 0.25], "B": [0.1, np.nan]}},
                             path=tmp_path / "box.png")
    e, lab = emb()
    dens = class_density(e, lab, 1)
    assert dens.region.shape == dens.density.shape == (128, 128) and 0 < dens.ratio < 1
    fig = plot_class_density(e, dens, class_name="Trouser", path=tmp_path / "dens.png")
    assert "Trouser" in fig.axes[0].get_title() and f"{dens.ratio:.3f}" in fig.axes[0].get_title()
    plot_ivis_loss({"UD": {"A": [0.1, 0.12], "B": 0.08}, "D": {"A": 0.09, "B": 0.07}}, path=tmp_path / "loss.png")
    res = {"tsne": ToyResult("tsne", e, 0.5, 0.9, True)}
    plot_toy_check(res, e, lab % 4, path=tmp_path / "toy.png")
    for name in ("box.png", "dens.png", "loss.png", "toy.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    with pytest.raises(KdlensError, match="no points"):
        class_density(e, lab, 7)
