"""The distillation objective L = γ·CE + Σ_i α_i·L_logit,i + Σ_j β_j·L_hint,j.

PURSUhInT (Keser et al. 2022), eq. 8: a cross-entropy term on labeled samples, a
response-based (logit) term and a hint term summed over the chosen layer pairs
(F being the method's adapter) — generalised to any number of logit and hint terms,
each hint term with its own layers (PURSUhInT Table 5's ``crd+at+kd``: CRD on the
penultimate features, AT at the hint points, KD on the logits).
:func:`build_objective` builds one from a method name such as ``"kd"``, ``"at+kd"``,
``"crd"`` or ``"crd+at+kd"`` with the defaults of :mod:`kdlens.distill.methods`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.distill.losses import LOSSES, create_loss
from kdlens.distill.losses.base import HintLoss, LogitLoss
from kdlens.distill.methods import method_spec
from kdlens.errors import KdlensError, close_matches, unknown_name


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


@dataclass
class Term:
    """One distillation term of an :class:`Objective`: ``weight · loss(...)``.

    ``kind`` is the loss's (``"logit"`` or ``"hint"``).  A hint term reads
    ``student_feats[student]`` and ``teacher_feats[teacher]``: its slices of the feature
    lists the loop extracts (the concatenation of every hint term's layers, in order).
    """

    name: str
    loss: nn.Module
    weight: float
    student: slice = field(default_factory=lambda: slice(None))
    teacher: slice = field(default_factory=lambda: slice(None))

    @property
    def kind(self) -> str:
        return self.loss.kind

    def __post_init__(self) -> None:
        kind = getattr(self.loss, "kind", None)
        if kind not in ("logit", "hint"):
            raise KdlensError(f"term {self.name!r}: {type(self.loss).__name__} is neither a logit nor a hint loss")
        self.weight = float(self.weight)


class Objective(nn.Module):
    r"""L = γ·CE + Σ_i α_i·L_logit,i + Σ_j β_j·L_hint,j  (PURSUhInT, Keser et al. 2022,
    eq. 8, with any number of terms; issue 16).

    Two ways to build one:

    * ``Objective(logit_loss, hint_loss, gamma, alpha, beta)`` — at most one loss of
      each kind (a :class:`LogitLoss`, a :class:`HintLoss` already summing over its
      layer pairs, or ``None``), as before;
    * ``Objective(terms=[Term("kd", kd, 0.9), Term("at", at, 1000.0, slice(0, 3),
      slice(0, 3)), …], gamma=0.1)`` — any number of terms; each hint term reads its
      own slice of the feature lists.

    Every loss is a submodule, so ``objective.parameters()`` holds every learnable
    adapter (regressors, embeddings, connectors) for the optimiser; logit terms come
    before hint terms, in order.

    :meth:`forward` returns ``(total, parts)``; ``parts`` holds detached floats of the
    *unweighted* terms: ``"ce"``, ``"logit"`` (the sum of the logit terms), ``"hint"``
    (the sum of the hint terms), ``"total"``, and — when some kind has more than one
    term — each term as ``"logit.<name>"`` / ``"hint.<name>"``; total = γ·ce + Σ
    weight·term.  ``alpha`` / ``beta`` / ``logit_loss`` / ``hint_loss`` are the weight
    and loss of the single term of that kind (0.0 / ``None`` without one; an error
    with several: see :attr:`terms` and :attr:`term_weights`).
    """

    def __init__(
        self,
        logit_loss: LogitLoss | None = None,
        hint_loss: HintLoss | None = None,
        gamma: float = 1.0,
        alpha: float = 0.0,
        beta: float = 0.0,
        *,
        terms: Sequence[Term] | None = None,
        per_term_parts: bool | None = None,
    ) -> None:
        super().__init__()
        if terms is not None:
            if logit_loss is not None or hint_loss is not None or alpha or beta:
                raise KdlensError("Objective: give either terms=[…] or logit_loss/hint_loss with alpha/beta, not both")
            terms = list(terms)
        else:
            if alpha and logit_loss is None:
                raise KdlensError(f"alpha={alpha} weights a logit loss, but none was given")
            if beta and hint_loss is None:
                raise KdlensError(f"beta={beta} weights a hint loss, but none was given")
            if logit_loss is not None and getattr(logit_loss, "kind", None) != "logit":
                raise KdlensError(f"{type(logit_loss).__name__} is not a logit loss")
            if hint_loss is not None and getattr(hint_loss, "kind", None) != "hint":
                raise KdlensError(f"{type(hint_loss).__name__} is not a hint loss")
            terms = []
            if logit_loss is not None:
                terms.append(Term(getattr(logit_loss, "name", "") or "logit", logit_loss, alpha))
            if hint_loss is not None:
                terms.append(Term(getattr(hint_loss, "name", "") or "hint", hint_loss, beta))
        names = [t.name for t in terms]
        if len(set(names)) != len(names) or any(not n or "." in n for n in names):
            raise KdlensError(f"Objective: term names must be unique, non-empty and without '.'; got {names}")
        # logit terms first, then hint terms (the order the terms are summed and registered in)
        self.terms: list[Term] = [t for t in terms if t.kind == "logit"] + [t for t in terms if t.kind == "hint"]
        self.logit_terms = nn.ModuleDict({t.name: t.loss for t in self.terms if t.kind == "logit"})
        self.hint_terms = nn.ModuleDict({t.name: t.loss for t in self.terms if t.kind == "hint"})
        self.gamma = float(gamma)
        if per_term_parts is None:
            per_term_parts = len(self.logit_terms) > 1 or len(self.hint_terms) > 1
        self.per_term_parts = bool(per_term_parts)
        #: the method name when built by :func:`build_objective` (for logs)
        self.method: str | None = None
        self.register_load_state_dict_pre_hook(_single_term_keys)

    # -- the terms -----------------------------------------------------------------
    def _of_kind(self, kind: str) -> list[Term]:
        return [t for t in self.terms if t.kind == kind]

    def _single(self, kind: str, what: str) -> Term | None:
        found = self._of_kind(kind)
        if len(found) > 1:
            raise KdlensError(
                f"this objective has {len(found)} {kind} terms ({', '.join(t.name for t in found)}), so {what} "
                "is ambiguous: use objective.terms / objective.term_weights"
            )
        return found[0] if found else None

    def term(self, name: str) -> Term:
        for t in self.terms:
            if t.name == name:
                return t
        raise unknown_name("objective term", name, [t.name for t in self.terms])

    @property
    def term_weights(self) -> dict[str, float]:
        """Each term's weight by name (logit terms first)."""
        return {t.name: t.weight for t in self.terms}

    def set_weight(self, name: str, weight: float) -> None:
        self.term(name).weight = float(weight)

    @property
    def hint_names(self) -> list[str]:
        """The hint terms in the order their layers are concatenated in the feature lists."""
        return [t.name for t in self._of_kind("hint")]

    @property
    def logit_loss(self) -> LogitLoss | None:
        term = self._single("logit", "logit_loss")
        return None if term is None else term.loss

    @property
    def hint_loss(self) -> HintLoss | None:
        term = self._single("hint", "hint_loss")
        return None if term is None else term.loss

    @property
    def alpha(self) -> float:
        term = self._single("logit", "alpha")
        return 0.0 if term is None else term.weight

    @alpha.setter
    def alpha(self, value: float) -> None:
        term = self._single("logit", "alpha")
        if term is None:
            raise KdlensError(f"alpha={value} weights a logit loss, but this objective has none")
        term.weight = float(value)

    @property
    def beta(self) -> float:
        term = self._single("hint", "beta")
        return 0.0 if term is None else term.weight

    @beta.setter
    def beta(self, value: float) -> None:
        term = self._single("hint", "beta")
        if term is None:
            raise KdlensError(f"beta={value} weights a hint loss, but this objective has none")
        term.weight = float(value)

    @property
    def weights(self) -> dict[str, float]:
        """``{"gamma", "alpha", "beta"}`` with at most one term of each kind (as before);
        otherwise ``{"gamma": γ, <term name>: weight, …}``."""
        if len(self.logit_terms) <= 1 and len(self.hint_terms) <= 1:
            return {"gamma": self.gamma, "alpha": self.alpha, "beta": self.beta}
        return {"gamma": self.gamma, **self.term_weights}

    @property
    def needs_teacher_logits(self) -> bool:
        return any(bool(t.loss.needs_teacher) for t in self._of_kind("logit"))

    @property
    def needs_features(self) -> bool:
        return bool(self.hint_terms)

    # -- phases --------------------------------------------------------------------
    def _pretraining_terms(self) -> list[Term]:
        return [t for t in self._of_kind("hint") if bool(t.loss.requires_pretraining)]

    @property
    def requires_pretraining(self) -> bool:
        return bool(self._pretraining_terms())

    def pretrain_loss(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], **context) -> Tensor:
        """The hint terms' pre-training losses (FitNet stage 1, AB/FSP init, FT paraphraser),
        summed over the terms that have one; each × its weight β where the loss says
        ``pretrain_weighted_by_beta`` (AB: its term exists only in this phase, so β is its
        weight there)."""
        hints = self._of_kind("hint")
        if not hints:
            raise KdlensError("this objective has no hint loss, hence no pre-training phase")
        terms = self._pretraining_terms() or (hints if len(hints) == 1 else [])
        if not terms:  # one term: its own error; several: say which
            raise KdlensError(f"none of the hint losses {', '.join(self.hint_names)} has a pre-training phase")
        student_feats, teacher_feats = list(student_feats), list(teacher_feats)
        total = None
        for t in terms:
            loss = t.loss.pretrain_loss(student_feats[t.student], teacher_feats[t.teacher], **context)
            if getattr(t.loss, "pretrain_weighted_by_beta", False):
                loss = t.weight * loss
            total = loss if total is None else total + loss
        return total

    def main_phase(self) -> Objective:
        """The objective after pre-training: hint terms are dropped where the method uses
        them only as initialisation (AB, FSP, FitNet's two-stage schedule)."""
        kept = [t for t in self.terms if t.kind == "logit" or t.loss.active_in_main_phase]
        if len(kept) == len(self.terms):
            return self
        main = Objective(terms=[replace(t) for t in kept], gamma=self.gamma, per_term_parts=self.per_term_parts)
        main.method = self.method
        return main

    def pretrain_parameters(self) -> Iterator[nn.Parameter]:
        return chain.from_iterable(t.loss.pretrain_parameters() for t in self._pretraining_terms())

    # -- the loss ------------------------------------------------------------------
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
        parts = {"ce": float(ce.detach())}
        student_feats, teacher_feats = list(student_feats), list(teacher_feats)
        for t in self.terms:
            if t.kind == "logit":
                value = t.loss(student_logits, teacher_logits, targets)
            else:
                value = t.loss(student_feats[t.student], teacher_feats[t.teacher], targets=targets, **context)
            total = total + t.weight * value
            v = float(value.detach())
            parts[t.kind] = parts.get(t.kind, 0.0) + v
            if self.per_term_parts:
                parts[f"{t.kind}.{t.name}"] = v
        parts["total"] = float(total.detach())
        return total, parts

    def extra_repr(self) -> str:
        head = f"method={self.method!r}, " if self.method else ""
        if len(self.logit_terms) <= 1 and len(self.hint_terms) <= 1:
            return head + f"gamma={self.gamma}, alpha={self.alpha}, beta={self.beta}"
        return head + f"gamma={self.gamma}, " + ", ".join(f"{n}={w}" for n, w in self.term_weights.items())


def _single_term_keys(module: Objective, state_dict, prefix, *_args) -> None:
    """Checkpoints written before terms (``logit_loss.*`` / ``hint_loss.*``) load into the
    single term of that kind."""
    for kind in ("logit", "hint"):
        names = [t.name for t in module.terms if t.kind == kind]
        old = f"{prefix}{kind}_loss."
        for key in [k for k in state_dict if k.startswith(old)]:
            if len(names) == 1:
                state_dict[f"{prefix}{kind}_terms.{names[0]}." + key[len(old):]] = state_dict.pop(key)


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


def _flatten_nested(names: list[str], overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"kd": {"T": 2}}`` (from ``loss.kd.T=2``) → ``{"kd.T": 2}``."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in names and isinstance(value, Mapping):
            flat.update({f"{key}.{param}": v for param, v in value.items()})
        else:
            flat[key] = value
    return flat


def _term_weights(
    names: list[str], kinds: dict[str, str], given: dict[str, Any], weights: Mapping[str, Any] | None
) -> tuple[float, dict[str, float]]:
    """γ and each term's weight: the method table's defaults, then ``alpha`` / ``beta`` (the
    single term of their kind), then ``weights`` by term name."""
    logit = [n for n in names if kinds[n] == "logit"]
    hint = [n for n in names if kinds[n] == "hint"]
    first = (logit or hint)[0]
    gamma = method_spec(first).gamma
    per_term = {n: (method_spec(n).alpha if kinds[n] == "logit" else method_spec(n).beta) for n in names}
    set_by: dict[str, str] = {}
    for key, of_kind, kind in (("alpha", logit, "logit"), ("beta", hint, "hint")):
        if key not in given:
            continue
        if len(of_kind) > 1:
            raise KdlensError(
                f"{key}={given[key]} is ambiguous: method {'+'.join(names)} has {len(of_kind)} {kind} terms "
                f"({', '.join(of_kind)}); give per-term weights, e.g. weights.{of_kind[0]}=… (config "
                f"'weights: {{{', '.join(f'{n}: …' for n in of_kind)}}}')"
            )
        if not of_kind:
            if float(given[key]):
                raise KdlensError(f"{key}={given[key]} weights a {kind} loss, but method {'+'.join(names)} has none")
            continue
        per_term[of_kind[0]] = float(given[key])
        set_by[of_kind[0]] = key
    for name, value in dict(weights or {}).items():
        if name not in per_term:
            alias = " (the cross-entropy weight is gamma)" if name in ("ce", "gamma") else ""
            hint_ = close_matches(name, names)
            raise KdlensError(
                f"weights.{name}: {name!r} is not a term of method {'+'.join(names)}{alias}."
                + (f" Did you mean: {', '.join(hint_)}?" if hint_ else "")
                + f" Terms: {', '.join(names)}"
            )
        if name in set_by:
            raise KdlensError(f"both {set_by[name]} and weights.{name} weight the {name} term: give one")
        if float(value) < 0:
            raise KdlensError(f"weights.{name} must be >= 0, got {value}")
        per_term[name] = float(value)
    if "gamma" in given:
        gamma = given["gamma"]
    return float(gamma), per_term


def _shapes_by_term(
    hint_names: list[str], shapes: Any, role: str
) -> dict[str, Sequence[Sequence[int]]]:
    if shapes is None:
        which = " and ".join(repr(n) for n in hint_names)
        raise KdlensError(
            f"method {which} {'is a hint method' if len(hint_names) == 1 else 'are hint methods'}: "
            "give student_shapes and teacher_shapes"
        )
    if isinstance(shapes, Mapping):
        missing = [n for n in hint_names if n not in shapes]
        extra = [n for n in shapes if n not in hint_names]
        if missing or extra:
            raise KdlensError(
                f"{role}_shapes by term: missing {missing or '-'}, not hint terms {extra or '-'} "
                f"(hint terms: {', '.join(hint_names)})"
            )
        return {n: shapes[n] for n in hint_names}
    if len(hint_names) > 1:
        raise KdlensError(
            f"{len(hint_names)} hint terms ({', '.join(hint_names)}) each have their own layers: give "
            f"{role}_shapes as a mapping {{term name: shapes}}"
        )
    return {hint_names[0]: shapes}


def build_objective(
    method: str,
    student_shapes: Sequence[Sequence[int]] | Mapping[str, Sequence[Sequence[int]]] | None = None,
    teacher_shapes: Sequence[Sequence[int]] | Mapping[str, Sequence[Sequence[int]]] | None = None,
    *,
    weights: Mapping[str, float] | None = None,
    **overrides: Any,
) -> Objective:
    """Build the :class:`Objective` for a method name.

    ``method``: loss names joined by ``+``, any number of each kind, in any order
    (``"kd"``, ``"crd"``, ``"at+kd"``, ``"crd+at+kd"``); each name at most once.

    Default weights come from :data:`kdlens.distill.methods.METHODS`: each logit term
    its method's α, each hint term its method's β, and γ that of the first logit
    method named (of the first hint method without one):

    * a logit method alone: its γ and α (KD: γ = 0.1, α = 0.9);
    * a hint method alone: its γ and β (AT: γ = 1, β = 1000);
    * ``hint+logit``: γ and α of the logit method, β of the hint method
      (``at+kd``: γ = 0.1, α = 0.9, β = 1000).  Note that RepDistiller's
      "CRD+KD" runs used γ = 1, α = 1 instead; pass them as overrides;
    * ``crd+at+kd``: γ = 0.1, KD 0.9, CRD 0.8, AT 1000.

    ``gamma`` weights the cross-entropy; ``alpha`` / ``beta`` the single logit / hint
    term (an error when there are several); ``weights={"crd": 0.8, "at": 1000}`` any
    term by name.  Other ``overrides`` are constructor parameters of the losses (``T=2``,
    ``p=2``, ``n_data=50000``), routed to the loss that accepts it; ``"kd.T"`` style
    keys (via ``**{"kd.T": 2}``) or ``kd={"T": 2}`` disambiguate.

    Hint methods need ``student_shapes`` and ``teacher_shapes``: per-sample shapes of the
    layers, a list for a single hint term or a mapping ``{term name: list}`` (required
    with several).  The loop's feature lists are then the concatenation of the hint
    terms' layers in :attr:`Objective.hint_names` order (method order).
    """
    names = _parse_method(method)
    kinds = {n: LOSSES.get(n).kind for n in names}
    hint_names = [n for n in names if kinds[n] == "hint"]
    overrides = _flatten_nested(names, dict(overrides))
    given = {k: overrides.pop(k) for k in ("gamma", "alpha", "beta") if k in overrides}
    routed = _route_overrides(names, overrides)
    gamma, per_term = _term_weights(names, kinds, given, weights)

    s_by = _shapes_by_term(hint_names, student_shapes, "student") if hint_names else {}
    t_by = _shapes_by_term(hint_names, teacher_shapes, "teacher") if hint_names else {}
    single = len(hint_names) == 1 and not isinstance(student_shapes, Mapping)
    terms: list[Term] = []
    s_at = t_at = 0
    for n in names:
        if kinds[n] == "logit":
            terms.append(Term(n, create_loss(n, **routed[n]), per_term[n]))
            continue
        loss = create_loss(n, s_by[n], t_by[n], **routed[n])
        if single:
            terms.append(Term(n, loss, per_term[n]))
            continue
        ns, nt = len(s_by[n]), len(t_by[n])
        terms.append(Term(n, loss, per_term[n], slice(s_at, s_at + ns), slice(t_at, t_at + nt)))
        s_at, t_at = s_at + ns, t_at + nt
    objective = Objective(terms=terms, gamma=gamma)
    objective.method = "+".join(names)
    return objective


__all__ = ["Objective", "Term", "build_objective", "labeled_cross_entropy"]

