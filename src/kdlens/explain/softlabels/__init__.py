"""Soft-label diagnostics: the soft-label hypothesis of Vats 2021 (*Response-based knowledge
distillation*, thesis) as tools.

* :mod:`.entropy` — entropy of ``softmax(z/T)`` per example / class / on average over
  temperatures; label smoothing's closed-form entropy over α_LS (the "entropy form").
* :mod:`.labels` — confidence and similarity labels, tables like thesis Tables 3.2/3.3,
  their variance within a class.
* :mod:`.projection` — penultimate activations projected onto the plane of three class
  templates (Müller, Kornblith & Hinton 2019).
* :mod:`.experiments` — missing-class test, entropy-ranked transfer sets, noisy soft labels,
  teacher pre-training sweep; students trained together by :mod:`kdlens.train.vectorized`.

>>> from kdlens.explain.softlabels import entropy_by_temperature, missing_class_test, teacher_logits
>>> z = teacher_logits(teacher, train)                       # once; shared by every student
>>> entropy_by_temperature(z, train.labels).mean             # mean entropy at T = 1…20
>>> missing_class_test("cnn_student", train, test, {"small": z}, ls_alphas=[0.1, 0.5])
"""

from kdlens.explain.softlabels.entropy import (
    DEFAULT_LS_ALPHAS,
    DEFAULT_TEMPERATURES,
    THESIS_TEMPERATURES,
    EntropyTable,
    check_temperatures,
    entropy_by_temperature,
    label_smoothing_entropy,
    label_smoothing_entropy_curve,
    soft_label_entropy,
    soft_labels,
)
from kdlens.explain.softlabels.experiments import (
    MissingClassResult,
    NoiseResult,
    PretrainingResult,
    SweepSettings,
    TransferSetResult,
    entropy_ranked_transfer_sets,
    missing_class_test,
    soft_label_noise,
    teacher_logits,
    teacher_pretraining_sweep,
    top_entropy_examples,
)
from kdlens.explain.softlabels.labels import (
    LabelVariance,
    confidence_labels,
    label_variance,
    similarity_labels,
    soft_label_table,
)
from kdlens.explain.softlabels.projection import TemplateProjection, classifier_layer, penultimate_activations

__all__ = [
    "DEFAULT_LS_ALPHAS",
    "DEFAULT_TEMPERATURES",
    "THESIS_TEMPERATURES",
    "EntropyTable",
    "LabelVariance",
    "MissingClassResult",
    "NoiseResult",
    "PretrainingResult",
    "SweepSettings",
    "TemplateProjection",
    "TransferSetResult",
    "check_temperatures",
    "classifier_layer",
    "confidence_labels",
    "entropy_by_temperature",
    "entropy_ranked_transfer_sets",
    "label_smoothing_entropy",
    "label_smoothing_entropy_curve",
    "label_variance",
    "missing_class_test",
    "penultimate_activations",
    "similarity_labels",
    "soft_label_entropy",
    "soft_label_noise",
    "soft_label_table",
    "soft_labels",
    "teacher_logits",
    "teacher_pretraining_sweep",
    "top_entropy_examples",
]
