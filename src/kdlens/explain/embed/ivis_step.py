"""One Ivis training step with the network's backward pass written out by hand.

The Ivis network is a plain stack ``h_l = AlphaDropout(SELU(h_{l−1} W_lᵀ + b_l))`` and a
linear embedding ``e = h_L W_eᵀ + b_e``; a step pushes 3 × 128 rows through it. At that size
the matrix products are about a quarter of a step (1.3 of 4.8–5.5 ms on one loaded AVX2 core,
``benchmarks/ivis_step.py``); the rest is element-wise work (SELU, dropout masks) and
autograd's per-operation bookkeeping. This module does the same arithmetic with fewer, fused
operations, five per layer each way:

forward, per hidden layer (``m`` the keep mask, ``a``, ``b`` AlphaDropout's affine terms,
``α' = −λα``; Klambauer et al. 2017):

    z = h W_lᵀ + b_l,   s = SELU(z),   h' = a·(m·s + α'(1 − m)) + b = c₀ + (a·m)·(s + (b − c₀)/a)

with ``c₀ = a·α' + b`` (the value of a dropped unit);

backward (``g`` = ∂L/∂h'), SELU's derivative taken from its output (``λ`` where ``s > 0``,
``s + λα`` elsewhere, since ``s = λα(eᶻ − 1)`` there — no second exponential):

    ∂L/∂z = SELU'(z) · (a·m) · g          (one ``elu_backward`` on ``s``)
    ∂L/∂W_l = (∂L/∂z)ᵀ h,   ∂L/∂b_l = Σ_rows ∂L/∂z,   ∂L/∂h = (∂L/∂z) W_l.

The loss on the embedding (any registered triplet loss, plus the optional classifier head)
still goes through autograd: it acts on a 384 × 2 tensor and costs little. Gradients are
written into the parameters' ``.grad`` (in place: views of
:class:`~kdlens.explain.embed.flat_adam.FlatAdam`'s buffer) for the Adam step. ``tests/test_embed_ivis.py``
checks the gradients against autograd in float64. With the default PN loss and no
classifier head, :mod:`kdlens.explain.embed.ivis_native` runs this same step compiled, where it
can be built; this module is then its reference (``tests/test_ivis_native.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from kdlens.explain.embed.ivis import IvisAlphaDropout, IvisNetwork

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


Layer = tuple[nn.Linear, "IvisAlphaDropout | None"]


def hidden_layers(net: IvisNetwork) -> list[Layer]:
    """The (Linear, SELU[, IvisAlphaDropout]) triples of ``net.body`` in order; anything else
    in the body (a custom network) raises ``TypeError`` — use autograd for it."""
    mods = list(net.body)
    layers, i = [], 0
    while i < len(mods):
        if not (isinstance(mods[i], nn.Linear) and i + 1 < len(mods) and isinstance(mods[i + 1], nn.SELU)):
            raise TypeError(f"not a Linear–SELU stack at body[{i}]: {type(mods[i]).__name__}")
        drop = mods[i + 2] if i + 2 < len(mods) and isinstance(mods[i + 2], IvisAlphaDropout) else None
        layers.append((mods[i], drop))
        i += 3 if drop is not None else 2
    return layers


def pn_loss_and_grad(e: Tensor, margin: float = 1.0) -> tuple[Tensor, Tensor]:
    """The mean PN triplet loss of ``e`` = [anchors; positives; negatives] (``b`` rows each) and
    its gradient ∂L/∂e, without autograd (the ``"pn"`` loss of :mod:`kdlens.explain.embed.ivis`).

    With ``d_xy = √(‖x − y‖² + 10⁻¹²)`` and the hinge ``h = d_ap − min(d_an, d_pn) + m``,
    ``L = (1/b) Σ max(h, 0)``; for a triplet with ``h > 0``, ``u_xy = (x − y)/(b·d_xy)`` and
    the minimum's share ``w_an`` (1 if ``d_an < d_pn``, ½ on a tie — autograd's split — else 0),
    ``w_pn = 1 − w_an``:

        ∂L/∂a = u_ap − w_an·u_an,   ∂L/∂p = −u_ap − w_pn·u_pn,   ∂L/∂n = w_an·u_an + w_pn·u_pn.
    """
    b = e.shape[0] // 3
    rows = e.view(3, b, -1)
    diff = rows[[0, 0, 1]] - rows[[1, 2, 2]]  # a − p, a − n, p − n
    dist = diff.square().sum(-1).add_(1e-12).sqrt_()  # d_ap, d_an, d_pn
    hinge = dist[0] - torch.minimum(dist[1], dist[2]) + margin
    loss = hinge.clamp_min(0).mean()
    w_an = (dist[1] < dist[2]).to(e.dtype).add_(0.5 * (dist[1] == dist[2]))
    share = torch.stack([torch.ones_like(w_an), w_an, 1 - w_an])
    u = diff * (share * (hinge > 0) / (b * dist)).unsqueeze(-1)  # u_ap, w_an·u_an, w_pn·u_pn
    grad = torch.empty_like(e)
    torch.sub(u[0], u[1], out=grad[:b])
    torch.add(u[0], u[2], out=grad[b : 2 * b]).neg_()
    torch.add(u[1], u[2], out=grad[2 * b :])
    return loss, grad


def manual_step(net: IvisNetwork, layers: list[Layer], x: Tensor,
                loss_of_embedding: Callable[[Tensor], Tensor] | None = None,
                loss_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None) -> Tensor:
    """Forward ``x`` through ``net`` (training mode, dropout on), evaluate
    ``loss_of_embedding(e)`` with autograd on the embedding only — or take the loss and ∂L/∂e
    from ``loss_and_grad(e)`` (e.g. :func:`pn_loss_and_grad`) —, back-propagate by hand and
    store the network's gradients in ``.grad`` (replacing them; parameters the loss itself
    reaches, such as a classifier head, accumulate theirs as usual). Returns the loss (detached)."""
    if (loss_of_embedding is None) == (loss_and_grad is None):
        raise ValueError("give exactly one of loss_of_embedding and loss_and_grad")
    saved: list[tuple[Tensor, Tensor, Tensor | None]] = []  # (input, SELU output s, a·m) per layer
    with torch.no_grad():
        h = x
        for linear, drop in layers:
            z = torch.addmm(linear.bias, h, linear.weight.t())
            s = torch.selu(z)
            if drop is not None and drop.p > 0:
                am = drop.keep_mask(z, scale=drop.a)  # a·m
                c0, shift = drop.shift_constants(z)  # c₀ and (b − c₀)/a as 0-d tensors
                h_next = torch.addcmul(c0, am, torch.add(s, shift))
                saved.append((h, s, am))
            else:
                h_next = s
                saved.append((h, s, None))
            h = h_next
        emb_layer = net.embedding
        e = torch.addmm(emb_layer.bias, h, emb_layer.weight.t())
    if loss_and_grad is not None:
        loss, g = loss_and_grad(e)
    else:
        e.requires_grad_(True)
        loss = loss_of_embedding(e)
        loss.backward()  # fills e.grad (and the classifier head's .grad, if the loss uses one)
        g = e.grad
    with torch.no_grad():
        _write_grad(emb_layer.weight, torch.mm, g.t(), h)
        _write_grad(emb_layer.bias, torch.sum, g, 0)
        g = g @ emb_layer.weight
        for i in range(len(layers) - 1, -1, -1):
            h_in, s, am = saved[i]
            if am is not None:
                g = g * am
            # SELU'(z) from its output: λ for s > 0, s + λα otherwise (elu_backward, is_result)
            gz = torch.ops.aten.elu_backward(g, SELU_ALPHA, SELU_SCALE, 1.0, True, s)
            linear = layers[i][0]
            _write_grad(linear.weight, torch.mm, gz.t(), h_in)
            _write_grad(linear.bias, torch.sum, gz, 0)
            if i > 0:
                g = gz @ linear.weight
    return loss.detach()


def _write_grad(param: Tensor, op: Callable[..., Tensor], *args) -> None:
    """``param.grad ← op(*args)``, written in place when ``.grad`` exists with the right shape (a
    view of :class:`~kdlens.explain.embed.flat_adam.FlatAdam`'s buffer), else as a new tensor."""
    grad = param.grad
    if grad is not None and grad.shape == param.shape and grad.is_contiguous():
        op(*args, out=grad)
    else:
        param.grad = op(*args)
