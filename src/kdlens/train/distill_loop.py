"""Distillation loops: offline KD (logit + hint losses), limited-label cycles, hint pre-training.

All plug into :class:`~kdlens.train.trainer.Trainer`; the teacher is frozen (eval mode,
no grad) and its outputs come from a :class:`LiveTeacher` or a cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from kdlens.distill import Objective
from kdlens.distill.cache import TeacherOutputCache
from kdlens.models import FeatureTaps
from kdlens.train.loop import Batch, BatchSource, SourceLoop, StepOutput


class LiveTeacher:
    """Teacher outputs computed by a forward pass on every batch (no grad, eval mode)."""

    def __init__(self, model: nn.Module, feature_names: Sequence[str] = ()) -> None:
        self.model = model.eval()
        self.feature_names = list(feature_names)

    @torch.no_grad()
    def __call__(self, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with FeatureTaps(self.model, list(dict.fromkeys(self.feature_names))) as taps:
            logits = self.model(batch.x)
        return logits.float(), [taps[n].float() for n in self.feature_names]


class CachedTeacher:
    """Teacher outputs looked up in a :class:`TeacherOutputCache` by dataset index (+ flip)."""

    def __init__(self, cache: TeacherOutputCache, device: torch.device) -> None:
        self.cache = cache
        self.device = device

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.cache.lookup(batch.idx, batch.extras.get("flip"), self.device)


def _student_forward(model: nn.Module, x: torch.Tensor, names: Sequence[str]):
    """Logits and the features ``names`` in order (a repeated name — several hint terms at
    one layer — is tapped once and given to each)."""
    if not names:
        return model(x), []
    with FeatureTaps(model, list(dict.fromkeys(names))) as taps:
        logits = model(x)
    return logits, [taps[n] for n in names]


class DistillLoop(SourceLoop):
    """L = γ·CE + Σ α_i·L_logit,i + Σ β_j·L_hint,j on each (augmented) batch of the transfer set.

    ``student_layers``: the student's feature list — every hint term's layers, concatenated
    in :attr:`Objective.hint_names` order (a layer may repeat).  ``warmup_epochs``: term
    name → W, the term's weight rising linearly as weight · min(1, (e + 1) / W) in epoch e
    (0-based) — DKD's logit term and ReviewKD's hint term (their papers: 20 of 240 epochs;
    :func:`kdlens.train.distill_run.warmup_epochs`).  ``logit_warmup_epochs`` (older form):
    the same for every logit term.
    """

    def __init__(
        self,
        source: BatchSource,
        teacher,
        objective: Objective,
        student_layers: Sequence[str] = (),
        soft_only: bool = False,
        logit_warmup_epochs: int = 0,
        warmup_epochs: Mapping[str, int] | None = None,
    ) -> None:
        self.source = source
        self.teacher = teacher
        self.objective = objective
        self.extra_modules = (objective,)
        self.student_layers = list(student_layers)
        self.soft_only = soft_only  # transfer set without labels: CE term sees none
        self.logit_warmup_epochs = logit_warmup_epochs
        warmups = {t.name: logit_warmup_epochs for t in objective.terms if t.kind == "logit" and logit_warmup_epochs > 0}
        warmups.update({name: int(w) for name, w in (warmup_epochs or {}).items() if w > 0})
        for name in warmups:
            objective.term(name)  # an unknown term name fails here, with close matches
        self.warmup_epochs = warmups
        self.base_weights = objective.term_weights

    def term_weights(self, epoch: int) -> dict[str, float]:
        """Each term's weight in ``epoch`` (0-based) after the warm-ups."""
        return {
            name: w * (min(1.0, (epoch + 1) / self.warmup_epochs[name]) if name in self.warmup_epochs else 1.0)
            for name, w in self.base_weights.items()
        }

    def on_epoch_start(self, epoch: int) -> None:
        """Linear warm-up of the terms that have one (DKD, Zhao et al. 2022; ReviewKD, Chen et al. 2021)."""
        if self.warmup_epochs:
            for name, weight in self.term_weights(epoch).items():
                self.objective.set_weight(name, weight)

    def step(self, model: nn.Module, batch: Batch) -> StepOutput:
        logits, s_feats = _student_forward(model, batch.x, self.student_layers)
        t_logits, t_feats = self.teacher(batch)
        targets = torch.full_like(batch.y, -1) if self.soft_only else batch.y
        total, parts = self.objective(
            logits.float(), targets, t_logits, [f.float() for f in s_feats], t_feats, indices=batch.idx
        )
        return StepOutput(total, parts, logits, batch.y)



class HintPretrainLoop(SourceLoop):
    """Stage 1 of FitNet (and AB/FSP/FT initialisation): minimise the hint losses'
    pre-training objective (:meth:`Objective.pretrain_loss`: summed over the hint terms
    that have one, × β for AB) on the transfer set before the main phase."""

    def __init__(self, source: BatchSource, teacher, objective: Objective, student_layers: Sequence[str]) -> None:
        self.source = source
        self.teacher = teacher
        self.objective = objective
        self.extra_modules = (objective,)
        self.student_layers = list(student_layers)

    def step(self, model: nn.Module, batch: Batch) -> StepOutput:
        _, s_feats = _student_forward(model, batch.x, self.student_layers)
        _, t_feats = self.teacher(batch)
        loss = self.objective.pretrain_loss([f.float() for f in s_feats], t_feats, indices=batch.idx)
        return StepOutput(loss, {"pretrain": loss})



class LimitedLabelLoop(SourceLoop):
    """Lee & Wallraven 2021 §3.1: cycles of a labeled batch (cross-entropy) followed by
    an unlabeled batch (KL between student and teacher at temperature T, × T²).

    One epoch is one pass over the unlabeled set; the small labeled set is reshuffled
    and cycled as often as needed.  Each batch is its own optimiser step.
    """

    def __init__(self, labeled: BatchSource, unlabeled: BatchSource, teacher, kd_loss: nn.Module) -> None:
        self.labeled = labeled
        self.unlabeled = unlabeled
        self.teacher = teacher
        self.kd_loss = kd_loss

    def num_batches(self) -> int:
        return 2 * len(self.unlabeled)

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        def labeled_forever() -> Iterator[Batch]:
            while True:
                yield from self.labeled.epoch(generator)

        labeled = labeled_forever()
        for unlabeled_batch in self.unlabeled.epoch(generator):
            batch = next(labeled)
            batch.extras["phase"] = torch.tensor(0)
            yield batch
            unlabeled_batch.extras["phase"] = torch.tensor(1)
            yield unlabeled_batch

    def step(self, model: nn.Module, batch: Batch) -> StepOutput:
        logits = model(batch.x)
        if int(batch.extras["phase"]) == 0:
            ce = nn.functional.cross_entropy(logits.float(), batch.y)
            return StepOutput(ce, {"ce": ce}, logits, batch.y)
        t_logits, _ = self.teacher(batch)
        kd = self.kd_loss(logits.float(), t_logits)
        return StepOutput(kd, {"kd": kd})



