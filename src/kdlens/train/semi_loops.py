"""Semi-supervised baselines of Lee & Wallraven 2021's Table 1, as loops of the one Trainer.

Every loop trains on a labeled budget and an unlabeled pool at once: one optimiser step
takes a labeled batch of ``B`` (cycled, reshuffled when used up) and an unlabeled batch of
``μ·B``; **one epoch is one pass over the unlabeled pool** (as for the distilled student of
:class:`~kdlens.train.distill_loop.LimitedLabelLoop`).  No teacher run is needed.

| method (``semi=``) | loss per step | defaults (source) |
| --- | --- | --- |
| ``pseudo_label`` | CE(labeled) + α(t)·CE(unlabeled, argmax of its own prediction) | α_f = 3, T1 = 100, T2 = 600 epochs (Lee 2013 eq. 15–16) |
| ``pi_model`` | CE + w(t)·mean‖softmax(z) − softmax(z̃)‖²/C over two augmented passes | w_max = 100, Gaussian ramp-up over 80 of 300 epochs (Laine & Aila 2017 §2.1, App. A; ``tempens`` config) |
| ``mean_teacher`` | CE + w(t)·mean‖softmax(student) − softmax(EMA teacher)‖²/C | w_max = 100, sigmoid ramp-up 40k of 150k steps, EMA α = 0.99 in ramp-up, 0.999 after (Tarvainen & Valpola 2017 App. B; their TF ``DEFAULT_HYPERPARAMS``) |
| ``mixmatch`` | CE(mixed labeled, soft) + λ_U(t)·mean‖p − q‖²/C over mixed unlabeled | K = 2, T = 0.5, α = 0.75, λ_U = 75, linear ramp-up over 16k of 2²⁰ steps, EMA 0.999 (Berthelot et al. 2019 §4; ``runs/table1.sh``) |
| ``fixmatch`` | CE(weak labeled) + λ_u·mean 1[max q ≥ τ]·CE(strong, argmax q) | τ = 0.95, λ_u = 1, μ = 7, RandAugment(2) + Cutout, EMA 0.999 (Sohn et al. 2020 §2.3, §4) |

**Schedule scaling.**  The papers trained for 300 epochs (Π), 150k steps (Mean Teacher),
2²⁰ steps (MixMatch, FixMatch); kdlens runs ``epochs`` passes over the unlabeled pool.  Every
ramp is kept at the **same fraction of training**: Π's 80/300 = 0.267 and Mean Teacher's
40k/150k = 0.267 of the steps, MixMatch's 16k/2²⁰ = 0.0153.  Lee 2013 gives T1 = 100 and
T2 = 600 epochs; kdlens reads them against a 1,000-epoch run (0.1 and 0.6: our reading,
the paper's epoch count differs per experiment).  Progress is counted in optimiser steps,
``t / (epochs · steps per epoch)``, so a ramp is smooth within an epoch and a resumed run
computes the same weights.

**What differs from the reference code** (the papers' own equations are followed):
cross-entropy is averaged over the labeled batch (the Π and Mean Teacher codes divide the
labeled CE sum by the whole mixed batch, i.e. scale it by the labeled share, and compensate in
w_max or — Π's ``w_max·M/N`` — in the weight; with separate labeled and unlabeled batches
the per-labeled-example form is the natural one, and SGD is not scale-invariant as their Adam
is).  The optimiser is the run's (``optim``): FixMatch used SGD, lr 0.03, Nesterov, wd 5e-4
and cos(7πk/16K) decay; Π, Mean Teacher and MixMatch used Adam (lr 0.003, 0.003, 0.002).
Pseudo-Label's ``threshold`` (0 in Lee 2013) set to 0.95 with ``weight=1, ramp_start=0,
ramp_end=0.4`` gives Oliver et al. 2018's reimplementation.

**Augmentation.**  Weak views are the papers' flip-and-shift: a random translation by up to
``padding`` pixels (12.5 % of the side unless ``data.crop_padding`` says otherwise) and a
horizontal flip (unless ``data.hflip=false``), on the batch, from the epoch generator.
FixMatch's strong view is the weak view followed by
:class:`~kdlens.data.strong_augment.RandAugment` + Cutout.  Π-model and Mean Teacher take two
independent weak views; MixMatch K of them.

**EMA.**  Mean Teacher's teacher, and the evaluation models of MixMatch and FixMatch, are
``θ' ← α·θ' + (1 − α)·θ`` after every optimiser step; they are part of the loop's state, so a
checkpoint holds them and a resumed run continues exactly.  The run reports the student's
accuracy (``final_acc``) and the EMA model's (``ema_final_acc``), which is what the papers
evaluate.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdlens.data import BatchAugment, TensorBatches, normalize
from kdlens.data.strong_augment import RandAugment
from kdlens.errors import KdlensError, close_matches
from kdlens.registry import Registry
from kdlens.train.loop import Batch, StepOutput

SEMI_LOOPS: Registry[type[SemiSupervisedLoop]] = Registry("semi-supervised method")


# -- pure pieces (hand-checked in tests/test_semi_supervised.py) ------------------------------

def sigmoid_rampup(progress: float, length: float) -> float:
    """exp(−5·(1 − min(progress/length, 1))²) (Laine & Aila 2017; Tarvainen & Valpola 2017);
    1 when ``length`` is 0."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(progress, 0.0) / length, 1.0)
    return math.exp(-5.0 * phase * phase)


def linear_rampup(progress: float, start: float, end: float) -> float:
    """0 before ``start``, 1 from ``end`` on, linear between (Lee 2013 eq. 16; MixMatch's
    λ_U warm-up with ``start = 0``)."""
    if progress >= end:
        return 1.0
    if progress < start:
        return 0.0
    return (progress - start) / (end - start)


def softmax_mse(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean over examples of ‖softmax(logits) − targets‖² / C (the consistency cost of the
    Π-model, Mean Teacher and MixMatch's L_U): the mean of all squared differences."""
    return (F.softmax(logits.float(), dim=1) - targets).pow(2).mean()


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """MixMatch eq. (7): p_i^{1/T} / Σ_j p_j^{1/T}."""
    q = p.pow(1.0 / temperature)
    return q / q.sum(dim=1, keepdim=True)


def mixup(x: torch.Tensor, targets: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """MixMatch eq. (8)–(11): ``λ'·a + (1 − λ')·b`` with ``b = a[perm]`` for inputs and
    targets alike; ``lam`` is λ' = max(λ, 1 − λ) per example (so each mix stays closer to
    its first argument)."""
    lx = lam.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    lt = lam.view(-1, 1).to(targets.dtype)
    return lx * x + (1 - lx) * x[perm], lt * targets + (1 - lt) * targets[perm]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean over examples of −Σ_c targets_c · log softmax(logits)_c."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def confident_pseudo_labels(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(argmax class, mask max-probability ≥ ``threshold``) of detached ``logits``."""
    probs = F.softmax(logits.detach().float(), dim=1)
    confidence, labels = probs.max(dim=1)
    return labels, confidence >= threshold


def masked_pseudo_label_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(1/N) Σ_i mask_i · CE(logits_i, labels_i): averaged over *all* N unlabeled examples,
    confident or not (FixMatch eq. 4)."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    return (ce * mask.to(ce.dtype)).mean()


# -- data: raw batches and their views --------------------------------------------------------

class RawBatches:
    """Shuffled mini-batches ``(x, y, idx)`` of ``indices`` as stored (uint8 or [0, 1] float),
    before any augmentation; the order comes from the epoch generator."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: np.ndarray | None,
                 batch_size: int, device: torch.device | str = "cpu") -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.indices = indices
        self.batch_size = batch_size

    def _batches(self, generator: torch.Generator) -> TensorBatches:
        return TensorBatches(self.images, self.labels, self.batch_size, shuffle=True, generator=generator,
                             indices=self.indices)

    def __len__(self) -> int:
        return len(self._batches(torch.Generator()))

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return iter(self._batches(generator))


class Views:
    """Weak (flip-and-shift) and strong (weak, then RandAugment + Cutout) views of raw
    batches, normalised with ``mean``/``std`` for the model."""

    def __init__(self, padding: int, hflip: bool, mean: Sequence[float] | None, std: Sequence[float] | None,
                 strong: RandAugment | None = None) -> None:
        self.shift = BatchAugment(crop=padding or None, hflip=hflip)  # no mean/std: [0, 1] out
        self.mean = mean
        self.std = std
        self.strong_augment = strong

    def __repr__(self) -> str:
        return f"Views(padding={self.shift.padding}, hflip={self.shift.hflip}, strong={self.strong_augment})"

    def weak(self, raw: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return normalize(self.shift(raw, generator), self.mean, self.std)

    def strong(self, raw: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.strong_augment is None:
            raise KdlensError("this loop was built without a strong augmentation")
        return normalize(self.strong_augment(self.shift(raw, generator), generator), self.mean, self.std)


# -- EMA ------------------------------------------------------------------------------------

class WeightEMA:
    """An exponential moving average of a model's weights: after every optimiser step
    ``θ' ← α·θ' + (1 − α)·θ`` for each parameter (Tarvainen & Valpola 2017 eq. 1), starting
    from a copy of the model.

    ``buffers="copy"`` copies the model's buffers (BatchNorm statistics) at each update;
    ``"own"`` leaves them to the EMA model's own forward passes (Mean Teacher's teacher,
    which runs in training mode on its own inputs, as in the authors' code).
    """

    def __init__(self, model: nn.Module, buffers: str = "copy") -> None:
        if buffers not in ("copy", "own"):
            raise KdlensError(f"WeightEMA buffers={buffers!r}: use 'copy' or 'own'")
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.buffers = buffers
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        for ema, p in zip(self.model.parameters(), model.parameters()):
            ema.mul_(decay).add_(p.detach().to(ema.dtype), alpha=1.0 - decay)
        if self.buffers == "copy":
            for ema, b in zip(self.model.buffers(), model.buffers()):
                ema.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


# -- hyper-parameters -----------------------------------------------------------------------

def resolve_params(params_type: type, options: dict[str, Any], method: str) -> Any:
    """``params_type`` (a dataclass of defaults) with ``options`` applied; an unknown key or a
    value of the wrong kind is a :class:`KdlensError` naming it (and close matches)."""
    known = {f.name: f for f in fields(params_type)}
    values: dict[str, Any] = {}
    for key, value in options.items():
        if key not in known:
            hint = close_matches(key, known)
            raise KdlensError(f"semi_options.{key}: {method} has no hyper-parameter {key!r}"
                              + (f". Did you mean: {', '.join(hint)}?" if hint else "")
                              + f" Known: {', '.join(known)}")
        default = getattr(params_type, key)
        kind = type(default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) != isinstance(default, bool):
            raise KdlensError(f"semi_options.{key}={value!r}: {method} expects a {kind.__name__} (default {default!r})")
        values[key] = value
    params = params_type(**values)
    params.check(method)
    return params


@dataclass(frozen=True)
class CommonParams:
    #: unlabeled batch = mu × batch_size
    mu: int = 1

    def check(self, method: str) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                raise KdlensError(f"semi_options.{f.name}={v}: must not be negative ({method})")
        if self.mu < 1:
            raise KdlensError(f"semi_options.mu={self.mu}: the unlabeled batch is mu × batch_size, mu ≥ 1")


# -- the loops ------------------------------------------------------------------------------

class SemiSupervisedLoop:
    """Labeled batch + μ× unlabeled batch per optimiser step; one epoch = one pass over the
    unlabeled pool.  Subclasses set ``Params`` and implement :meth:`make_batch` (views, drawn
    from the epoch generator) and :meth:`step`."""

    Params: ClassVar[type] = CommonParams
    #: "copy"/"own" when the method keeps a weight EMA (see :class:`WeightEMA`), else None
    ema_buffers: ClassVar[str | None] = None
    #: whether the method needs :class:`~kdlens.data.strong_augment.RandAugment`
    needs_strong: ClassVar[bool] = False
    extra_modules: tuple[nn.Module, ...] = ()

    def __init__(self, labeled: RawBatches, unlabeled: RawBatches, views: Views, epochs: int, params: Any) -> None:
        self.labeled = labeled
        self.unlabeled = unlabeled
        self.views = views
        self.epochs = epochs
        self.params = params
        self.ema: WeightEMA | None = None
        self._first_step = 0
        self._step_in_epoch = 0
        self._last_step = 0

    # the Loop protocol
    def num_batches(self) -> int:
        return len(self.unlabeled)

    def trainable_modules(self) -> list[nn.Module]:
        return []

    def on_epoch_start(self, epoch: int) -> None:
        self._first_step = epoch * self.num_batches()
        self._step_in_epoch = 0

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        def labeled_forever() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
            while True:
                yield from self.labeled.epoch(generator)

        labeled = labeled_forever()
        for xu, _, iu in self.unlabeled.epoch(generator):
            xl, yl, il = next(labeled)
            batch = self.make_batch(xl, yl, xu, generator)
            batch.idx = torch.cat([il, iu])
            batch.extras["n_labeled"] = torch.tensor(len(yl))
            yield batch

    def state_dict(self) -> dict:
        return {} if self.ema is None else {"ema": self.ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])

    # the EMA
    def bind(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Create the weight EMA of ``model`` (methods that keep one) and, given the Trainer's
        ``optimizer``, update it after each of its steps.  Call before resuming, so that
        :meth:`load_state_dict` has an EMA to load into."""
        if self.ema_buffers is None:
            return
        self.ema = WeightEMA(model, self.ema_buffers)
        if optimizer is not None:
            optimizer.register_step_post_hook(lambda opt, args, kwargs: self.after_optimizer_step(model))

    def after_optimizer_step(self, model: nn.Module) -> None:
        if self.ema is not None:
            self.ema.update(model, self.ema_decay(self.progress(self._last_step)))

    def ema_decay(self, progress: float) -> float:
        return self.params.ema_decay

    # progress
    def total_steps(self) -> int:
        return max(1, self.epochs * self.num_batches())

    def progress(self, step: int) -> float:
        return step / self.total_steps()

    def _advance(self) -> float:
        """The progress (0…1) of this optimiser step; counts it."""
        self._last_step = self._first_step + self._step_in_epoch
        self._step_in_epoch += 1
        return self.progress(self._last_step)

    # per method
    def make_batch(self, xl: torch.Tensor, yl: torch.Tensor, xu: torch.Tensor, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def step(self, model: nn.Module, batch: Batch) -> StepOutput:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, **asdict(self.params)}

    name: ClassVar[str] = ""


def _unlabeled_targets(yl: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([yl, torch.full((n,), -1, dtype=yl.dtype, device=yl.device)])


def _same_layout(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` in ``like``'s memory format (the Trainer makes ``batch.x`` channels_last)."""
    if like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _register(name: str):
    def decorate(cls: type[SemiSupervisedLoop]) -> type[SemiSupervisedLoop]:
        cls.name = name
        return SEMI_LOOPS.register(name)(cls)

    return decorate


@dataclass(frozen=True)
class PseudoLabelParams(CommonParams):
    weight: float = 3.0  # α_f, Lee 2013
    ramp_start: float = 0.1  # T1 = 100 of 1,000 epochs
    ramp_end: float = 0.6  # T2 = 600
    threshold: float = 0.0  # Lee: every argmax; Oliver et al. 2018: 0.95


@_register("pseudo_label")
class PseudoLabelLoop(SemiSupervisedLoop):
    """Lee 2013: the unlabeled batch's own argmax classes (recomputed every step, same forward
    pass, no gradient through the choice) as targets, weight α(t) ramped linearly from 0 at
    T1 to α_f at T2."""

    Params = PseudoLabelParams

    def make_batch(self, xl, yl, xu, generator):
        x = torch.cat([self.views.weak(xl, generator), self.views.weak(xu, generator)])
        return Batch(x=x, y=_unlabeled_targets(yl, len(xu)), idx=torch.empty(0))

    def weight(self, progress: float) -> float:
        p = self.params
        return p.weight * linear_rampup(progress, p.ramp_start, p.ramp_end)

    def step(self, model, batch):
        w = self.weight(self._advance())
        nl = int(batch.extras["n_labeled"])
        logits = model(batch.x).float()
        ce = F.cross_entropy(logits[:nl], batch.y[:nl])
        labels, mask = confident_pseudo_labels(logits[nl:], self.params.threshold)
        pl = masked_pseudo_label_loss(logits[nl:], labels, mask)
        return StepOutput(ce + w * pl, {"ce": ce, "pseudo": pl, "u_weight": w}, logits[:nl], batch.y[:nl])


@dataclass(frozen=True)
class PiModelParams(CommonParams):
    weight: float = 100.0  # w_max, Laine & Aila 2017
    rampup: float = 80 / 300  # Gaussian ramp-up over the first 80 of 300 epochs


@_register("pi_model")
class PiModelLoop(SemiSupervisedLoop):
    """Laine & Aila 2017 Algorithm 1: two stochastic passes (independent augmentations,
    dropout) of every example, labeled and unlabeled; CE on the first pass's labeled part +
    w(t)·mean‖z − z̃‖²/C of the softmaxes (gradients through both passes)."""

    Params = PiModelParams

    def make_batch(self, xl, yl, xu, generator):
        raw = torch.cat([xl, xu])
        x = self.views.weak(raw, generator)
        x2 = self.views.weak(raw, generator)
        return Batch(x=x, y=_unlabeled_targets(yl, len(xu)), idx=torch.empty(0), extras={"x2": x2})

    def weight(self, progress: float) -> float:
        return self.params.weight * sigmoid_rampup(progress, self.params.rampup)

    def step(self, model, batch):
        w = self.weight(self._advance())
        nl = int(batch.extras["n_labeled"])
        z = model(batch.x).float()
        z2 = model(_same_layout(batch.extras["x2"], batch.x)).float()
        ce = F.cross_entropy(z[:nl], batch.y[:nl])
        cons = softmax_mse(z, F.softmax(z2, dim=1))
        return StepOutput(ce + w * cons, {"ce": ce, "consistency": cons, "u_weight": w}, z[:nl], batch.y[:nl])


@dataclass(frozen=True)
class MeanTeacherParams(CommonParams):
    weight: float = 100.0  # max consistency cost
    rampup: float = 40_000 / 150_000  # sigmoid ramp-up: 40k of 150k steps
    ema_decay: float = 0.999  # after the ramp-up
    ema_decay_rampup: float = 0.99  # during it


@_register("mean_teacher")
class MeanTeacherLoop(SemiSupervisedLoop):
    """Tarvainen & Valpola 2017: the teacher is the student's weight EMA; the student's
    softmax on one augmented view is pulled towards the teacher's on another (MSE, all
    examples), weight w(t) ramped up along a sigmoid; EMA decay 0.99 during the ramp-up,
    0.999 after.  The teacher runs in training mode (its own noise and BatchNorm statistics,
    as in the authors' code)."""

    Params = MeanTeacherParams
    ema_buffers = "own"

    def make_batch(self, xl, yl, xu, generator):
        raw = torch.cat([xl, xu])
        x = self.views.weak(raw, generator)
        x2 = self.views.weak(raw, generator)
        return Batch(x=x, y=_unlabeled_targets(yl, len(xu)), idx=torch.empty(0), extras={"x2": x2})

    def weight(self, progress: float) -> float:
        return self.params.weight * sigmoid_rampup(progress, self.params.rampup)

    def ema_decay(self, progress: float) -> float:
        p = self.params
        return p.ema_decay_rampup if progress < p.rampup else p.ema_decay

    def step(self, model, batch):
        if self.ema is None:
            raise KdlensError("mean_teacher: call loop.bind(model, optimizer) before training (it creates the teacher)")
        w = self.weight(self._advance())
        nl = int(batch.extras["n_labeled"])
        z = model(batch.x).float()
        teacher = self.ema.model.train()
        with torch.no_grad():
            t = F.softmax(teacher(_same_layout(batch.extras["x2"], batch.x)).float(), dim=1)
        ce = F.cross_entropy(z[:nl], batch.y[:nl])
        cons = softmax_mse(z, t)
        return StepOutput(ce + w * cons, {"ce": ce, "consistency": cons, "u_weight": w}, z[:nl], batch.y[:nl])


@dataclass(frozen=True)
class MixMatchParams(CommonParams):
    lambda_u: float = 75.0  # CIFAR-10 (150 for CIFAR-100)
    rampup: float = 16_000 / 2**20  # linear λ_U warm-up: 16k of 2^20 steps
    temperature: float = 0.5
    k: int = 2  # augmentations per unlabeled example
    alpha: float = 0.75  # Beta(α, α) of mixup
    ema_decay: float = 0.999

    def check(self, method: str) -> None:
        super().check(method)
        if self.k < 1 or self.temperature <= 0 or self.alpha <= 0:
            raise KdlensError(f"{method}: k ≥ 1, temperature > 0 and alpha > 0 are needed (got k={self.k}, "
                              f"temperature={self.temperature}, alpha={self.alpha})")


@_register("mixmatch")
class MixMatchLoop(SemiSupervisedLoop):
    """Berthelot et al. 2019 Algorithm 1: K weak views of each unlabeled example; their mean
    prediction (no gradient), sharpened at T, is its guessed label; labeled (one-hot) and
    unlabeled examples are mixed with a shuffle of all of them (λ' = max(λ, 1 − λ),
    λ ~ Beta(α, α) per example); L = CE(mixed labeled) + λ_U(t)·MSE(mixed unlabeled)."""

    Params = MixMatchParams
    ema_buffers = "copy"

    def make_batch(self, xl, yl, xu, generator):
        views = [self.views.weak(xl, generator)] + [self.views.weak(xu, generator) for _ in range(self.params.k)]
        x = torch.cat(views)
        n = x.shape[0]
        perm = torch.randperm(n, generator=generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        lam = np.random.default_rng(seed).beta(self.params.alpha, self.params.alpha, size=n)
        lam = torch.from_numpy(np.maximum(lam, 1.0 - lam)).float()
        return Batch(x=x, y=_unlabeled_targets(yl, self.params.k * len(xu)), idx=torch.empty(0),
                     extras={"perm": perm.to(x.device), "lam": lam.to(x.device)})

    def weight(self, progress: float) -> float:
        return self.params.lambda_u * linear_rampup(progress, 0.0, self.params.rampup)

    def step(self, model, batch):
        w = self.weight(self._advance())
        p = self.params
        nl = int(batch.extras["n_labeled"])
        yl = batch.y[:nl]
        with torch.no_grad():
            probs = F.softmax(model(batch.x[nl:]).float(), dim=1)
            guess = sharpen(probs.view(p.k, -1, probs.shape[1]).mean(0), p.temperature)
        targets = torch.cat([F.one_hot(yl, probs.shape[1]).float(), guess.repeat(p.k, 1)])
        mixed_x, mixed_t = mixup(batch.x, targets, batch.extras["perm"], batch.extras["lam"])
        logits = model(_same_layout(mixed_x, batch.x)).float()
        lx = soft_cross_entropy(logits[:nl], mixed_t[:nl])
        lu = softmax_mse(logits[nl:], mixed_t[nl:])
        return StepOutput(lx + w * lu, {"ce": lx, "consistency": lu, "u_weight": w})


@dataclass(frozen=True)
class FixMatchParams(CommonParams):
    mu: int = 7  # unlabeled batch = 7 × labeled
    threshold: float = 0.95  # τ
    lambda_u: float = 1.0
    ema_decay: float = 0.999
    num_ops: int = 2  # RandAugment operations per image
    cutout: float = 0.5  # largest Cutout side, fraction of the image

    def check(self, method: str) -> None:
        super().check(method)
        if self.num_ops < 1 or not 0 <= self.threshold <= 1 or self.cutout > 1:
            raise KdlensError(f"{method}: num_ops ≥ 1, threshold in [0, 1] and cutout ≤ 1 are needed")


@_register("fixmatch")
class FixMatchLoop(SemiSupervisedLoop):
    """Sohn et al. 2020 eq. (2)–(4): labeled CE on weak views + λ_u·(1/μB) Σ 1[max q ≥ τ]·
    CE(strong view, argmax q), q the (detached) prediction on the weak view; one forward
    pass over labeled-weak, unlabeled-weak and unlabeled-strong together."""

    Params = FixMatchParams
    ema_buffers = "copy"
    needs_strong = True

    def make_batch(self, xl, yl, xu, generator):
        x = torch.cat([self.views.weak(xl, generator), self.views.weak(xu, generator),
                       self.views.strong(xu, generator)])
        return Batch(x=x, y=_unlabeled_targets(yl, 2 * len(xu)), idx=torch.empty(0))

    def step(self, model, batch):
        self._advance()
        nl = int(batch.extras["n_labeled"])
        logits = model(batch.x).float()
        nu = (logits.shape[0] - nl) // 2
        weak, strong = logits[nl:nl + nu], logits[nl + nu:]
        ce = F.cross_entropy(logits[:nl], batch.y[:nl])
        labels, mask = confident_pseudo_labels(weak, self.params.threshold)
        lu = masked_pseudo_label_loss(strong, labels, mask)
        return StepOutput(ce + self.params.lambda_u * lu,
                          {"ce": ce, "unlabeled": lu, "mask": mask.float().mean()}, logits[:nl], batch.y[:nl])
