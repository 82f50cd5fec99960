"""Vectorised student sweeps: train many small students of one architecture together.

The soft-label experiments (Vats 2021, *Response-based knowledge distillation*: missing-class
test, entropy-ranked transfer sets, noisy soft labels, teacher pre-training sweeps) train tens
to hundreds of students that differ only in their seed, transfer set or soft-target settings.
Here they are **stacked**: every parameter and buffer gets a leading student axis ``S`` (the
layout of :func:`torch.func.stack_module_state`), one mini-batch and one cached teacher output
serve every student, and one forward/backward pass computes all their gradients.

>>> specs = [StudentSpec(seed=0, temperature=T, removed_classes=(c,)) for c in range(10) for T in (3, 9)]
>>> result = train_students("cnn_student", specs, train, teacher_logits, test=test, epochs=2)
>>> result.class_accuracy[:, 3]          # every student's accuracy on class 3's test images

Backends
--------
``backend="grouped"`` (default): the template model is deep-copied and its layers are swapped
for stacked versions that work on a **grouped layout**: a feature map of student ``s`` occupies
channels ``s·C … s·C+C-1`` of one ``B×(S·C)×H×W`` tensor. Then

* ``Conv2d(Cin→Cout, groups=g)`` becomes one convolution with ``groups=S·g`` (weights
  ``S×Cout×Cin/g×k×k`` reshaped to ``S·Cout×…``); on the shared input image (``Cin``
  channels, not ``S·Cin``) it is a single ordinary convolution with ``S·Cout`` filters;
* ``BatchNorm2d(C)`` becomes batch norm over ``S·C`` channels, which is exactly per-student
  batch norm (statistics are per channel); running statistics are views of ``S×C`` buffers;
* ``Flatten`` turns ``B×(S·C)×H×W`` into ``S×B×(C·H·W)`` (each student's features in the
  original ``(C, H, W)`` order) and ``Linear`` becomes a batched matmul on ``S×B×D``;
* element-wise and channel-local modules (ReLU, pooling, dropout, identity, …) and element-wise
  functional code in ``forward`` (residual sums, ``F.relu``) work on the grouped layout as they are.

The model's own ``forward`` runs unchanged, so any zoo model made of these parts works (thesis
CNNs and linear student, CIFAR ResNets, WRNs, MobileNetV2). Code that mixes channels outside a
module (channel shuffle, ``torch.cat`` on channels) would silently be wrong, so every stack is
checked once at construction: its eval-mode output on a probe batch must equal each student's
own output, otherwise a :class:`~kdlens.errors.KdlensError` suggests ``backend="vmap"``.

``backend="vmap"``: :func:`torch.func.stack_module_state` + :func:`torch.func.functional_call`
+ :func:`torch.func.vmap` over (parameters, buffers, sample weights), input shared
(``in_dims=None``) or per student. Works for any module; slower on CPU.

BatchNorm under stacking
------------------------
Running statistics are buffers with the student axis: ``grouped`` updates them in place through
channel views, ``vmap`` passes them with ``in_dims=0`` and batch norm updates the batched
buffers in place (supported by vmap because the buffers themselves are batched). In training
mode with sample weights (masked students, padded batches, see below) batch norm is computed
by :func:`weighted_batch_norm`: mean and (biased) variance over the student's samples with
weight ``w > 0`` only, the running variance with Bessel's correction ``n/(n−1)``, ``n`` = kept
samples × spatial size — exactly ``nn.BatchNorm2d`` applied to the kept samples. So a removed
class's images never influence a student, not even through batch statistics. A student with no
kept sample in a batch leaves its running statistics (and, see below, its parameters) alone.
``masked_batch_norm=False`` uses plain batch norm over the whole batch instead (faster; the
removed images then do enter the statistics).

Per-student sample weights and their semantics
----------------------------------------------
``batches="shared"`` (default): one batch stream over the whole training set (shuffled with
the per-epoch generator of :class:`~kdlens.train.trainer.Trainer`). Student ``s`` gives sample
``b`` the weight ``w[s,b] = 1`` if its label is not among ``spec.removed_classes`` and (when
``spec.subset`` is given) its index is in the subset, else 0, and minimises
``L_s = Σ_b w[s,b]·ℓ[s,b] / Σ_b w[s,b]``. A student whose batch has no kept sample takes no
step at all (no weight decay, no momentum update). Hence a stacked student is trained **on its
subset with batches that are the full-set batches restricted to the subset**: every kept
example once per epoch, in a uniformly random order, but with *variable batch sizes* (about
``B·|subset|/N``) and as many steps as there are non-empty restricted batches. That is **not**
the batch composition of a loader over the subset (fixed batch size ``B``, ``⌈|subset|/B⌉``
steps); for 90 % subsets (missing-class test) the difference is small, for tiny subsets it is
not — use ``batches="own"`` there.

``batches="own"``: every student iterates over its own subset exactly like a subset loader
(:class:`~kdlens.data.TensorBatches` over ``spec.subset`` minus the removed classes, shuffled
with the same per-epoch generator as the Trainer, batch size ``B``); the per-student batches are
stacked (a last, smaller batch is padded with weight-0 rows), so the stacked student equals a
student trained alone on its subset. Students whose epochs are shorter finish first and then
sit idle (they take no steps) while the others continue.

Optimiser
---------
SGD with momentum, dampening 0, weight decay and optional Nesterov, implemented functionally on
the stacked tensors with the formula of :class:`torch.optim.SGD`
(``g ← g + λ·p; b ← μ·b + g`` (``b ← g`` on a student's first step); ``d ← g + μ·b`` (Nesterov)
or ``d ← b``; ``p ← p − η·d``); the learning rate per epoch comes from the same scheduler
(:func:`~kdlens.train.schedules.build_scheduler`) a Trainer would use.

Loss
----
Per sample, with ``p`` the soft target of the student's source at its temperature ``T``:
``ℓ = α·T²·KL(p ‖ softmax(z/T)) + γ·CE(z, y)`` (Hinton et al. 2015; ``α, γ`` default to kdlens's
``kd`` method weights 0.9 / 0.1). ``spec.soft_source="ls"`` uses the label-smoothed target
``(1−α_LS)·onehot(y) + α_LS/K`` instead (the no-similarity control, Vats 2021 §4.4); ``noise``
adds uniform or normal noise to ``p``, clamps at 0 and renormalises (Vats 2021 §4.8, as
:class:`~kdlens.distill.losses.noisy_kd.NoisyKDLoss`), redrawn every step from the student's own
generator (seeded by ``spec.noise_seed``).

Equivalence: with the same init seed and batch order, a student trained in a stack matches
:func:`train_single_student` (a plain ``nn.Module`` and ``torch.optim.SGD``) up to float
rounding (grouped convolutions sum in a different order); the tests check 1e-4 relative, and
that a ``batches="own"`` student equals ``Trainer`` + ``DistillLoop`` (method ``kd``) on its
subset. Rounding differences stay at that level in well-conditioned training; in chaotic
regimes (large ``lr·T²`` with batch norm over a handful of samples) any two float orders
diverge, stacked or not. Students with active dropout draw different random masks in a stack
than alone. The ``vmap`` backend needs batch-norm layers with a ``momentum`` (the default 0.1),
not the cumulative average (``momentum=None``).

Where the time goes
-------------------
Stacking shares the batch gathering and normalisation, the teacher-logit lookup, the soft
targets, the first convolution on the shared image (one wide convolution) and the Python and
dispatch overhead of every step. It does not reduce the arithmetic or the activation memory
traffic, which grow linearly with ``S``; on a CPU the training of a small CNN is bound by that
traffic. Measured on this project's 2-core CPU (``benchmarks/missing_class_sweep.py``, 70
students, both paths with the same allocator setting): thesis CNN student 0.9–1.2× the speed
of one-by-one training (no gain), linear baseline student about 6× (per-step overhead dominates
it). Large gains are expected where single small models leave the device idle (GPUs; not
measured here). ``chunk_size`` bounds the students per
pass (memory: a chunk's activations are ``chunk_size`` times a model's), ``channels_last``
helps oneDNN's grouped convolutions, and on CPUs :class:`reuse_cpu_memory` keeps big
activations off fresh ``mmap`` pages.

Modules
-------
* :mod:`.spec` — :class:`StudentSpec` (what differs between the students) and :class:`StackResult`.
* :mod:`.weighted_bn` — :func:`weighted_batch_norm` and :class:`SampleWeightedBatchNorm2d`.
* :mod:`.grouped` — the ``grouped`` backend's layers and the model surgery that installs them.
* :mod:`.stack` — :class:`StackedStudents` (both backends, the construction-time check).
* :mod:`.sgd` — :func:`sgd_step_` and the per-epoch learning rates.
* :mod:`.targets` — soft targets and the per-sample loss.
* :mod:`.batching` — teacher logits, allowed examples, the ``shared`` / ``own`` batch streams.
* :mod:`.cpu_memory` — :class:`reuse_cpu_memory` (a process-wide glibc allocator setting).
* :mod:`.evaluation` — eval-mode logits and (per-class) accuracies of a stack.
* :mod:`.training` — :func:`train_students`.
* :mod:`.reference` — :func:`train_single_student`, the one-by-one reference.
"""

from kdlens.train.vectorized.cpu_memory import reuse_cpu_memory
from kdlens.train.vectorized.evaluation import accuracies, evaluate_stack, stack_logits
from kdlens.train.vectorized.reference import train_single_student
from kdlens.train.vectorized.sgd import sgd_step_
from kdlens.train.vectorized.spec import KD_ALPHA, KD_GAMMA, StackResult, StudentSpec
from kdlens.train.vectorized.stack import StackedStudents
from kdlens.train.vectorized.training import train_students
from kdlens.train.vectorized.weighted_bn import (
    SampleWeightedBatchNorm2d,
    weighted_batch_norm,
)

__all__ = [
    "KD_ALPHA",
    "KD_GAMMA",
    "SampleWeightedBatchNorm2d",
    "StackResult",
    "StackedStudents",
    "StudentSpec",
    "accuracies",
    "evaluate_stack",
    "reuse_cpu_memory",
    "sgd_step_",
    "stack_logits",
    "train_single_student",
    "train_students",
    "weighted_batch_norm",
]
