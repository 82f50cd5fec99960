"""The distillation objective L = γ·CE + α·L_logit + β·Σ_i L_hint(F(S_i), F(T_i)).

PURSUhInT (Keser et al. 2022), eq. 8: a cross-entropy term on labeled samples, a
response-based (logit) term and a hint term summed over the chosen layer pairs
(F being the method's adapter).  :func:`build_objective` builds one from a method
name such as ``"kd"``, ``"at+kd"`` or ``"crd"`` with the defaults of
:mod:`kdlens.distill.methods`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.distill.losses import LOSSES, create_loss
from kdlens.distill.losses.base import HintLoss, LogitLoss
from kdlens.distill.methods import method_spec
from kdlens.errors import KdlensError, close_matches


def labeled_cross_entropy(logits: Tensor, targets: Tensor | None) -> Tensor:
    """Mean cross-entropy over the samples with a label (target ≥ 0).

    Unlabeled samples (target −1) are excluded from the mean; with no labeled
    sample at all (or ``targets=None``) the result is a graph-connected 0.
    """
    if targets is None:
        return logits.sum() * 0.0
    labeled = targets >= 0
    if not bool(labeled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labeled], targets[labeled])


class Objective(nn.Module):
    r"""L = γ·CE + α·L_logit + β·L_hint  (PURSUhInT, Keser et al. 2022, eq. 8).

    ``logit_loss``: a :class:`LogitLoss` or ``None``; ``hint_loss``: a
    :class:`HintLoss` (already summing over its layer pairs) or ``None``.  Both
    are submodules, so ``objective.parameters()`` holds every learnable adapter
    (regressors, embeddings, connectors) for the optimiser.

    :meth:`forward` returns ``(total, parts)``; ``parts`` holds detached floats
    of the *unweighted* terms ``"ce"``, ``"logit"``, ``"hint"`` (those present)
    and ``"total"``, so that total = γ·ce + α·logit + β·hint.
    """

    def __init__(
        self,
        logit_loss: LogitLoss | None = None,
        hint_loss: HintLoss | None = None,
        gamma: float = 1.0,
        alpha: float = 0.0,
        beta: float = 0.0,
    ) -> None:
        super().__init__()
        if alpha and logit_loss is None:
            raise KdlensError(f"alpha={alpha} weights a logit loss, but none was given")
        if beta and hint_loss is None:
            raise KdlensError(f"beta={beta} weights a hint loss, but none was given")
        if logit_loss is not None and getattr(logit_loss, "kind", None) != "logit":
            raise KdlensError(f"{type(logit_loss).__name__} is not a logit loss")
        if hint_loss is not None and getattr(hint_loss, "kind", None) != "hint":
            raise KdlensError(f"{type(hint_loss).__name__} is not a hint loss")
        self.logit_loss = logit_loss
        self.hint_loss = hint_loss
        self.gamma, self.alpha, self.beta = float(gamma), float(alpha), float(beta)
        #: the method name when built by :func:`build_objective` (for logs)
        self.method: str | None = None

    @property
    def weights(self) -> dict[str, float]:
        return {"gamma": self.gamma, "alpha": self.alpha, "beta": self.beta}

    @property
    def needs_teacher_logits(self) -> bool:
        return self.logit_loss is not None and bool(self.logit_loss.needs_teacher)

    @property
    def needs_features(self) -> bool:
        return self.hint_loss is not None

    @property
    def requires_pretraining(self) -> bool:
        return self.hint_loss is not None and bool(self.hint_loss.requires_pretraining)

    def pretrain_loss(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], **context) -> Tensor:
        """The hint loss's pre-training loss (FitNet stage 1, AB/FSP init, FT paraphraser),
        × β where the loss says ``pretrain_weighted_by_beta`` (AB: its term exists only in
        this phase, so β is its weight there)."""
        if self.hint_loss is None:
            raise KdlensError("this objective has no hint loss, hence no pre-training phase")
        loss = self.hint_loss.pretrain_loss(student_feats, teacher_feats, **context)
        if getattr(self.hint_loss, "pretrain_weighted_by_beta", False):
            loss = self.beta * loss
        return loss

    def main_phase(self) -> Objective:
        """The objective after pre-training: the hint term is dropped where the method uses
        it only as initialisation (AB, FSP, FitNet's two-stage schedule)."""
        if self.hint_loss is None or self.hint_loss.active_in_main_phase:
            return self
        return Objective(self.logit_loss, None, self.gamma, self.alpha, 0.0)

    def pretrain_parameters(self) -> Iterator[nn.Parameter]:
        return self.hint_loss.pretrain_parameters() if self.hint_loss is not None else iter(())

    def forward(
        self,
        student_logits: Tensor,
        targets: Tensor | None,
        teacher_logits: Tensor | None = None,
        student_feats: Sequence[Tensor] = (),
        teacher_feats: Sequence[Tensor] = (),
        **context: Any,
    ) -> tuple[Tensor, dict[str, float]]:
        ce = labeled_cross_entropy(student_logits, targets)
        total = self.gamma * ce
        terms = {"ce": ce}
        if self.logit_loss is not None:
            terms["logit"] = self.logit_loss(student_logits, teacher_logits, targets)
            total = total + self.alpha * terms["logit"]
        if self.hint_loss is not None:
            terms["hint"] = self.hint_loss(list(student_feats), list(teacher_feats), targets=targets, **context)
            total = total + self.beta * terms["hint"]
        parts = {name: float(value.detach()) for name, value in terms.items()}
        parts["total"] = float(total.detach())
        return total, parts

    def extra_repr(self) -> str:
        head = f"method={self.method!r}, " if self.method else ""
        return head + f"gamma={self.gamma}, alpha={self.alpha}, beta={self.beta}"


def _parse_method(method: str) -> list[str]:
    names = [n.strip() for n in method.split("+")]
    if not method.strip() or any(not n for n in names):
        raise KdlensError(f"cannot parse method {method!r}: give names joined by '+', e.g. 'kd' or 'at+kd'")
    if len(set(names)) != len(names):
        raise KdlensError(f"method {method!r} names a loss twice")
    for n in names:
        LOSSES.get(n)  # unknown names raise with close matches
    return names


def _accepted(cls: type) -> set[str]:
    params = inspect.signature(cls.__init__).parameters
    return {p for p in params if p not in ("self", "student_shapes", "teacher_shapes")}


def _route_overrides(names: list[str], overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Send each override to the loss that accepts it.

    ``"<method>.<param>"`` targets one loss explicitly; a plain ``param`` goes to the
    one loss that accepts it (an error if none or both do).
    """
    routed: dict[str, dict[str, Any]] = {n: {} for n in names}
    accepted = {n: _accepted(LOSSES.get(n)) for n in names}
    for key, value in overrides.items():
        if "." in key:
            target, param = key.split(".", 1)
            if target not in routed:
                raise KdlensError(f"override {key!r} names {target!r}, which is not part of {'+'.join(names)}")
            owners = [target] if param in accepted[target] else []
            candidates = accepted[target]
        else:
            param = key
            owners = [n for n in names if param in accepted[n]]
            candidates = set().union(*accepted.values()) | {"gamma", "alpha", "beta"}
        if not owners:
            hint = close_matches(param, sorted(candidates))
            raise KdlensError(
                f"unknown parameter {key!r} for method {'+'.join(names)}."
                + (f" Did you mean: {', '.join(hint)}?" if hint else "")
                + f" Known: {', '.join(sorted(candidates))}"
            )
        if len(owners) > 1:
            raise KdlensError(
                f"parameter {key!r} is accepted by {' and '.join(owners)}; write e.g. '{owners[0]}.{param}'"
            )
        routed[owners[0]][param] = value
    return routed


def build_objective(
    method: str,
    student_shapes: Sequence[Sequence[int]] | None = None,
    teacher_shapes: Sequence[Sequence[int]] | None = None,
    **overrides: Any,
) -> Objective:
    """Build the :class:`Objective` for a method name.

    ``method``: one loss name (``"kd"``, ``"crd"``) or a hint and a logit loss joined
    by ``+`` in either order (``"at+kd"``, ``"fitnet+kd"``, ``"crd+skd"``).

    Default weights come from :data:`kdlens.distill.methods.METHODS`:

    * a logit method alone: its γ and α, β = 0 (KD: γ = 0.1, α = 0.9);
    * a hint method alone: its γ and β, α = 0 (AT: γ = 1, β = 1000);
    * ``hint+logit``: γ and α of the logit method, β of the hint method
      (``at+kd``: γ = 0.1, α = 0.9, β = 1000).  Note that RepDistiller's
      "CRD+KD" runs used γ = 1, α = 1 instead; pass them as overrides.

    ``overrides``: ``gamma``, ``alpha``, ``beta`` and any constructor parameter
    of the losses (``T=2``, ``p=2``, ``n_data=50000``), routed to the loss that
    accepts it; ``"kd.T"`` style keys (via ``**{"kd.T": 2}``) disambiguate.
    Hint methods need ``student_shapes`` and ``teacher_shapes``.
    """
    names = _parse_method(method)
    kinds = {n: LOSSES.get(n).kind for n in names}
    logit_names = [n for n in names if kinds[n] == "logit"]
    hint_names = [n for n in names if kinds[n] == "hint"]
    if len(logit_names) > 1 or len(hint_names) > 1:
        raise KdlensError(
            f"method {method!r}: combine at most one logit loss and one hint loss "
            f"(logit: {', '.join(logit_names) or '-'}; hint: {', '.join(hint_names) or '-'})"
        )
    overrides = dict(overrides)
    weights = {k: overrides.pop(k) for k in ("gamma", "alpha", "beta") if k in overrides}
    routed = _route_overrides(names, overrides)

    logit_loss = hint_loss = None
    gamma, alpha, beta = 1.0, 0.0, 0.0
    if hint_names:
        (h,) = hint_names
        spec = method_spec(h)
        gamma, beta = spec.gamma, spec.beta
        if student_shapes is None or teacher_shapes is None:
            raise KdlensError(f"method {h!r} is a hint method: give student_shapes and teacher_shapes")
        hint_loss = create_loss(h, student_shapes, teacher_shapes, **routed[h])
    if logit_names:
        (lg,) = logit_names
        spec = method_spec(lg)
        gamma, alpha = spec.gamma, spec.alpha
        logit_loss = create_loss(lg, **routed[lg])
    weights = {"gamma": gamma, "alpha": alpha, "beta": beta} | weights
    objective = Objective(logit_loss, hint_loss, **{k: float(v) for k, v in weights.items()})
    objective.method = "+".join(names)
    return objective


__all__ = ["Objective", "build_objective", "labeled_cross_entropy"]

