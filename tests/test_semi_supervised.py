"""Semi-supervised baselines (issue 17): hand-checked losses on tiny batches, the EMA update,
FixMatch's threshold mask, MixMatch's sharpening and mixup, batched RandAugment + Cutout,
and every method end to end on digits through the run entry point (plus an exact resume)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import DistillConfig, TrainConfig, validate
from kdlens.data.strong_augment import OPERATIONS, RandAugment, cutout
from kdlens.errors import KdlensError
from kdlens.store import RunIndex, safe_torch_load
from kdlens.train.loop import Batch
from kdlens.train.semi_loops import (
    SEMI_LOOPS,
    RawBatches,
    Views,
    WeightEMA,
    confident_pseudo_labels,
    linear_rampup,
    masked_pseudo_label_loss,
    mixup,
    resolve_params,
    sharpen,
    sigmoid_rampup,
)
from kdlens.train.semi_run import run_semi_supervised

METHODS = ["pseudo_label", "pi_model", "mean_teacher", "mixmatch", "fixmatch"]


def _loop(method: str, epochs: int = 20, unlabeled: int = 4, **options):
    """A loop with one unlabeled batch per epoch (so epoch e's step has progress e/epochs)."""
    images = torch.zeros(unlabeled + 2, 1, 1, 2)
    labels = torch.zeros(unlabeled + 2, dtype=torch.long)
    cls = SEMI_LOOPS.get(method)
    params = resolve_params(cls.Params, options, method)
    lab = RawBatches(images, labels, np.array([0, 1]), 2)
    unl = RawBatches(images, labels, np.arange(2, unlabeled + 2), unlabeled)
    return cls(lab, unl, Views(0, False, None, None), epochs, params)


def _batch(rows: list[list[float]], labels: list[int], **extras) -> Batch:
    """Inputs that an ``nn.Flatten()`` model turns into exactly these logits."""
    x = torch.tensor(rows, dtype=torch.float32).view(len(rows), -1, 1, 1)
    n_labeled = sum(1 for y in labels if y >= 0)
    extras = {k: torch.tensor(v, dtype=torch.float32).view(len(v), -1, 1, 1) if k == "x2" else v
              for k, v in extras.items()}
    return Batch(x=x, y=torch.tensor(labels), idx=torch.arange(len(rows)),
                 extras={"n_labeled": torch.tensor(n_labeled), **extras})


LN3, LN4, LN9 = math.log(3), math.log(4), math.log(9)


# -- ramps ---------------------------------------------------------------------------------

def test_ramps_follow_the_papers_curves():
    assert sigmoid_rampup(0.0, 0.25) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(0.125, 0.25) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(0.25, 0.25) == 1.0 and sigmoid_rampup(0.9, 0.25) == 1.0
    assert sigmoid_rampup(0.0, 0.0) == 1.0
    assert linear_rampup(0.05, 0.1, 0.6) == 0.0
    assert linear_rampup(0.35, 0.1, 0.6) == pytest.approx(0.5)
    assert linear_rampup(0.6, 0.1, 0.6) == 1.0


# -- Pseudo-Label -------------------------------------------------------------------------

def test_pseudo_label_loss_by_hand():
    loop = _loop("pseudo_label")  # α_f = 3 ramped from 10 % to 60 % of training
    loop.on_epoch_start(7)  # progress 7/20 = 0.35: α = 1.5
    batch = _batch([[LN3, 0], [0, LN4], [LN9, 0]], [0, -1, -1])
    out = loop.step(nn.Flatten(), batch)
    ce = -math.log(0.75)
    pseudo = (-math.log(0.8) - math.log(0.9)) / 2  # argmax classes 1 and 0, their own probabilities
    assert out.parts["ce"].item() == pytest.approx(ce, abs=1e-6)
    assert out.parts["pseudo"].item() == pytest.approx(pseudo, abs=1e-6)
    assert out.parts["u_weight"] == pytest.approx(1.5)
    assert out.loss.item() == pytest.approx(ce + 1.5 * pseudo, abs=1e-6)
    assert out.targets.tolist() == [0] and out.logits.shape == (1, 2)


def test_pseudo_label_threshold_averages_over_all_unlabeled():
    loop = _loop("pseudo_label", threshold=0.85)
    loop.on_epoch_start(19)
    out = loop.step(nn.Flatten(), _batch([[LN3, 0], [0, LN4], [LN9, 0]], [0, -1, -1]))
    assert out.parts["pseudo"].item() == pytest.approx(-math.log(0.9) / 2, abs=1e-6)  # only p = 0.9 ≥ 0.85
    assert out.parts["u_weight"] == pytest.approx(3.0)


# -- Π-model and Mean Teacher ---------------------------------------------------------------

def test_pi_model_loss_by_hand():
    loop = _loop("pi_model")
    loop.on_epoch_start(0)  # progress 0: w = 100·exp(−5)
    batch = _batch([[0, 0], [LN3, 0]], [0, -1], x2=[[LN3, 0], [0, 0]])
    out = loop.step(nn.Flatten(), batch)
    cons = (0.25**2 + 0.25**2) / 2  # per example: ‖(.5,.5) − (.75,.25)‖² / C, the same for both
    w = 100 * math.exp(-5)
    assert out.parts["consistency"].item() == pytest.approx(cons, abs=1e-7)
    assert out.parts["u_weight"] == pytest.approx(w)
    assert out.loss.item() == pytest.approx(math.log(2) + w * cons, abs=1e-6)


def test_pi_model_gradient_flows_through_both_passes():
    loop = _loop("pi_model")
    loop.on_epoch_start(19)
    batch = _batch([[0, 0], [LN3, 0]], [0, -1], x2=[[LN3, 0], [0, 0]])
    batch.x.requires_grad_(True)
    batch.extras["x2"].requires_grad_(True)
    loop.step(nn.Flatten(), batch).loss.backward()
    assert batch.extras["x2"].grad.abs().sum() > 0 and batch.x.grad[1].abs().sum() > 0


def test_mean_teacher_loss_by_hand_and_teacher_gets_no_gradient():
    loop = _loop("mean_teacher")
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
        model[1].bias.zero_()
    loop.bind(model)
    loop.on_epoch_start(19)  # after the ramp-up: w = 100
    batch = _batch([[0, 0], [LN3, 0]], [0, -1], x2=[[LN3, 0], [0, 0]])
    out = loop.step(model, batch)
    cons = (0.25**2 + 0.25**2) / 2
    assert out.parts["consistency"].item() == pytest.approx(cons, abs=1e-7)
    assert out.loss.item() == pytest.approx(math.log(2) + 100 * cons, abs=1e-5)
    out.loss.backward()
    assert model[1].weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in loop.ema.model.parameters())


def test_ema_update_is_the_formula():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = WeightEMA(model)
    before = [p.detach().double().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    ema.update(model, 0.999)
    for e, old, new in zip(ema.model.parameters(), before, model.parameters()):
        expected = 0.999 * old + 0.001 * new.detach().double()
        assert torch.allclose(e.double(), expected, rtol=0, atol=1e-7)
    assert ema.updates == 1


def test_mean_teacher_ema_decay_schedule_and_optimizer_hook():
    loop = _loop("mean_teacher", epochs=30)  # ramp-up: the first 26.7 % of the steps
    assert loop.ema_decay(0.1) == 0.99 and loop.ema_decay(0.5) == 0.999
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loop.bind(model, opt)
    for epoch, decay in ((0, 0.99), (20, 0.999)):
        loop.on_epoch_start(epoch)
        teacher_before = [p.detach().double().clone() for p in loop.ema.model.parameters()]
        out = loop.step(model, _batch([[0, 1], [1, 0]], [0, -1], x2=[[1, 0], [0, 1]]))
        opt.zero_grad()
        out.loss.backward()
        opt.step()  # the hook updates the teacher with this step's decay
        for e, old, new in zip(loop.ema.model.parameters(), teacher_before, model.parameters()):
            assert torch.allclose(e.double(), decay * old + (1 - decay) * new.detach().double(), rtol=0, atol=1e-7)
    assert loop.ema.updates == 2
    state = loop.state_dict()
    assert set(state) == {"ema"} and state["ema"]["updates"] == 2


# -- MixMatch -------------------------------------------------------------------------------

def test_sharpen_by_hand():
    q = sharpen(torch.tensor([[0.6, 0.4], [0.5, 0.5]]), 0.5)
    assert torch.allclose(q, torch.tensor([[0.36 / 0.52, 0.16 / 0.52], [0.5, 0.5]]))


def test_mixup_by_hand():
    x = torch.tensor([[1.0], [3.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mx, mt = mixup(x, t, torch.tensor([1, 0]), torch.tensor([0.7, 0.9]))
    assert torch.allclose(mx, torch.tensor([[1.6], [2.8]]))
    assert torch.allclose(mt, torch.tensor([[0.7, 0.3], [0.1, 0.9]]))


def test_mixmatch_loss_by_hand():
    loop = _loop("mixmatch", k=1)
    loop.on_epoch_start(19)  # past the λ_U warm-up: λ_U = 75
    batch = _batch([[0, 0], [LN3, 0]], [0, -1], perm=torch.tensor([1, 0]), lam=torch.tensor([0.75, 1.0]))
    out = loop.step(nn.Flatten(), batch)
    # guess for the unlabeled example: softmax = (.75, .25), sharpened at T = .5 → (.9, .1)
    # mixed labeled input 0.75·(0, 0) + 0.25·(ln 3, 0), target 0.75·(1, 0) + 0.25·(.9, .1)
    a = 0.25 * LN3
    p0, p1 = math.exp(a) / (math.exp(a) + 1), 1 / (math.exp(a) + 1)
    lx = -(0.975 * math.log(p0) + 0.025 * math.log(p1))
    lu = ((0.75 - 0.9) ** 2 + (0.25 - 0.1) ** 2) / 2  # the unlabeled example mixed with itself (λ' = 1)
    assert out.parts["ce"].item() == pytest.approx(lx, abs=1e-6)
    assert out.parts["consistency"].item() == pytest.approx(lu, abs=1e-7)
    assert out.loss.item() == pytest.approx(lx + 75 * lu, abs=1e-5)


def test_mixmatch_batch_draws_lambda_at_least_half_and_k_views():
    images = (torch.arange(6 * 2 * 4 * 4) % 256).to(torch.uint8).view(6, 2, 4, 4)
    cls = SEMI_LOOPS.get("mixmatch")
    loop = cls(RawBatches(images, torch.zeros(6, dtype=torch.long), np.array([0, 1]), 2),
               RawBatches(images, torch.zeros(6, dtype=torch.long), np.arange(2, 6), 4),
               Views(1, True, None, None), 1, resolve_params(cls.Params, {}, "mixmatch"))
    loop.on_epoch_start(0)
    (batch,) = list(loop.batches(torch.Generator().manual_seed(0)))
    assert batch.x.shape == (2 + 2 * 4, 2, 4, 4) and batch.y.tolist() == [0, 0] + [-1] * 8
    assert bool((batch.extras["lam"] >= 0.5).all()) and sorted(batch.extras["perm"].tolist()) == list(range(10))
    (again,) = list(loop.batches(torch.Generator().manual_seed(0)))
    assert torch.equal(batch.x, again.x) and torch.equal(batch.extras["lam"], again.extras["lam"])


# -- FixMatch -------------------------------------------------------------------------------

def test_fixmatch_threshold_mask():
    logits = torch.tensor([[math.log(19.5), 0.0], [math.log(18.0), 0.0], [0.0, math.log(99.0)]])
    labels, mask = confident_pseudo_labels(logits, 0.95)  # p = 0.951, 0.947, 0.99
    assert mask.tolist() == [True, False, True] and labels.tolist() == [0, 0, 1]
    loss = masked_pseudo_label_loss(torch.zeros(3, 2), labels, mask)
    assert loss.item() == pytest.approx(2 * math.log(2) / 3, abs=1e-6)  # mean over all three


def test_fixmatch_loss_by_hand():
    loop = _loop("fixmatch")
    loop.on_epoch_start(0)
    # labeled (0, 0); weak views (ln 39, 0) [p = .975: kept, class 0] and (0, 0) [dropped];
    # strong views (0, ln 3) [CE for class 0 = −ln .25] and (5, 5)
    batch = _batch([[0, 0], [math.log(39), 0], [0, 0], [0, LN3], [5, 5]], [0, -1, -1, -1, -1])
    out = loop.step(nn.Flatten(), batch)
    assert out.parts["mask"].item() == 0.5
    assert out.parts["unlabeled"].item() == pytest.approx(-math.log(0.25) / 2, abs=1e-6)
    assert out.loss.item() == pytest.approx(math.log(2) - math.log(0.25) / 2, abs=1e-6)


def test_fixmatch_batch_has_weak_and_strong_views_of_mu_times_b():
    images = (torch.rand(40, 1, 8, 8) * 255).to(torch.uint8)
    labels = torch.arange(40) % 2
    cls = SEMI_LOOPS.get("fixmatch")
    params = resolve_params(cls.Params, {}, "fixmatch")
    loop = cls(RawBatches(images, labels, np.arange(4), 2), RawBatches(images, labels, np.arange(4, 40), 2 * params.mu),
               Views(1, True, None, None, RandAugment()), 1, params)
    batches = list(loop.batches(torch.Generator().manual_seed(3)))
    assert loop.num_batches() == len(batches) == 3  # 36 unlabeled in batches of 14
    assert batches[0].x.shape[0] == 2 + 2 * 14 and (batches[0].y[2:] == -1).all()
    assert not torch.equal(batches[0].x[2:16], batches[0].x[16:])  # strong ≠ weak


# -- hyper-parameters ------------------------------------------------------------------------

def test_defaults_are_the_papers():
    get = lambda m: resolve_params(SEMI_LOOPS.get(m).Params, {}, m)  # noqa: E731
    fm = get("fixmatch")
    assert (fm.threshold, fm.lambda_u, fm.mu, fm.num_ops, fm.cutout) == (0.95, 1.0, 7, 2, 0.5)
    mm = get("mixmatch")
    assert (mm.temperature, mm.k, mm.alpha, mm.lambda_u, mm.ema_decay) == (0.5, 2, 0.75, 75.0, 0.999)
    mt = get("mean_teacher")
    assert (mt.weight, mt.ema_decay_rampup, mt.ema_decay) == (100.0, 0.99, 0.999)
    assert mt.rampup == pytest.approx(40 / 150) and get("pi_model").rampup == pytest.approx(80 / 300)
    pl = get("pseudo_label")
    assert (pl.weight, pl.ramp_start, pl.ramp_end, pl.threshold) == (3.0, 0.1, 0.6, 0.0)


def test_unknown_or_wrong_options_are_named():
    cls = SEMI_LOOPS.get("fixmatch")
    with pytest.raises(KdlensError, match="threshold"):
        resolve_params(cls.Params, {"treshold": 0.9}, "fixmatch")
    with pytest.raises(KdlensError, match="mu"):
        resolve_params(cls.Params, {"mu": 0}, "fixmatch")
    with pytest.raises(KdlensError, match="expects a int"):
        resolve_params(cls.Params, {"mu": 2.5}, "fixmatch")
    assert resolve_params(cls.Params, {"lambda_u": 2}, "fixmatch").lambda_u == 2.0


def test_config_semi_needs_a_budget_and_keeps_supervised_identity():
    with pytest.raises(KdlensError, match="data.budget"):
        validate(TrainConfig, {"semi": "fixmatch"})
    with pytest.raises(KdlensError, match="pi_model"):
        validate(TrainConfig, {"semi": "pi_modle", "data": {"budget": 10}})
    plain = validate(TrainConfig, {}).identity()
    assert "semi" not in plain and "semi_options" not in plain
    semi = validate(TrainConfig, {"semi": "mixmatch", "data": {"budget": 10}}).identity()
    assert semi["semi"] == "mixmatch"
    with pytest.raises(KdlensError, match="kdlens train semi"):
        validate(DistillConfig, {"teacher": {"run": "x"}, "semi": "fixmatch", "data": {"budget": 10}})
    with pytest.raises(KdlensError, match="kdlens train semi=mean_teacher"):
        validate(DistillConfig, {"teacher": {"run": "x"}, "loop": "mean_teacher"})


# -- RandAugment + Cutout ---------------------------------------------------------------------

def test_randaugment_is_seeded_batched_and_accepts_uint8_or_float():
    images = (torch.rand(32, 3, 12, 12) * 255).to(torch.uint8)
    aug = RandAugment()
    a = aug(images, torch.Generator().manual_seed(1))
    b = aug(images.float() / 255, torch.Generator().manual_seed(1))
    assert a.shape == images.shape and a.dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-6) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, aug(images, torch.Generator().manual_seed(2)))


def test_point_operations_match_pil():
    Image = pytest.importorskip("PIL.Image")
    from PIL import ImageOps

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (3, 1, 10, 10)).astype(np.uint8)
    raw[1] = raw[1] // 4 + 60  # a low-contrast image
    x = torch.from_numpy(raw).float() / 255

    def pil(fn):
        return torch.stack([torch.from_numpy(np.array(fn(Image.fromarray(img[0])))) for img in raw])[:, None].float() / 255

    assert torch.equal(OPERATIONS["equalize"](x, torch.zeros(3), 0.5), pil(ImageOps.equalize))
    assert torch.equal(OPERATIONS["posterize"](x, torch.full((3,), 5.7), 0.5), pil(lambda im: ImageOps.posterize(im, 5)))
    assert torch.allclose(OPERATIONS["solarize"](x, torch.full((3,), 128 / 255), 0.5),
                          pil(lambda im: ImageOps.solarize(im, 128)))
    assert (OPERATIONS["autocontrast"](x, torch.zeros(3), 0.5) - pil(ImageOps.autocontrast)).abs().max() <= 1 / 255 + 1e-6


def test_geometric_operations_and_cutout_by_hand():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 1, 6] = 1.0
    moved = OPERATIONS["translate_x"](x, torch.tensor([0.25]), 0.0)  # 2 pixels to the left, as PIL
    assert (moved[0, 0] == 1).nonzero().tolist() == [[1, 4]]
    filled = OPERATIONS["translate_y"](x, torch.tensor([0.25]), 0.5)
    assert (filled[0, 0, 6:] == 0.5).all()  # the uncovered rows are grey
    out = cutout(torch.zeros(2, 1, 8, 8), torch.tensor([[0.0, 0.0], [4.0, 4.0]]), torch.tensor([4.0, 3.0]), 1.0)
    assert out[0, 0, :4, :4].eq(1).all() and out[0].sum() == 16  # clipped at the corner, side kept
    assert out[1, 0, 2:5, 2:5].eq(1).all() and out[1].sum() == 9


# -- end to end ---------------------------------------------------------------------------

def _cfg(tmp_path, method: str, **kw):
    base = {"model": {"name": "baseline_student"}, "data": {"name": "digits", "budget": 100}, "epochs": 1,
            "out": str(tmp_path / "runs"), "semi": method}
    base.update(kw)
    return validate(TrainConfig, base)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_one_epoch_on_digits_and_records_a_run(tmp_path, method):
    out = run_semi_supervised(_cfg(tmp_path, method), progress=False)
    assert 0 <= out.metrics["final_acc"] <= 100
    assert out.metrics["labeled"] == 100 and out.metrics["unlabeled"] > 1000
    assert out.metrics["semi"]["method"] == method
    assert (method in ("mean_teacher", "mixmatch", "fixmatch")) == ("ema_final_acc" in out.metrics)
    rec = RunIndex(tmp_path / "runs").get(out.run_id)
    assert rec.status == "done" and out.run_id.startswith(f"{method}-baseline_student-digits")
    assert (out.path / "splits" / "unlabeled.npy").exists()
    assert run_semi_supervised(_cfg(tmp_path, method), progress=False).skipped


def test_mean_teacher_resumes_exactly(tmp_path, monkeypatch):
    from kdlens.train.trainer import Trainer

    full = run_semi_supervised(_cfg(tmp_path, "mean_teacher", epochs=2, name="full"), progress=False)
    original = Trainer._train_epoch

    def stop_in_epoch_two(self, epoch, bar):
        if epoch == 1:
            raise RuntimeError("stopped")
        return original(self, epoch, bar)

    monkeypatch.setattr(Trainer, "_train_epoch", stop_in_epoch_two)
    with pytest.raises(RuntimeError, match="stopped"):
        run_semi_supervised(_cfg(tmp_path, "mean_teacher", epochs=2, name="cut"), progress=False)
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    resumed = run_semi_supervised(_cfg(tmp_path, "mean_teacher", epochs=2, name="cut"), resume=True, progress=False)
    a = safe_torch_load(full.path / "checkpoints" / "last.pt")
    b = safe_torch_load(resumed.path / "checkpoints" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    ta, tb = a["loop"]["ema"], b["loop"]["ema"]
    assert ta["updates"] == tb["updates"] > 0
    assert all(torch.equal(ta["model"][k], tb["model"][k]) for k in ta["model"])
    assert resumed.metrics["ema_final_acc"] == full.metrics["ema_final_acc"]


def test_train_cli_runs_semi_and_rejects_bad_input(tmp_path):
    runs = str(tmp_path / "runs")
    common = ["train", "--dataset", "digits", "--model", "baseline_student", "--epochs", "1", "--out", runs, "--quiet"]
    ok = CliRunner().invoke(app, [*common, "semi=pseudo_label", "data.budget=50"])
    assert ok.exit_code == 0, ok.output
    assert "pseudo_label" in ok.output
    for bad, says in ((["semi=fixmatch"], "data.budget"), (["semi=fixmatch", "data.budget=50", "semi_options={treshold: 0.9}"], "threshold"),
                      (["semi=fixmatch", "data.budget=50", "--ddp", "2"], "one process")):
        result = CliRunner().invoke(app, [*common, *bad])
        assert result.exit_code == 2 and says in result.output, (bad, result.output)


def test_limited_label_study_adds_semi_columns(tmp_path):
    from kdlens.studies.limited_label import limited_label_table, run_limited_label_study, semi_methods

    assert semi_methods("all") == METHODS and semi_methods(None) == []
    with pytest.raises(KdlensError, match="fixmatch"):
        semi_methods("fixmach")
    rows = run_limited_label_study("digits", budgets=[20], folds=1, teacher="baseline_student", student="baseline_student",
                                   student_epochs=1, unlabeled_limit=300, labeled_epochs_override=1,
                                   out=str(tmp_path), semi=["pseudo_label", "mean_teacher"])
    assert 0 <= rows[0]["pseudo_label"] <= 100 and "mean_teacher_ema" in rows[0]
    table = limited_label_table(rows)
    assert "Pseudo-Label" in table and "Mean Teacher" in table and table.count("\n") == 2
