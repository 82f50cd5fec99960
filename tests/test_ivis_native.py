"""The compiled Ivis step (ivis_native.cpp) against the Python step it replaces."""

import copy

import numpy as np
import pytest
import torch

from kdlens.explain.embed import ivis_native
from kdlens.explain.embed.flat_adam import FlatAdam
from kdlens.explain.embed.ivis import Ivis, IvisNetwork
from kdlens.explain.embed.ivis_step import hidden_layers, manual_step, pn_loss_and_grad


@pytest.fixture(scope="module")
def module():
    built = ivis_native.native_module()
    if built is None:
        pytest.skip("the native Ivis step cannot be built here (no C++ compiler or ninja)")
    return built


def _twins(dropout: float, hidden=(32, 24, 32), dim=9):
    torch.manual_seed(0)
    net = IvisNetwork(dim, hidden, 2, dropout).train()
    twin = copy.deepcopy(net)
    net.seed_dropout(5)
    twin.seed_dropout(5)  # the same masks in both
    return net, twin


@pytest.mark.parametrize("dropout", [0.1, 0.0])
def test_native_step_equals_the_python_step(module, dropout):
    net, twin = _twins(dropout)
    flat, twin_flat = FlatAdam(list(net.parameters())), FlatAdam(list(twin.parameters()))
    x = torch.randn(3 * 40, 9) * 2  # both signs of every pre-activation
    layers = hidden_layers(net)
    assert ivis_native.native_applies(layers, x, flat)
    for _ in range(3):  # three steps: masks drawn in the same order, parameters moved alike
        native = ivis_native.native_pn_step(net, layers, x, 1.0)
        python = manual_step(twin, hidden_layers(twin), x, loss_and_grad=lambda e: pn_loss_and_grad(e, 1.0))
        assert native.item() == pytest.approx(python.item(), rel=1e-5)
        for (name, p), q in zip(net.named_parameters(), twin.parameters()):
            if name == "embedding.bias":  # exactly 0 in exact arithmetic (distances are shift-invariant)
                assert p.grad.abs().max() < 1e-5 and q.grad.abs().max() < 1e-5
                continue
            assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6 * q.grad.abs().max()), name
        with torch.no_grad():  # the same update on both (Adam would amplify the bias's rounding noise)
            for p, q in zip(net.parameters(), twin.parameters()):
                p.sub_(0.01 * q.grad)
                q.sub_(0.01 * q.grad)


def test_switched_off_or_not_float32_falls_back(module, monkeypatch):
    net, _ = _twins(0.1)
    flat = FlatAdam(list(net.parameters()))
    layers = hidden_layers(net)
    assert not ivis_native.native_applies(layers, torch.zeros(3, 9, dtype=torch.float64), flat)
    assert not ivis_native.native_applies(layers, torch.zeros(3, 9), torch.optim.Adam(net.parameters()))
    monkeypatch.setenv("KDLENS_IVIS_NATIVE", "0")
    assert ivis_native.native_module() is None
    assert not ivis_native.native_applies(layers, torch.zeros(3, 9), flat)


def test_ivis_fits_alike_with_and_without_the_native_step(module, monkeypatch):
    from sklearn.datasets import load_digits

    x = (load_digits().data[:300] / 16).astype(np.float32)
    kw = dict(random_state=0, epochs=4, k=15, n_components=2)
    native = Ivis(**kw).fit(x)
    monkeypatch.setenv("KDLENS_IVIS_NATIVE", "0")
    python = Ivis(**kw).fit(x)
    assert native.n_epochs_ == python.n_epochs_ == 4
    assert np.allclose(native.history_, python.history_, rtol=2e-3)  # float rounding only


def test_a_failed_build_falls_back_to_the_python_step_saying_why_once(monkeypatch, capsys):
    import torch.utils.cpp_extension as cpp

    def no_ninja(**_kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpp, "load", no_ninja)
    monkeypatch.setattr(ivis_native, "_state", {})
    assert ivis_native.native_module() is None
    assert ivis_native.native_module() is None  # tried once
    err = capsys.readouterr().err
    assert err.count("native Ivis step unavailable (Ninja is required") == 1
    x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    assert Ivis(random_state=0, epochs=2, k=5).fit(x).n_epochs_ == 2  # the Python step trains
