"""Ivis in PyTorch: a Siamese network trained with a triplet loss on k-nearest-neighbour triplets.

Written from the paper, Szubert, Drozdov, Marini, Ntrozos & Jacobsen (2019), *Structure-
preserving visualisation of high dimensional single-cell datasets*, Scientific Reports 9:8914,
and used as in Lee & Wallraven (2021), *Visualizing the embedding space to explain the effect
of knowledge distillation* (ACPR), whose Table 2 reports the converged Ivis loss per layer.

What the estimator does (defaults from Szubert et al. unless said otherwise):

* **Network.** Three dense layers of 128 units with SELU activations and LeCun-normal
  initialisation, each followed by AlphaDropout (rate 0.1), then a linear embedding layer
  (``n_components = 2``). ``network="maaten"`` gives the larger 500-500-2000 body (van der
  Maaten 2009, parametric t-SNE); a tuple of widths gives any other body.
* **Neighbours.** ``k = 150`` nearest neighbours of every point from a back-end in
  :mod:`kdlens.explain.embed.knn`. Default ``knn="auto"``: exact torch search for up to 20,000
  points or above 256 dimensions (exact, and faster than a tree index there), Annoy with the
  angular metric and 50 trees — the reference implementation's setting — for larger data.
  The metric is angular by default for every back-end, as in the reference.
* **Triplets.** Every epoch each point is the anchor exactly once, in a freshly shuffled
  order. ``triplets="random"`` (default, Szubert et al. / reference behaviour): positive = a
  uniformly random one of the anchor's k neighbours, negative = a uniformly random point that
  is neither the anchor nor one of its k neighbours — new draws every epoch.
  ``triplets="closest-furthest"``: Lee & Wallraven describe the triplets as "closest point =
  positive, furthest point = negative"; we read that as positive = the nearest neighbour and
  negative = the furthest of the k neighbours, fixed for every epoch. The difference matters:
  random non-neighbour negatives are mostly far-away points, so the loss spreads unrelated
  points apart and keeps the global layout; the closest-furthest triplets are always the same
  two points inside the neighbourhood (a hard negative), so the loss only orders the
  neighbourhood and says nothing about points outside it, and the loss values are not
  comparable between the two options.
* **Loss.** ``loss="pn"``: the PN triplet loss of Balntas et al. (2016) as Szubert et al.
  write it, ``max(d(a,p) − min(d(a,n), d(p,n)) + margin, 0)``; ``loss="pn-reference"``: reference
  ivis's code, the mean of the two hinges ``½[max(d(a,p) − d(a,n) + m, 0) + max(d(a,p) − d(p,n)
  + m, 0)]`` — about half the ``"pn"`` value once one hinge is inactive, which is why kdlens's
  converged ``"pn"`` loss is ≈ 2× the reference's; ``loss="triplet"``: the plain
  ``max(d(a,p) − d(a,n) + margin, 0)``; Euclidean distances in the embedding, margin 1.
* **Optimisation.** Adam (learning rate 1e-3, fused), the network's gradients written out by
  hand in :mod:`kdlens.explain.embed.ivis_step` (the same values as autograd, with fewer
  operations), batches of 128 anchors, at most ``epochs``
  epochs; early stopping when the mean training loss of an epoch has not improved on the best
  one by more than ``min_delta`` for ``patience`` epochs (the reference's default patience is
  20). The weights of the best epoch are restored, and its loss is ``loss_`` — the converged
  loss of Lee & Wallraven's Table 2 (lower = the neighbourhood structure is easier to embed).
* **Supervision (optional).** With labels ``y`` in ``fit``, a softmax classifier on the
  embedding is trained jointly: loss = (1 − w)·triplet + w·cross-entropy, ``w =
  supervision_weight``; labels −1 are ignored (semi-supervised use).  The cross-entropy is
  averaged over the labelled points of a batch (``supervision_mean="labelled"``, default) —
  reference ivis masks the unlabelled points and averages over the whole batch
  (``supervision_mean="batch"``), which at 10 % labels weights supervision ≈ 10× less.
* **Seeding.** Initialisation, dropout and triplet draws come from ``seed`` (the global torch
  RNG is left untouched): with the same seed and the same neighbours
  (``knn=PrecomputedKNN(previous.neighbors_)``) the embedding is the same, bit for bit on the
  same machine and thread count.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.errors import KdlensError, unknown_name
from kdlens.explain.embed.flat_adam import FlatAdam
from kdlens.explain.embed.knn import KNNIndex, Neighbors, as_float_matrix, make_knn_index
from kdlens.registry import Registry

__all__ = [
    "NETWORKS",
    "TRIPLET_LOSSES",
    "Ivis",
    "IvisNetwork",
    "lecun_normal_",
    "pn_reference_loss",
    "pn_triplet_loss",
    "triplet_loss",
]

NETWORKS: dict[str, tuple[int, ...]] = {
    "szubert": (128, 128, 128),  # Szubert et al. 2019 default
    "maaten": (500, 500, 2000),  # van der Maaten 2009 (parametric t-SNE), Ivis' larger option
}
TRIPLET_SAMPLING = ("random", "closest-furthest")

TRIPLET_LOSSES: Registry[Callable[[Tensor, Tensor, Tensor, float], Tensor]] = Registry("triplet loss")


def _distance(a: Tensor, b: Tensor) -> Tensor:
    # the small constant keeps the gradient of sqrt finite when two points coincide
    return torch.sqrt(((a - b) ** 2).sum(-1) + 1e-12)


@TRIPLET_LOSSES.register("pn")
def pn_triplet_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0) -> Tensor:
    """PN triplet loss per triplet: ``max(d(a,p) − min(d(a,n), d(p,n)) + margin, 0)``.

    Balntas, Riba, Ponsa & Mikolajczyk (2016), *Learning local feature descriptors with
    triplets and shallow convolutional neural networks* (BMVC); used by Ivis (Szubert et al.
    2019). The negative is pushed away from whichever of anchor and positive is closer.
    """
    d_ap = _distance(anchor, positive)
    d_an = _distance(anchor, negative)
    d_pn = _distance(positive, negative)
    return F.relu(d_ap - torch.minimum(d_an, d_pn) + margin)


@TRIPLET_LOSSES.register("pn-reference")
def pn_reference_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0) -> Tensor:
    """Reference ivis's PN loss per triplet: the *mean* of the two hinges,
    ``½·[max(d(a,p) − d(a,n) + m, 0) + max(d(a,p) − d(p,n) + m, 0)]``, with Keras's distance
    ``sqrt(max(Σ(x − y)², 1e-7))`` (ivis 2.0.11, ``ivis/nn/losses.py``, ``EuclideanPnLoss``).

    ``"pn"`` (the default) is Balntas et al.'s form, the *larger* hinge
    ``max(d(a,p) − min(d(a,n), d(p,n)) + m, 0)``. When one hinge is active — the usual case
    once the embedding has spread — the reference value is half of kdlens's, which is why
    converged ``"pn"`` losses are ≈ 2× reference ivis's; the gradients then point the same way.
    """
    d_ap, d_an, d_pn = (torch.sqrt(((u - v) ** 2).sum(-1).clamp_min(1e-7))
                        for u, v in ((anchor, positive), (anchor, negative), (positive, negative)))
    return 0.5 * (F.relu(d_ap - d_an + margin) + F.relu(d_ap - d_pn + margin))


@TRIPLET_LOSSES.register("triplet")
def triplet_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0) -> Tensor:
    """Plain triplet loss per triplet: ``max(d(a,p) − d(a,n) + margin, 0)`` (Schroff et al. 2015, FaceNet)."""
    return F.relu(_distance(anchor, positive) - _distance(anchor, negative) + margin)


def supervised_cross_entropy(logits: Tensor, labels: Tensor, mean_over: str = "labelled") -> Tensor:
    """Cross-entropy of the labelled points (label ≥ 0): summed, then divided by the number of
    labelled points (``"labelled"``) or by the batch size (``"batch"``, reference ivis's masked
    Keras loss); a batch without labels gives a graph-connected 0."""
    labelled = labels >= 0
    if not bool(labelled.any()):
        return logits.sum() * 0
    total = F.cross_entropy(logits[labelled], labels[labelled], reduction="sum")
    return total / (int(labelled.sum()) if mean_over == "labelled" else labels.shape[0])


def lecun_normal_(weight: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """LeCun-normal initialisation (LeCun et al. 1998; Klambauer et al. 2017 for SELU nets).

    A normal distribution truncated at ±2σ with the variance ``1 / fan_in`` after truncation
    (σ = sqrt(1/fan_in) / 0.87962566, the std of a unit normal truncated at ±2).
    """
    fan_in = weight.shape[1]
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std, generator=generator)


_SELU_ALPHA_PRIME = -1.0507009873554805 * 1.6732632423543772  # −λα, SELU's negative saturation


class IvisAlphaDropout(nn.Module):
    """AlphaDropout (Klambauer et al. 2017, §"New dropout technique"), mask from a numpy RNG.

    Training: ``out = a·(x·m + α'·(1 − m)) + b`` with ``m ~ Bernoulli(q)``, ``α' = −λα``,
    ``a = (q + α'²·q·(1 − q))^(−1/2)``, ``b = −a·α'·(1 − q)`` — mean and variance of a
    self-normalised input are kept. ``q`` is the keep probability rounded to a multiple of
    2⁻¹⁶ (the mask is ``u < round(q·2¹⁶)`` for uniform 16-bit integers ``u``; rate 0.1 → 0.100006)
    and ``a``, ``b`` use that ``q`` exactly. Why not ``nn.AlphaDropout``: its Bernoulli draw was
    a fifth of an Ivis step here (≈ 0.6 ms for 384 × 128 on one core); 16-bit lanes of numpy's raw
    64-bit draws are a fraction of that. Evaluation: identity. ``rng`` (a ``numpy.random.Generator``) is set by
    :class:`Ivis` from its ``random_state``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.threshold = int(round((1.0 - self.p) * 65536))
        q = self.threshold / 65536
        self.a = (q + _SELU_ALPHA_PRIME**2 * q * (1 - q)) ** -0.5
        self.b = -self.a * _SELU_ALPHA_PRIME * (1 - q)
        self.dropped = self.a * _SELU_ALPHA_PRIME + self.b  # c₀, a dropped unit's output
        self.rng = np.random.default_rng(0)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = self.keep_mask(x)
        scale = keep * self.a  # a·m
        kept_shift, dropped_shift = x.new_tensor(self.b), x.new_tensor(self.dropped)
        shift = torch.where(keep.bool(), kept_shift, dropped_shift)  # a·α'·(1 − m) + b
        return torch.addcmul(shift, x, scale)

    def keep_bits(self, n: int) -> np.ndarray:
        """``n`` fresh keep decisions (bool): 16-bit uniform integers ``u`` (four from each raw
        64-bit draw of the RNG) and ``u < round(q·2¹⁶)``."""
        return self.rng.bit_generator.random_raw((n + 3) // 4).view(np.uint16)[:n] < self.threshold

    def keep_mask(self, like: Tensor, scale: float = 1.0) -> Tensor:
        """A fresh keep mask of ``like``'s shape, dtype and device: ``scale`` where kept, 0 where dropped."""
        keep = torch.from_numpy(self.keep_bits(like.numel()).view(np.uint8)).view(like.shape).to(like.device)
        keep = keep.to(like.dtype)
        return keep if scale == 1.0 else keep.mul_(scale)

    def shift_constants(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``c₀ = a·α' + b`` (a dropped unit's output) and ``(b − c₀)/a`` as 0-d tensors of
        ``like``'s dtype and device, made once (see :mod:`kdlens.explain.embed.ivis_step`)."""
        key = (like.dtype, like.device)
        if getattr(self, "_constants_key", None) != key:
            c0 = self.dropped
            self._constants = (torch.tensor(c0, dtype=like.dtype, device=like.device),
                               torch.tensor((self.b - c0) / self.a, dtype=like.dtype, device=like.device))
            self._constants_key = key
        return self._constants

    def extra_repr(self) -> str:
        return f"p={self.p}"


class IvisNetwork(nn.Module):
    """Dense SELU body with AlphaDropout and a linear embedding layer (the Siamese branch)."""

    def __init__(self, in_features: int, hidden: Sequence[int], n_components: int, dropout: float,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SELU()]
            if dropout > 0:
                layers.append(IvisAlphaDropout(dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.embedding = nn.Linear(width, n_components)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                lecun_normal_(m.weight, generator)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.embedding(self.body(x))

    def seed_dropout(self, seed: int) -> None:
        """Give every dropout layer its own numpy RNG, derived from ``seed``."""
        drops = [m for m in self.modules() if isinstance(m, IvisAlphaDropout)]
        for m, child in zip(drops, np.random.SeedSequence(seed).spawn(len(drops))):
            m.rng = np.random.default_rng(child)


def _adam(params: list[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam (Kingma & Ba 2015) as one fused kernel where this torch has it (CPU: torch ≥ 2.4):
    the per-parameter loop of the plain form was ≈ 15 % of an Ivis step here."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _as_labels(y: Any, n: int) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.shape != (n,):
        raise KdlensError(f"labels must have shape ({n},), one per point; got {y.shape}")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise KdlensError(f"labels must be integers (−1 = unlabelled); got dtype {y.dtype}")
    if (y < -1).any():
        raise KdlensError("labels must be ≥ 0, or −1 for unlabelled points")
    if (y < 0).all():
        raise KdlensError("all labels are −1: give at least one labelled point, or fit without y")
    return y.astype(np.int64)


class Ivis:
    """Ivis dimensionality reduction (Szubert et al. 2019), scikit-learn style.

    >>> emb = Ivis(n_components=2, random_state=0).fit_transform(x)   # x: n × d array
    >>> model.loss_, model.n_epochs_                              # converged loss, epochs run

    Parameters (stored verbatim; see the module docstring for the method):
        n_components: embedding dimension.
        k: neighbours per point (an integer-valued float such as ``10.0`` is accepted; more than
            n − 2 is an error, as in reference ivis).
        network: ``"szubert"`` (128-128-128), ``"maaten"`` (500-500-2000) or a tuple of widths.
        dropout: AlphaDropout rate after each hidden layer.
        loss: ``"pn"`` (paper), ``"pn-reference"`` (reference ivis's mean of two hinges) or ``"triplet"``.
        margin: triplet margin.
        triplets: ``"random"`` (reference) or ``"closest-furthest"`` (Lee & Wallraven's wording).
        batch_size, learning_rate: Adam mini-batches of anchors and step size.
        epochs: the most epochs; patience, min_delta: early stopping on the training loss.
        knn: back-end name (``auto``, ``exact``, ``annoy``, ``nndescent``) or a
            :class:`~kdlens.explain.embed.knn.KNNIndex` (e.g. ``PrecomputedKNN``).
        knn_metric: ``"angular"`` (reference) or ``"euclidean"`` (ignored for an instance).
        supervision_weight: weight w of the classifier loss when ``fit`` gets labels.
        random_state: seed of initialisation, dropout and triplet sampling (scikit-learn's name;
            ``seed=`` is kept as an alias).
        device: torch device for training (``"cpu"``, ``"cuda"``).
        n_threads: torch CPU threads while training the network (``None``: leave as is). The
            default 1 is deliberate: a step multiplies only 384 × d by d × 128 matrices, which
            gains nothing from OpenMP threads, and on a shared two-core machine two threads were
            measured here at 700 ms per step against 8 ms for one. The kNN search is not limited.
        verbose: print the loss every 10 epochs.

    Learned attributes: ``embedding_`` (n × n_components, float32), ``loss_`` (best epoch's
    mean loss), ``history_`` (mean loss per epoch), ``epoch_seconds_`` (wall time per epoch:
    triplet draws and training), ``n_epochs_``, ``neighbors_`` (n × k),
    ``network_`` (the torch module), ``n_features_in_``, ``k_``, ``fit_seconds_``,
    ``knn_seconds_``.
    """

    def __init__(
        self,
        n_components: int = 2,
        k: int = 150,
        network: str | Sequence[int] = "szubert",
        dropout: float = 0.1,
        loss: str = "pn",
        margin: float = 1.0,
        triplets: str = "random",
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        epochs: int = 1000,
        patience: int = 20,
        min_delta: float = 0.0,
        knn: str | KNNIndex = "auto",
        knn_metric: str = "angular",
        supervision_weight: float = 0.5,
        supervision_mean: str = "labelled",
        random_state: int | None = 0,
        device: str = "cpu",
        n_threads: int | None = 1,
        verbose: bool = False,
        seed: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.k = k
        self.network = network
        self.dropout = dropout
        self.loss = loss
        self.margin = margin
        self.triplets = triplets
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.patience = patience
        self.min_delta = min_delta
        self.knn = knn
        self.knn_metric = knn_metric
        self.supervision_weight = supervision_weight
        self.supervision_mean = supervision_mean
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.verbose = verbose
        self.seed = seed

    @property
    def seed_(self) -> int:
        """The seed in use: ``seed`` (kdlens's older name, kept as an alias) when given, else
        ``random_state`` (scikit-learn's name), else 0."""
        chosen = self.seed if self.seed is not None else self.random_state
        return 0 if chosen is None else int(chosen)

    # ------------------------------------------------------------------ checks
    def _hidden(self) -> tuple[int, ...]:
        if isinstance(self.network, str):
            if self.network not in NETWORKS:
                raise unknown_name("Ivis network", self.network, NETWORKS)
            return NETWORKS[self.network]
        hidden = tuple(int(h) for h in self.network)
        if not hidden or min(hidden) < 1:
            raise KdlensError(f"network widths must be positive integers; got {self.network!r}")
        return hidden

    def _check_params(self) -> None:
        for name in ("n_components", "k", "batch_size", "epochs", "patience"):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():  # k=10.0 (e.g. from a search space)
                value = int(value)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise KdlensError(f"Ivis {name} must be a positive integer; got {value!r}")
        if self.triplets not in TRIPLET_SAMPLING:
            raise unknown_name("triplet sampling", self.triplets, TRIPLET_SAMPLING)
        TRIPLET_LOSSES.get(self.loss)
        if not 0 <= self.dropout < 1:
            raise KdlensError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.supervision_mean not in ("labelled", "batch"):
            raise unknown_name("supervision_mean", self.supervision_mean, ["labelled", "batch"])
        if not 0 <= self.supervision_weight <= 1:
            raise KdlensError(f"supervision_weight must be in [0, 1]; got {self.supervision_weight}")
        if self.margin <= 0 or self.learning_rate <= 0:
            raise KdlensError("margin and learning_rate must be positive")
        self._hidden()

    # ------------------------------------------------------------------ triplets
    def _sample_epoch(self, nbrs: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Anchors (a permutation of all points), positives and negatives for one epoch."""
        n, k = nbrs.shape
        anchors = torch.randperm(n, generator=gen)
        if self.triplets == "closest-furthest":
            return anchors, nbrs[anchors, 0], nbrs[anchors, k - 1]
        positives = nbrs[anchors, torch.randint(k, (n,), generator=gen)]
        negatives = torch.randint(n, (n,), generator=gen)
        rows = nbrs[anchors]
        bad = (negatives == anchors) | (rows == negatives[:, None]).any(1)
        while bool(bad.any()):  # rejection sampling: redraw negatives that hit a neighbour
            redo = bad.nonzero().squeeze(1)
            negatives[redo] = torch.randint(n, (redo.numel(),), generator=gen)
            bad_redo = (negatives[redo] == anchors[redo]) | (rows[redo] == negatives[redo, None]).any(1)
            bad = torch.zeros_like(bad)
            bad[redo] = bad_redo
        return anchors, positives, negatives

    # ------------------------------------------------------------------ fit
    def fit(self, x: Any, y: Any = None) -> Ivis:
        """Find neighbours, train the network, store ``embedding_`` of ``x``; returns self."""
        self._check_params()
        x = as_float_matrix(x)
        n, d = x.shape
        if n < 4:
            raise KdlensError(f"Ivis needs at least 4 points; got {n}")
        labels = None if y is None else _as_labels(y, n)
        k = int(round(float(self.k)))
        if k > n - 2:  # as reference ivis: an error, not a silent change of the model
            raise KdlensError(
                f"Ivis: k = {k} neighbours but only {n} points (at most k = {n - 2}: a point, its "
                f"{n - 2} others minus the negative); pass k ≤ {n - 2} or embed more points"
            )
        self.k_ = k
        self.n_features_in_ = d

        t0 = time.perf_counter()
        index = make_knn_index(self.knn, n, d, **({} if isinstance(self.knn, KNNIndex) else
                                                   {"metric": self.knn_metric, "seed": self.seed_}))
        neighbors: Neighbors = index.build(x, k)
        self.knn_seconds_ = time.perf_counter() - t0
        self.neighbors_ = neighbors.indices

        device = torch.device(self.device)
        devices = [device.index or 0] if device.type == "cuda" else []
        threads = torch.get_num_threads()
        try:
            if self.n_threads is not None:
                torch.set_num_threads(int(self.n_threads))
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed_)
                self._train(x, labels, neighbors.indices, device)
        finally:
            torch.set_num_threads(threads)
        self.fit_seconds_ = time.perf_counter() - t0
        self.embedding_ = self.transform(x)
        return self

    def _train(self, x: np.ndarray, labels: np.ndarray | None, nbrs_np: np.ndarray, device: torch.device) -> None:
        gen = torch.Generator().manual_seed(self.seed_ + 1)
        init_gen = torch.Generator().manual_seed(self.seed_)
        net = IvisNetwork(x.shape[1], self._hidden(), int(self.n_components), float(self.dropout), init_gen)
        head = None
        params = list(net.parameters())
        w = float(self.supervision_weight) if labels is not None else 0.0
        if labels is not None:
            head = nn.Linear(int(self.n_components), int(labels.max()) + 1)
            params += list(head.parameters())
            head.to(device)
            y_t = torch.from_numpy(labels).to(device)
        net.seed_dropout(self.seed_)
        net.to(device)
        from kdlens.explain.embed.ivis_native import native_applies, native_pn_step
        from kdlens.explain.embed.ivis_step import hidden_layers, manual_step, pn_loss_and_grad

        layers = hidden_layers(net)
        opt = FlatAdam(params, float(self.learning_rate))
        loss_fn = TRIPLET_LOSSES.get(self.loss)
        data = torch.from_numpy(x).to(device)
        nbrs = torch.from_numpy(nbrs_np)
        native = head is None and self.loss == "pn" and native_applies(layers, data, opt)
        n, bs, margin = x.shape[0], int(self.batch_size), float(self.margin)

        best, best_state, since_best, history = math.inf, None, 0, []
        net.train()
        epoch_seconds: list[float] = []
        for epoch in range(int(self.epochs)):
            t_epoch = time.perf_counter()
            anchors, positives, negatives = self._sample_epoch(nbrs, gen)
            triplet_idx = torch.stack([anchors, positives, negatives], 1).to(device)
            total = torch.zeros((), device=device)
            for start in range(0, n, bs):
                batch = triplet_idx[start : start + bs]
                b = batch.shape[0]

                def objective(emb: Tensor, b: int = b, batch: Tensor = batch) -> Tensor:
                    a, p, ng = emb[:b], emb[b : 2 * b], emb[2 * b :]
                    loss = loss_fn(a, p, ng, margin).mean()
                    if head is not None:
                        ce = supervised_cross_entropy(head(a), y_t[batch[:, 0]], self.supervision_mean)
                        loss = (1 - w) * loss + w * ce
                    return loss

                if head is not None:
                    opt.zero_grad()  # autograd accumulates the head's gradient into its views
                # the network's backward by hand (ivis_step: ~2× fewer, fused operations); the
                # default loss's gradient too when there is no classifier head
                rows = data.index_select(0, batch.T.reshape(-1))
                if native:  # the same step compiled (ivis_native): PN loss, no head, float32 CPU
                    loss = native_pn_step(net, layers, rows, margin)
                elif head is None and self.loss == "pn":
                    loss = manual_step(net, layers, rows, loss_and_grad=lambda e: pn_loss_and_grad(e, margin))
                else:
                    loss = manual_step(net, layers, rows, objective)
                opt.step()
                total += loss * b
            epoch_loss = float(total) / n
            history.append(epoch_loss)
            epoch_seconds.append(time.perf_counter() - t_epoch)
            if not math.isfinite(epoch_loss):
                raise KdlensError(f"Ivis loss became {epoch_loss} in epoch {epoch + 1}: scale the input or lower learning_rate")
            if epoch_loss < best - float(self.min_delta):
                best, since_best = epoch_loss, 0
                best_state = (copy.deepcopy(net.state_dict()), None if head is None else copy.deepcopy(head.state_dict()))
            else:
                since_best += 1
            if self.verbose and (epoch + 1) % 10 == 0:
                print(f"ivis epoch {epoch + 1}: loss {epoch_loss:.5f} (best {best:.5f})")
            if since_best >= int(self.patience):
                break
        assert best_state is not None
        net.load_state_dict(best_state[0])
        if head is not None:
            head.load_state_dict(best_state[1])
        net.eval()
        self.network_ = net
        self.classifier_ = head
        self.loss_ = best
        self.history_ = history
        self.epoch_seconds_ = epoch_seconds
        self.n_epochs_ = len(history)

    # ------------------------------------------------------------------ transform
    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise KdlensError("this Ivis model is not fitted yet: call fit(x) first")

    def transform(self, x: Any, batch_size: int = 4096) -> np.ndarray:
        """Embed (new) points with the trained network (dropout off); n × n_components float32."""
        self._check_fitted()
        x = as_float_matrix(x)
        if x.shape[1] != self.n_features_in_:
            raise KdlensError(f"Ivis was fitted on {self.n_features_in_} features; got {x.shape[1]}")
        device = next(self.network_.parameters()).device
        out = np.empty((x.shape[0], int(self.n_components)), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                chunk = torch.from_numpy(x[start : start + batch_size]).to(device)
                out[start : start + batch_size] = self.network_(chunk).cpu().numpy()
        return out

    def fit_transform(self, x: Any, y: Any = None) -> np.ndarray:
        """``fit(x, y)`` and return ``embedding_``."""
        return self.fit(x, y).embedding_

    def predict(self, x: Any) -> np.ndarray:
        """Class predictions of the supervised head (only after ``fit`` with labels)."""
        self._check_fitted()
        if self.classifier_ is None:
            raise KdlensError("predict needs a supervised Ivis: fit(x, y) with labels")
        emb = torch.from_numpy(self.transform(x)).to(next(self.classifier_.parameters()).device)
        with torch.no_grad():
            return self.classifier_(emb).argmax(1).cpu().numpy()

    @classmethod
    def _param_names(cls) -> list[str]:
        import inspect

        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyper-parameters as given to ``__init__`` (scikit-learn convention; ``deep`` is
        accepted for ``sklearn.base.clone`` — Ivis holds no nested estimators)."""
        return {p: getattr(self, p) for p in self._param_names()}

    def set_params(self, **params: Any) -> Ivis:
        """Set hyper-parameters by name (scikit-learn convention); unknown names are an error."""
        from kdlens.errors import unknown_name

        known = self._param_names()
        for name, value in params.items():
            if name not in known:
                raise unknown_name("Ivis parameter", name, known)
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = Ivis().get_params()
        changed = {k: v for k, v in self.get_params().items() if v != defaults[k] or k == "n_components"}
        return "Ivis(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"
