"""The layer-similarity heatmap writes a PNG (Agg, no display needed)."""

from __future__ import annotations

import numpy as np
import pytest

from kdlens.errors import KdlensError
from kdlens.explain.hints import select_hint_points
from kdlens.figures.similarity import plot_similarity_heatmap

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def banded(L=20):
    i = np.arange(L)
    return np.exp(-np.abs(i[:, None] - i[None, :]) / 4.0)


def test_heatmap_with_selection_writes_png(tmp_path):
    S = banded()
    sel = select_hint_points(S, 3, names=[f"block{i}" for i in range(20)])
    path = tmp_path / "fig" / "similarity.png"
    fig = plot_similarity_heatmap(S, sel, title="teacher CKA", path=path)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(i) for i in sel.indices_1based]
    assert ax.get_title() == "teacher CKA"
    # two cluster boundaries × (horizontal + vertical)
    assert len(ax.lines) == 4


def test_heatmap_without_selection(tmp_path):
    path = tmp_path / "plain.png"
    fig = plot_similarity_heatmap(banded(8), path=path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert fig.axes


def test_heatmap_mismatched_selection_is_an_error():
    sel = select_hint_points(banded(10), 2)
    with pytest.raises(KdlensError, match="10 layers"):
        plot_similarity_heatmap(banded(12), sel)
