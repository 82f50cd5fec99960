"""Stacked student training (kdlens.train.vectorized): equivalence with one-by-one training."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlens.config import OptimConfig
from kdlens.data import BatchAugment, Dataset, load_dataset
from kdlens.distill import build_objective
from kdlens.errors import KdlensError
from kdlens.train.data_setup import InMemorySource
from kdlens.train.distill_loop import DistillLoop
from kdlens.train.trainer import Trainer
from kdlens.train.vectorized import (
    SampleWeightedBatchNorm2d,
    StackedStudents,
    StudentSpec,
    sgd_step_,
    train_single_student,
    train_students,
    weighted_batch_norm,
)

OPTIM = OptimConfig(lr=0.01, schedule="constant")  # a well-conditioned regime: rounding does not blow up


@pytest.fixture(scope="module")
def digits():
    train = load_dataset("digits", "train").subset(range(640))  # 10 batches of 64: quick
    test = load_dataset("digits", "test")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(len(train), 10, generator=g) * 2 + 4 * F.one_hot(train.labels, 10)
    return train, test, logits


def _rel_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for k, v in b.items():
        if v.dtype.is_floating_point:
            worst = max(worst, float((a[k] - v).abs().max() / (v.abs().max() + 1e-12)))
        else:
            assert torch.equal(a[k], v), k
    return worst


SPECS = [
    StudentSpec(seed=1, temperature=3.0, removed_classes=(2,)),
    StudentSpec(seed=2, temperature=1.0, soft_source="ls", alpha_ls=0.2),
    StudentSpec(seed=3, temperature=6.0, noise="uniform", noise_scale=0.1, noise_seed=5,
                subset=tuple(range(0, 640, 2))),
]


@pytest.mark.parametrize(("backend", "batches", "channels_last"), [
    ("grouped", "shared", False), ("grouped", "own", False), ("grouped", "shared", True), ("vmap", "shared", False),
])
def test_stack_of_three_equals_three_single_runs(digits, backend, batches, channels_last):
    train, test, logits = digits
    stacked = train_students("thesis_student", SPECS, train, logits, test=test, epochs=1, batch_size=64,
                             optim=OPTIM, batches=batches, backend=backend, channels_last=channels_last)
    for i, spec in enumerate(SPECS):
        model, info = train_single_student("thesis_student", spec, train, logits, test=test, epochs=1,
                                           batch_size=64, optim=OPTIM, batches=batches)
        assert _rel_diff(stacked.state_dicts[i], model.state_dict()) < 1e-4
        assert stacked.steps[i] == info["steps"]
        assert abs(stacked.accuracy[i] - info["accuracy"]) <= 100.0 / len(test) + 1e-9
    assert np.isfinite(stacked.class_accuracy).all() and stacked.class_accuracy.shape == (3, 10)


def test_own_batches_reproduce_the_standard_distillation_trainer(digits):
    """A stacked student with its own subset loader equals `Trainer` + `DistillLoop` (method kd)
    on that subset: same init seed, same per-epoch batch order, same γ·CE + α·T²·KL."""
    train, _, logits = digits
    keep = np.flatnonzero(train.labels.numpy() != 4)
    spec = StudentSpec(seed=7, temperature=4.0, removed_classes=(4,))
    stacked = train_students("thesis_student", [spec, StudentSpec(seed=8)], train, logits, epochs=2,
                             batch_size=64, optim=OPTIM, batches="own", seed=3)
    from kdlens.train.model_setup import model_for_data

    model = model_for_data("thesis_student", train, 7)
    source = InMemorySource(train.images, train.labels, keep, 64, BatchAugment(mean=train.mean, std=train.std),
                            torch.device("cpu"))
    loop = DistillLoop(source, lambda batch: (logits[batch.idx], []), build_objective("kd", T=4.0))
    Trainer(model, loop, OPTIM, 2, seed=3, progress=False).fit()
    assert _rel_diff(stacked.state_dicts[0], model.state_dict()) < 1e-4


def test_removed_class_images_never_reach_the_student(digits):
    """Replacing the removed class's images by noise changes nothing (loss *and* batch norm)."""
    train, _, logits = digits
    train, logits = train.subset(range(320)), logits[:320]
    spec = StudentSpec(seed=0, temperature=4.0, removed_classes=(3,))
    images = train.images.clone()
    three = train.labels == 3
    images[three] = torch.randint(0, 256, images[three].shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    noisy = Dataset(train.name, images, train.labels, train.classes, mean=train.mean, std=train.std)
    a = train_students("thesis_student", [spec], train, logits, epochs=1, batch_size=64, optim=OPTIM)
    b = train_students("thesis_student", [spec], noisy, logits, epochs=1, batch_size=64, optim=OPTIM)
    assert _rel_diff(a.state_dicts[0], b.state_dicts[0]) == 0.0
    # plain (unmasked) batch norm does let them in
    c = train_students("thesis_student", [spec], noisy, logits, epochs=1, batch_size=64, optim=OPTIM,
                       masked_batch_norm=False)
    assert _rel_diff(a.state_dicts[0], c.state_dicts[0]) > 1e-3


def test_shared_batches_skip_steps_without_kept_samples(digits):
    train, _, logits = digits
    tiny = tuple(np.flatnonzero(train.labels.numpy() == 0)[:3].tolist())  # 3 examples in 1437
    r = train_students("baseline_student", [StudentSpec(subset=tiny), StudentSpec()], train, logits,
                       epochs=1, batch_size=64, optim=OPTIM)
    assert r.steps[0] <= 3 and r.steps[1] == -(-len(train) // 64)


def test_weighted_batch_norm_is_batch_norm_on_the_kept_samples():
    torch.manual_seed(0)
    x = torch.randn(12, 4, 5, 5, dtype=torch.float64) * 2 + 1
    keep = torch.tensor([1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 1, 1], dtype=torch.float64)
    ref = nn.BatchNorm2d(4).double()
    ref.weight.data.uniform_()
    ref.bias.data.uniform_()
    ours = SampleWeightedBatchNorm2d.from_bn(ref)
    xr = x.clone().requires_grad_(True)
    xo = x.clone().requires_grad_(True)
    y_ref = ref(xr[keep.bool()])
    ours.sample_weight = keep
    y_ours = ours(xo)[keep.bool()]
    torch.testing.assert_close(y_ours, y_ref)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    up = torch.randn_like(y_ref)
    g_ref = torch.autograd.grad((y_ref * up).sum(), [xr, ref.weight, ref.bias])
    g_ours = torch.autograd.grad((y_ours * up).sum(), [xo, ours.weight, ours.bias])
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b)
    # and the closed-form backward passes gradcheck, several students at once
    w = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]], dtype=torch.float64)
    xs = torch.randn(4, 2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    gam = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    bet = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: weighted_batch_norm(a, w, None, None, b, c, 0.1, 1e-5), (xs, gam, bet))


@pytest.mark.parametrize("nesterov", [False, True])
def test_functional_sgd_matches_torch_sgd(nesterov):
    torch.manual_seed(0)
    params = [torch.randn(3, 4, 5), torch.randn(3, 7)]
    ref = [nn.Parameter(p.clone()) for p in params]
    opt = torch.optim.SGD(ref, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    bufs = [torch.zeros_like(p) for p in params]
    started = torch.zeros(3, dtype=torch.bool)
    active = torch.ones(3, dtype=torch.bool)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        for r, g in zip(ref, grads):
            r.grad = g.clone()
        opt.step()
        sgd_step_(params, grads, bufs, started, active, 0.1, 0.9, 5e-4, nesterov)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p, r.detach(), rtol=1e-6, atol=1e-7)


def test_inactive_students_do_not_move():
    p = [torch.ones(2, 3)]
    before = p[0].clone()
    bufs = [torch.zeros(2, 3)]
    started = torch.zeros(2, dtype=torch.bool)
    sgd_step_(p, [torch.ones(2, 3)], bufs, started, torch.tensor([True, False]), 0.1, 0.9, 0.1)
    assert torch.equal(p[0][1], before[1]) and not torch.equal(p[0][0], before[0])
    assert started.tolist() == [True, False]


class _Shuffle(nn.Module):
    """A model that mixes channels outside a module (channel reversal): not groupable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.flatten(self.conv(x).flip(1)))


def test_grouped_backend_refuses_models_it_would_get_wrong():
    x = torch.randn(2, 1, 8, 8)
    models = [_Shuffle() for _ in range(3)]
    with pytest.raises(KdlensError, match="vmap"):
        StackedStudents(models, "grouped", example_input=x)
    stack = StackedStudents(models, "vmap", example_input=x)  # vmap handles any module
    assert stack(x).shape == (3, 2, 10)
    with pytest.raises(KdlensError, match="vmap"):
        StackedStudents([nn.Sequential(nn.Conv1d(1, 2, 3)) for _ in range(2)], "grouped")


def test_bad_specs_are_user_errors(digits):
    train, _, logits = digits
    for bad in (StudentSpec(temperature=0.0), StudentSpec(removed_classes=(10,)), StudentSpec(teacher=1)):
        with pytest.raises(KdlensError):
            train_students("baseline_student", [bad], train, logits)
    with pytest.raises(KdlensError, match="teacher logits"):
        train_students("baseline_student", [StudentSpec()], train, logits[:10])


def test_reuse_cpu_memory_is_a_scoped_setting():
    from kdlens.train.vectorized import reuse_cpu_memory

    with reuse_cpu_memory() as ctx:
        a = torch.ones(40 << 18)  # 40 MiB: above glibc's mmap ceiling
        assert float(a.sum()) == a.numel()
    assert ctx._mallopt is None
    with reuse_cpu_memory(enabled=False) as off:
        assert off._mallopt is None
