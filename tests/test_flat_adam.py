"""FlatAdam (the Ivis optimiser): the same update as ``torch.optim.Adam`` on one flat buffer."""

import pytest
import torch
from torch import nn

from kdlens.explain.embed.flat_adam import FlatAdam


def _twins():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    twin = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    twin.load_state_dict(net.state_dict())
    return net, twin


def test_flat_adam_matches_torch_adam_in_float64():
    net, twin = _twins()
    before = [p.detach().clone() for p in net.parameters()]
    flat = FlatAdam(list(net.parameters()), lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))  # values kept
    reference = torch.optim.Adam(twin.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-6, foreach=False)
    x = torch.randn(16, 5, dtype=torch.float64)
    for _ in range(12):
        flat.zero_grad()
        net(x).pow(2).sum().backward()  # autograd accumulates into the buffer's views
        flat.step()
        reference.zero_grad()
        twin(x).pow(2).sum().backward()
        reference.step()
    for p, q in zip(net.parameters(), twin.parameters()):
        assert torch.allclose(p, q, atol=1e-13, rtol=0)
    assert not torch.allclose(net[0].weight, before[0])  # it did move


def test_parameters_and_gradients_are_views_of_one_buffer():
    net, _ = _twins()
    flat = FlatAdam(list(net.parameters()))
    n = sum(p.numel() for p in net.parameters())
    assert flat.values.numel() == flat.grads.numel() == n == 4 * 5 + 4 + 3 * 4 + 3
    net[0].weight.grad.fill_(1.0)
    assert flat.grads[:20].eq(1).all() and flat.grads[20:].eq(0).all()
    with torch.no_grad():
        net[2].bias.fill_(7.0)
    assert flat.values[-3:].eq(7).all()


def test_a_replaced_gradient_is_copied_back_and_none_reads_zero():
    net, twin = _twins()
    flat = FlatAdam(list(net.parameters()), lr=0.1)
    reference = torch.optim.Adam(twin.parameters(), lr=0.1, foreach=False)
    g = torch.full_like(net[0].weight, 0.5)
    net[0].weight.grad = g.clone()  # a new tensor, not the view
    net[2].bias.grad = None
    flat.step()
    twin[0].weight.grad = g.clone()
    reference.step()  # parameters without .grad are skipped: with zero gradient Adam leaves them too
    for p, q in zip(net.parameters(), twin.parameters()):
        assert torch.allclose(p, q, atol=1e-13, rtol=0)
    assert net[0].weight.grad.data_ptr() == flat.grads.data_ptr()  # re-pointed at its view


def test_mixed_dtypes_are_refused():
    with pytest.raises(ValueError, match="one device with one dtype"):
        FlatAdam([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2, dtype=torch.float64))])
