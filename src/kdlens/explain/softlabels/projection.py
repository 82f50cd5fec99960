"""Penultimate-layer projection onto the plane of three class templates (Müller, Kornblith &
Hinton 2019, *When does label smoothing help?*, NeurIPS, §2; used by Vats 2021 §4.7).

The logit of class ``k`` is ``x·w_k + b_k`` with ``x`` the penultimate activations and
``w_k`` the ``k``-th row of the classifier's weight: ``w_k`` is the class's **template**
(``‖x − w_k‖² = xᵀx − 2xᵀw_k + w_kᵀw_k``, so a larger logit means ``x`` is closer to the
template, up to terms that do not depend on ``k``). Müller et al. visualise an embedding by
(i) picking three classes, (ii) finding an orthonormal basis of the plane through those three
templates and (iii) projecting the penultimate activations of the three classes' examples
onto that plane. Label smoothing makes each class a tight cluster equidistant from the other
templates; a KD teacher keeps spread-out clusters that carry similarity information.

Exact construction used here (:class:`TemplateProjection`), for classes ``(a, b, c)`` with
templates ``t_a, t_b, t_c ∈ R^D``:

1. origin ``o = (t_a + t_b + t_c)/3`` (the centroid: the plane is affine, through the three
   template points, not through 0);
2. ``u₁ = t_b − t_a``, ``u₂ = t_c − t_a`` span the plane's directions; Gram–Schmidt gives
   ``e₁ = u₁/‖u₁‖`` and ``e₂ = v/‖v‖`` with ``v = u₂ − (u₂·e₁)e₁`` (a :class:`KdlensError` if
   the templates are collinear, ``‖v‖ ≈ 0``); computed in float64;
3. an activation ``x`` maps to ``((x − o)·e₁, (x − o)·e₂)``, the coordinates of its
   orthogonal projection onto the plane. A point at a template maps to that template's 2-D
   position (``template_coords_``); the three positions keep the templates' pairwise distances.

``include_bias=True`` uses the affine templates ``[w_k, b_k]`` and activations ``[x, 1]``
(folding the bias into the template, a variant); the default uses the weight rows only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from kdlens.errors import KdlensError

__all__ = ["TemplateProjection", "classifier_layer", "penultimate_activations"]


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The model's classifier: the module named ``fc`` if it is an ``nn.Linear``, else its last ``nn.Linear``."""
    modules = dict(model.named_modules())
    if isinstance(modules.get("fc"), nn.Linear):
        return modules["fc"]  # type: ignore[return-value]
    linears = [m for m in modules.values() if isinstance(m, nn.Linear)]
    if not linears:
        raise KdlensError(f"{type(model).__name__} has no nn.Linear classifier to take templates from")
    return linears[-1]


@torch.no_grad()
def penultimate_activations(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """The ``"penultimate"`` tap (the classifier's input) of ``model`` for inputs ``x``, in eval
    mode, as a float64 ``N×D`` array (:func:`kdlens.models.extract_features`)."""
    from kdlens.models import extract_features

    was = model.training
    model.eval()
    try:
        out = [extract_features(model, x[i : i + batch_size], ["penultimate"])["penultimate"].flatten(1).double().cpu()
               for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


class TemplateProjection:
    """Project penultimate activations onto the plane through three class templates.

    Hyper-parameters: ``classes`` (three distinct class ids), ``include_bias``.
    Learned state (after :meth:`fit`): ``templates_`` (3×D), ``origin_`` (D), ``basis_``
    (2×D, orthonormal rows), ``template_coords_`` (3×2). See the module docstring for the
    construction (Müller et al. 2019).
    """

    def __init__(self, classes: Sequence[int], include_bias: bool = False) -> None:
        self.classes = tuple(int(c) for c in classes)
        self.include_bias = include_bias
        if len(self.classes) != 3 or len(set(self.classes)) != 3:
            raise KdlensError(f"projection needs three distinct classes, got {list(classes)}")

    def fit(self, weight: Any, bias: Any = None) -> TemplateProjection:
        """Templates from a ``K×D`` weight (and bias) matrix, an ``nn.Linear`` or a model."""
        if isinstance(weight, nn.Module):
            layer = weight if isinstance(weight, nn.Linear) else classifier_layer(weight)
            weight, bias = layer.weight, layer.bias if bias is None else bias
        w = _array(weight)
        if w.ndim != 2:
            raise KdlensError(f"classifier weight must be K×D, got shape {w.shape}")
        k = w.shape[0]
        bad = [c for c in self.classes if not 0 <= c < k]
        if bad:
            raise KdlensError(f"unknown class id(s) {bad}: the classifier has classes 0..{k - 1}")
        if self.include_bias:
            b = np.zeros(k) if bias is None else _array(bias).reshape(k)
            w = np.concatenate([w, b[:, None]], axis=1)
        t = w[list(self.classes)]
        origin = t.mean(0)
        u1, u2 = t[1] - t[0], t[2] - t[0]
        n1 = np.linalg.norm(u1)
        if n1 <= 1e-12 * max(1.0, np.abs(t).max()):
            raise KdlensError(f"templates of classes {self.classes[0]} and {self.classes[1]} coincide; no plane")
        e1 = u1 / n1
        v = u2 - (u2 @ e1) * e1
        nv = np.linalg.norm(v)
        if nv <= 1e-9 * max(1.0, np.linalg.norm(u2)):
            raise KdlensError(f"templates of classes {self.classes} are collinear; they span no plane")
        self.templates_ = t
        self.origin_ = origin
        self.basis_ = np.stack([e1, v / nv])
        self.template_coords_ = (t - origin) @ self.basis_.T
        return self

    def transform(self, activations: Any) -> np.ndarray:
        """``N×2`` plane coordinates of ``N×D`` activations."""
        if not hasattr(self, "basis_"):
            raise KdlensError("TemplateProjection is not fitted: call fit(classifier weight) first")
        x = _array(activations)
        if x.ndim != 2:
            raise KdlensError(f"activations must be N×D, got shape {x.shape}")
        if self.include_bias:
            x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
        if x.shape[1] != self.basis_.shape[1]:
            raise KdlensError(
                f"activations have {x.shape[1] - int(self.include_bias)} features but the templates "
                f"{self.basis_.shape[1] - int(self.include_bias)}; use the layer feeding the classifier"
            )
        return (x - self.origin_) @ self.basis_.T

    def fit_transform(self, weight: Any, activations: Any, bias: Any = None) -> np.ndarray:
        return self.fit(weight, bias).transform(activations)


def _array(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)
