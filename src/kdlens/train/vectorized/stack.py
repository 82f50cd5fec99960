"""The stack: :class:`StackedStudents`, ``S`` students of one architecture with stacked
parameters and buffers, run by the ``grouped`` backend (layers of :mod:`.grouped`) or the
``vmap`` backend (:func:`torch.func.vmap`), checked against each student's own output once at
construction."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from kdlens.errors import KdlensError
from kdlens.train.vectorized.grouped import _build_grouped, _StackContext
from kdlens.train.vectorized.weighted_bn import _swap_batch_norms


class StackedStudents:
    """``S`` students of one architecture with stacked parameters and buffers.

    ``forward(x, sample_weight)``: ``x`` is one batch shared by all students (``B×C×H×W``) or
    one batch per student (``S×B×C×H×W``); ``sample_weight`` ``S×B`` (or ``None``) selects the
    samples batch norm uses in training mode. Returns logits ``S×B×K``.
    :attr:`params` / :attr:`buffers` map the template's names to ``S×…`` tensors.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        backend: Literal["grouped", "vmap"] = "grouped",
        example_input: Tensor | None = None,
        check_atol: float = 1e-4,
    ) -> None:
        if not models:
            raise KdlensError("a stack needs at least one student")
        if backend not in ("grouped", "vmap"):
            raise KdlensError(f"unknown stacking backend {backend!r}; use 'grouped' or 'vmap'")
        names = [tuple(n for n, _ in m.named_parameters()) for m in models]
        if any(n != names[0] for n in names):
            raise KdlensError("all students of a stack must have the same architecture")
        self.num_students = len(models)
        self.backend = backend
        #: grouped backend: feed the stack channels-last tensors (oneDNN's preferred layout on CPUs)
        self.channels_last = False
        self.template = copy.deepcopy(models[0]).cpu()
        self.ctx = _StackContext(self.num_students)
        self.training = True
        if backend == "grouped":
            self.module = _build_grouped(models, self.ctx)
            self.params = dict(self.module.named_parameters())
            self.buffers = dict(self.module.named_buffers())
        else:
            from torch.func import stack_module_state

            base = copy.deepcopy(models[0])
            self._weighted_bns = _swap_batch_norms(base)
            self.module = base.to("meta")
            params, buffers = stack_module_state(list(models))
            self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
            self.buffers = {k: v.detach().clone() for k, v in buffers.items()}
        if example_input is not None:
            self._check(models, example_input, check_atol)

    # -- modes and devices ---------------------------------------------------------
    def train(self, mode: bool = True) -> StackedStudents:
        self.training = mode
        self.module.train(mode)
        return self

    def eval(self) -> StackedStudents:
        return self.train(False)

    def to(self, device: torch.device | str) -> StackedStudents:
        if self.backend == "grouped":
            self.module.to(device)
            self.params = dict(self.module.named_parameters())
            self.buffers = dict(self.module.named_buffers())
        else:
            self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in self.params.items()}
            self.buffers = {k: v.to(device) for k, v in self.buffers.items()}
        return self

    def parameters(self) -> list[Tensor]:
        return list(self.params.values())

    # -- forward ------------------------------------------------------------------
    def __call__(self, x: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        return self.forward(x, sample_weight)

    def forward(self, x: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        s = self.num_students
        per_student = x.dim() >= 2 and x.shape[0] == s and x.dim() == 5
        if self.backend == "grouped":
            if per_student:
                x = x.transpose(0, 1).flatten(1, 2)  # B×(S·C)×H×W
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            self.ctx.shared_input = None if per_student else x
            self.ctx.sample_weight = sample_weight if self.training else None
            try:
                out = self.module(x)
            finally:
                self.ctx.shared_input = None
                self.ctx.sample_weight = None
            if out.dim() == 2:  # a model whose output never met a stacked Linear (shared)
                out = out.unsqueeze(0).expand(s, *out.shape)
            return out
        return self._vmap_forward(x, sample_weight, per_student)

    def _vmap_forward(self, x: Tensor, w: Tensor | None, per_student: bool) -> Tensor:
        from torch.func import functional_call, vmap

        module, bns = self.module, self._weighted_bns

        def one(params: dict, buffers: dict, w_s: Tensor | None, x_s: Tensor) -> Tensor:
            for bn in bns:
                bn.sample_weight = w_s if self.training else None
            try:
                return functional_call(module, (params, buffers), (x_s,))
            finally:
                for bn in bns:
                    bn.sample_weight = None

        in_dims = (0, 0, None if w is None else 0, 0 if per_student else None)
        return vmap(one, in_dims=in_dims, randomness="different")(self.params, self.buffers, w, x)

    # -- students -----------------------------------------------------------------
    def student_state_dict(self, i: int) -> dict[str, Tensor]:
        """Student ``i``'s state dict in the template's layout (CPU tensors)."""
        state = {**self.params, **self.buffers}
        own = self.template.state_dict()
        out = {}
        for key in own:
            if key in state:
                out[key] = state[key][i].detach().cpu().clone()
            else:  # a grouped BN swapped from SampleWeightedBatchNorm etc. keeps names; be strict
                raise KdlensError(f"stack lost tensor {key!r}")
        return out

    def student(self, i: int) -> nn.Module:
        """Student ``i`` as an ordinary module (a copy of the template with its weights)."""
        model = copy.deepcopy(self.template)
        model.load_state_dict(self.student_state_dict(i))
        return model

    def _check(self, models: Sequence[nn.Module], x: Tensor, atol: float) -> None:
        """Eval-mode outputs of the stack must equal each student's own outputs."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                stacked = self.forward(x)
                for i, m in enumerate(models):
                    m_was = m.training
                    m.eval()
                    own = m(x)
                    m.train(m_was)
                    err = float((stacked[i] - own).abs().max())
                    scale = float(own.abs().max()) + 1.0
                    if not err <= atol * scale:
                        raise KdlensError(
                            f"{type(models[0]).__name__} cannot be stacked with backend={self.backend!r}: "
                            f"student {i}'s stacked output differs from its own by {err:.3g} (its forward "
                            "mixes channels outside the supported layers). Use backend='vmap'."
                        )
        finally:
            self.train(was)
