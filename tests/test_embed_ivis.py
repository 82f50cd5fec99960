"""Ivis estimator: API, determinism, triplets, losses, supervision, early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlens.errors import KdlensError
from kdlens.explain.embed import Ivis, PrecomputedKNN, nearest_neighbors, pn_triplet_loss, triplet_loss
from kdlens.explain.embed.ivis import IvisAlphaDropout, pn_reference_loss
from kdlens.explain.embed.ivis import IvisNetwork, NETWORKS


def blobs(n=240, d=12, centers=3, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    c = rng.normal(scale=4.0, size=(centers, d))
    y = np.arange(n) % centers
    return (c[y] + spread * rng.normal(size=(n, d))).astype(np.float32), y


def fast(**kw):
    return Ivis(**{"k": 15, "epochs": 8, "patience": 8, **kw})


def test_fit_transform_shapes_and_attributes():
    x, _ = blobs()
    model = fast(n_components=3)
    emb = model.fit_transform(x)
    assert emb.shape == (240, 3) and emb.dtype == np.float32
    assert model.embedding_ is emb
    assert model.n_epochs_ == len(model.history_) <= 8
    assert model.loss_ == pytest.approx(min(model.history_))
    assert model.neighbors_.shape == (240, 15)
    assert model.transform(x[:5]).shape == (5, 3)
    # hyper-parameters are kept verbatim
    assert model.get_params()["k"] == 15 and model.n_components == 3


def test_same_seed_same_neighbours_same_embedding():
    x, _ = blobs()
    a = fast(seed=3).fit(x)
    b = fast(seed=3, knn=PrecomputedKNN(a.neighbors_)).fit(x)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    assert a.history_ == b.history_
    c = fast(seed=4, knn=PrecomputedKNN(a.neighbors_)).fit(x)
    assert not np.array_equal(a.embedding_, c.embedding_)


def test_global_rng_untouched():
    x, _ = blobs(n=60)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fast(k=5, epochs=2).fit(x)
    assert torch.equal(torch.rand(3), expected)


def test_separates_clusters():
    x, y = blobs()
    emb = fast(epochs=15, patience=15).fit_transform(x)
    cent = np.stack([emb[y == c].mean(0) for c in range(3)])
    within = np.mean([np.linalg.norm(emb[y == c] - cent[c], axis=1).mean() for c in range(3)])
    between = min(np.linalg.norm(cent[i] - cent[j]) for i in range(3) for j in range(i + 1, 3))
    assert between > 2 * within


def test_random_negatives_are_never_neighbours():
    x, _ = blobs(n=100)
    model = fast(k=20)
    nbrs = torch.from_numpy(nearest_neighbors(x, 20, "exact").indices)
    anchors, pos, neg = model._sample_epoch(nbrs, torch.Generator().manual_seed(0))
    assert sorted(anchors.tolist()) == list(range(100))  # every point once per epoch
    rows = nbrs[anchors]
    assert (rows == pos[:, None]).any(1).all()
    assert not (rows == neg[:, None]).any(1).any()
    assert not (neg == anchors).any()


def test_closest_furthest_triplets():
    x, _ = blobs(n=100)
    model = fast(k=20, triplets="closest-furthest")
    nbrs = torch.from_numpy(nearest_neighbors(x, 20, "exact").indices)
    anchors, pos, neg = model._sample_epoch(nbrs, torch.Generator().manual_seed(0))
    assert torch.equal(pos, nbrs[anchors, 0]) and torch.equal(neg, nbrs[anchors, 19])
    assert model.fit(x).loss_ >= 0


def test_losses_by_hand():
    a = torch.tensor([[0.0, 0.0]])
    p = torch.tensor([[1.0, 0.0]])
    n = torch.tensor([[1.0, 0.5]])  # d(a,p)=1, d(a,n)=1.118, d(p,n)=0.5
    assert triplet_loss(a, p, n, 1.0).item() == pytest.approx(1 - 1.118034 + 1, abs=1e-5)
    assert pn_triplet_loss(a, p, n, 1.0).item() == pytest.approx(1 - 0.5 + 1, abs=1e-5)
    far = torch.tensor([[10.0, 0.0]])
    assert pn_triplet_loss(a, p, far, 1.0).item() == 0.0


def test_reference_pn_form_is_the_mean_of_the_two_hinges():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    n = torch.tensor([[1.0, 0.5], [0.0, 1.8]], dtype=torch.float64)
    # row 0: d_ap 1, d_an √1.25, d_pn 0.5 → ½[(2 − √1.25) + 1.5];
    # row 1: d_an 1.8, d_pn √4.24 → ½[max(0.2, 0) + 0] (one hinge active: half of "pn")
    ref = pn_reference_loss(a, p, n, 1.0)
    assert ref[0].item() == pytest.approx(0.5 * ((2 - 1.25 ** 0.5) + 1.5), abs=1e-12)
    assert ref[1].item() == pytest.approx(0.5 * 0.2, abs=1e-12)
    assert pn_triplet_loss(a, p, n, 1.0)[1].item() == pytest.approx(0.2, abs=1e-12)
    # Keras's distance floor: coincident points give sqrt(1e-7), not 0
    z = torch.zeros(1, 2, dtype=torch.float64)
    assert pn_reference_loss(z, z, z, 1.0).item() == pytest.approx(1.0, abs=1e-12)
    m = Ivis(k=10, epochs=2, loss="pn-reference").fit(blobs(n=60, d=5)[0])
    assert m.loss_ > 0 and m.history_[0] >= m.loss_
    assert len(m.epoch_seconds_) == m.n_epochs_ == 2 and min(m.epoch_seconds_) > 0


def test_plain_triplet_option_and_large_network():
    x, _ = blobs(n=80, d=6)
    m = Ivis(k=10, epochs=2, loss="triplet", network="maaten").fit(x)
    widths = [l.out_features for l in m.network_.body if isinstance(l, torch.nn.Linear)]
    assert widths == list(NETWORKS["maaten"])


def test_network_structure_and_lecun_init():
    torch.manual_seed(0)
    net = IvisNetwork(400, (128, 128, 128), 2, 0.1)
    kinds = [type(m).__name__ for m in net.body]
    assert kinds == ["Linear", "SELU", "IvisAlphaDropout"] * 3
    w = net.body[0].weight
    assert w.std().item() == pytest.approx((1 / 400) ** 0.5, rel=0.05)
    assert w.abs().max().item() <= 2 * (1 / 400) ** 0.5 / 0.8796 + 1e-6


def test_alpha_dropout_matches_torch_values_and_keeps_mean_and_variance():
    drop = IvisAlphaDropout(0.1)
    q = drop.threshold / 65536
    assert drop.threshold == 58982 and abs(q - 0.9) < 1e-5
    # torch's alpha_dropout at the same keep probability maps 0 to b (kept) or a·α' + b (dropped)
    torch.manual_seed(0)
    ref = torch.nn.functional.alpha_dropout(torch.zeros(20000, dtype=torch.float64), 1 - q, True)
    kept, dropped = sorted(set(torch.round(ref, decimals=9).tolist()), reverse=True)
    out = drop.train()(torch.zeros(200, 100, dtype=torch.float64))
    values = sorted(set(torch.round(out, decimals=9).flatten().tolist()), reverse=True)
    assert values == pytest.approx([kept, dropped], abs=1e-9)
    # a·(x·m + α'(1 − m)) + b on a given input, by hand for the kept entries: a·x + b
    x = torch.randn(400, 500, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = drop(x)
    is_kept = (y - (drop.a * x + drop.b)).abs() < 1e-9
    assert float(is_kept.double().mean()) == pytest.approx(q, abs=0.005)
    # self-normalising: a SELU-normalised input (mean 0, variance 1) keeps mean 0 and variance 1
    z = torch.nn.functional.selu(torch.randn(2000, 500, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    z = (z - z.mean()) / z.std()
    w = drop(z)
    assert float(w.mean()) == pytest.approx(0.0, abs=0.01) and float(w.var()) == pytest.approx(1.0, abs=0.01)
    assert torch.equal(drop.eval()(x), x)


def test_dropout_masks_follow_random_state():
    nets = [IvisNetwork(5, (8, 8), 2, 0.5) for _ in range(3)]
    for net, seed in zip(nets, (0, 0, 1)):
        net.seed_dropout(seed)
    masks = [net.body[2].train()(torch.zeros(50, 8)) for net in nets]
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    assert not torch.equal(nets[0].body[2].train()(torch.zeros(50, 8)), nets[0].body[5].train()(torch.zeros(50, 8)))


def test_early_stopping_with_patience():
    x, _ = blobs(n=60)
    m = Ivis(k=5, epochs=200, patience=2, min_delta=10.0).fit(x)  # no epoch can improve by 10
    assert m.n_epochs_ == 3


def test_supervised_head_ignores_minus_one():
    x, y = blobs(n=150)
    y_semi = y.copy()
    y_semi[::2] = -1
    m = fast(supervision_weight=0.8, epochs=10, patience=10).fit(x, y_semi)
    acc = (m.predict(x) == y).mean()
    assert acc > 0.9
    with pytest.raises(KdlensError, match="all labels are −1"):
        fast().fit(x, np.full(150, -1))


def test_errors_are_readable():
    x, _ = blobs(n=50)
    with pytest.raises(KdlensError, match="triplet sampling"):
        Ivis(triplets="hardest").fit(x)
    with pytest.raises(KdlensError, match="Ivis network"):
        Ivis(network="huge").fit(x)
    with pytest.raises(KdlensError, match="not fitted"):
        Ivis().transform(x)
    with pytest.raises(KdlensError, match="2-D array"):
        Ivis().fit(x[0])
    m = fast(epochs=1).fit(x)
    with pytest.raises(KdlensError, match="fitted on 12 features"):
        m.transform(x[:, :3])


def test_k_larger_than_the_data_is_an_error_naming_both_numbers():
    x, _ = blobs(n=20)
    with pytest.raises(KdlensError, match=r"k = 150 neighbours but only 20 points.*k ≤ 18"):
        Ivis(epochs=1).fit(x)
    assert Ivis(k=18, epochs=1).fit(x).k_ == 18


def test_scikit_learn_conventions_clone_set_params_and_float_k():
    from sklearn.base import clone

    x, _ = blobs(n=40)
    model = Ivis(k=10.0, epochs=1, random_state=3)
    copy = clone(model)  # get_params(deep=True) + __init__ round trip
    assert copy is not model and copy.get_params() == model.get_params()
    assert copy.set_params(epochs=2, k=8).get_params()["epochs"] == 2
    with pytest.raises(KdlensError, match="Did you mean: random_state"):
        model.set_params(random_stat=1)
    a, b = Ivis(k=10.0, epochs=1, random_state=3).fit(x), Ivis(k=10, epochs=1, seed=3).fit(x)
    assert a.k_ == 10 and np.array_equal(a.embedding_, b.embedding_)  # seed= is an alias of random_state


def test_supervision_mean_labelled_or_over_the_batch_as_reference_ivis():
    from kdlens.explain.embed.ivis import supervised_cross_entropy

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -1.0]], dtype=torch.float64)
    labels = torch.tensor([0, -1, -1, 1])  # two of four labelled
    per_point = torch.nn.functional.cross_entropy(logits[[0, 3]], labels[[0, 3]], reduction="none")
    assert supervised_cross_entropy(logits, labels).item() == pytest.approx(per_point.mean().item())
    assert supervised_cross_entropy(logits, labels, "batch").item() == pytest.approx(per_point.sum().item() / 4)
    assert supervised_cross_entropy(logits, torch.full((4,), -1)).item() == 0.0
    with pytest.raises(KdlensError, match="supervision_mean"):
        Ivis(supervision_mean="all")._check_params()


@pytest.mark.parametrize("dropout, with_head, in_place",
                         [(0.1, False, False), (0.3, True, False), (0.0, False, False), (0.3, True, True)])
def test_hand_written_backward_matches_autograd_in_float64(dropout, with_head, in_place):
    """``in_place``: the gradients are written into FlatAdam's buffer views, as Ivis trains."""
    import copy

    from kdlens.explain.embed.ivis_step import hidden_layers, manual_step

    torch.manual_seed(0)
    net = IvisNetwork(7, (16, 12, 16), 2, dropout).double().train()
    twin = copy.deepcopy(net)
    net.seed_dropout(3)
    twin.seed_dropout(3)  # the same masks in both passes
    head = torch.nn.Linear(2, 3).double()
    twin_head = copy.deepcopy(head)
    x = torch.randn(24, 7, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, -1, 1, 0, 2, -1])

    def objective(h):
        def f(e):
            loss = pn_triplet_loss(e[:8], e[8:16], e[16:], 1.0).mean()
            if with_head:
                loss = 0.5 * loss + 0.5 * torch.nn.functional.cross_entropy(h(e[:8])[labels >= 0], labels[labels >= 0])
            return loss
        return f

    if in_place:
        from kdlens.explain.embed.flat_adam import FlatAdam

        flat = FlatAdam(list(net.parameters()) + list(head.parameters()))
        flat.grads.fill_(123.0)  # stale values: the network's must be overwritten, the head's cleared first
        flat.zero_grad()
        flat.grads[: sum(p.numel() for p in net.parameters())].fill_(123.0)
    by_hand = manual_step(net, hidden_layers(net), x, objective(head))
    if in_place:
        assert net.body[0].weight.grad.data_ptr() == flat.grads.data_ptr()
    by_autograd = objective(twin_head)(twin(x))
    by_autograd.backward()
    assert by_hand.item() == pytest.approx(by_autograd.item(), abs=1e-12)
    for (name, p), q in zip(net.named_parameters(), twin.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-12, rtol=1e-10), name
    if with_head:
        for p, q in zip(head.parameters(), twin_head.parameters()):
            assert torch.allclose(p.grad, q.grad, atol=1e-12)


def test_pn_loss_and_grad_match_autograd_in_float64_ties_included():
    from kdlens.explain.embed.ivis_step import pn_loss_and_grad

    torch.manual_seed(1)
    e = torch.randn(3 * 10, 4, dtype=torch.float64)
    e[29] = e[9]  # triplet 9: negative on the anchor → d_an = 0 < d_pn
    e[28] = 0.5 * (e[8] + e[18])  # triplet 8: negative midway → d_an = d_pn, a tie
    e[7 + 20] = e[7] + 100.0  # triplet 7: far negative → hinge inactive
    auto = e.clone().requires_grad_(True)
    expected = pn_triplet_loss(auto[:10], auto[10:20], auto[20:], 1.0).mean()
    expected.backward()
    loss, grad = pn_loss_and_grad(e, 1.0)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-14)
    assert torch.allclose(grad, auto.grad, atol=1e-13, rtol=0)
    assert grad[[7, 17, 27]].abs().max() == 0  # the inactive triplet gets no gradient


def test_manual_step_with_the_analytic_pn_gradient_matches_autograd():
    import copy

    from kdlens.explain.embed.ivis_step import hidden_layers, manual_step, pn_loss_and_grad

    torch.manual_seed(0)
    net = IvisNetwork(7, (16, 12), 2, 0.2).double().train()
    twin = copy.deepcopy(net)
    net.seed_dropout(4)
    twin.seed_dropout(4)
    x = torch.randn(24, 7, dtype=torch.float64)
    by_hand = manual_step(net, hidden_layers(net), x, loss_and_grad=lambda e: pn_loss_and_grad(e, 0.5))
    by_autograd = manual_step(twin, hidden_layers(twin), x, lambda e: pn_triplet_loss(e[:8], e[8:16], e[16:], 0.5).mean())
    assert by_hand.item() == pytest.approx(by_autograd.item(), abs=1e-13)
    for p, q in zip(net.parameters(), twin.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-12, rtol=1e-10)
    with pytest.raises(ValueError, match="exactly one"):
        manual_step(net, hidden_layers(net), x)
