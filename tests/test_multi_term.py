"""Any number of terms (issue 16): L = γ·CE + Σ_i α_i·L_logit,i + Σ_j β_j·L_hint,j, each hint
term with its own layers; AFD over any teacher × student layer counts; per-term warm-up."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import DistillConfig, TrainConfig, validate
from kdlens.distill import Objective, build_objective, create_loss
from kdlens.distill.cache import TeacherOutputCache, weights_hash
from kdlens.errors import KdlensError
from kdlens.models.reference import build_model
from kdlens.train.distill_loop import CachedTeacher, DistillLoop, LiveTeacher
from kdlens.train.distill_run import run_distillation, warmup_epochs
from kdlens.train.hint_layers import hint_blocks, resolve_layers
from kdlens.train.run import run_training

# --------------------------------------------------------------------------------------
# the objective on hand-built float64 tensors

B, K = 6, 5
CRD_S, CRD_T = [(8,)], [(12,)]
AT_S, AT_T = [(3, 4, 4), (4, 2, 2)], [(5, 4, 4), (6, 2, 2)]


def logits(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(B, K, generator=g, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(B, K, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (B,), generator=g)
    return zs, zt, y


def features(shapes, seed: int, grad: bool):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, *s, generator=g, dtype=torch.float64, requires_grad=grad) for s in shapes]


def crd_at_kd(**kw) -> Objective:
    return build_objective("crd+at+kd", {"crd": CRD_S, "at": AT_S}, {"crd": CRD_T, "at": AT_T},
                           n_data=50, nce_k=4, **kw).double()


def hand_ce(z, y):
    return -(z - z.exp().sum(1, keepdim=True).log()).gather(1, y[:, None]).mean()


def hand_kd(zs, zt, T=4.0):
    p_t = (zt / T).softmax(1)
    return (p_t * (p_t.log() - (zs / T).log_softmax(1))).sum(1).mean() * T * T


def hand_at(fs, ft):
    """AT, code form: ½·mean over batch and positions of the squared difference of the
    L2-normalised channel means of squares, summed over the pairs (equal spatial sizes)."""
    def q(f):
        m = f.pow(2).mean(1).flatten(1)
        return m / m.norm(dim=1, keepdim=True)

    return sum(0.5 * (q(s) - q(t)).pow(2).mean() for s, t in zip(fs, ft))


def test_total_is_gamma_ce_plus_weighted_terms_in_float64():
    zs, zt, y = logits()
    s_crd, t_crd = features(CRD_S, 1, True), features(CRD_T, 2, False)
    s_at, t_at = features(AT_S, 3, True), features(AT_T, 4, False)
    obj = crd_at_kd(weights={"crd": 0.7, "at": 300.0, "kd": 0.4}, gamma=0.2)
    assert obj.hint_names == ["crd", "at"]  # the feature lists: CRD's layers, then AT's
    crd_ref = copy.deepcopy(obj.term("crd").loss)  # same memory banks and normaliser state
    idx = torch.arange(B)
    total, parts = obj(zs, y, zt, s_crd + s_at, t_crd + t_at, indices=idx)
    crd = crd_ref(s_crd, t_crd, indices=idx)
    ce, kd, at = hand_ce(zs, y), hand_kd(zs, zt), hand_at(s_at, t_at)
    expected = 0.2 * ce + 0.4 * kd + 0.7 * crd + 300.0 * at
    assert total.dtype == torch.float64
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)
    assert parts["ce"] == pytest.approx(ce.item(), rel=1e-12)
    assert parts["logit.kd"] == pytest.approx(kd.item(), rel=1e-12)
    assert parts["hint.crd"] == pytest.approx(crd.item(), rel=1e-12)
    assert parts["hint.at"] == pytest.approx(at.item(), rel=1e-12)
    assert parts["hint"] == pytest.approx(crd.item() + at.item(), rel=1e-12)  # totals, for trackers
    assert parts["logit"] == parts["logit.kd"] and parts["total"] == pytest.approx(total.item())
    total.backward()
    assert all(f.grad is not None and torch.isfinite(f.grad).all() for f in [zs, *s_crd, *s_at])
    assert all(p.grad is not None for p in obj.term("crd").loss.embed_s.parameters())


def test_default_and_per_term_weights():
    obj = crd_at_kd()
    assert obj.weights == {"gamma": 0.1, "kd": 0.9, "crd": 0.8, "at": 1000.0}  # γ, α of KD; β of CRD, AT
    assert [t.name for t in obj.terms] == ["kd", "crd", "at"]  # logit terms first, then hint terms
    obj = crd_at_kd(weights={"at": 500.0}, alpha=0.5, gamma=1.0)
    assert obj.term_weights == {"kd": 0.5, "crd": 0.8, "at": 500.0} and obj.gamma == 1.0
    assert obj.alpha == 0.5  # one logit term: alpha is still its weight
    with pytest.raises(KdlensError, match=r"beta=2 is ambiguous.*weights\.crd"):
        crd_at_kd(beta=2)
    with pytest.raises(KdlensError, match="ambiguous"):
        obj.beta  # noqa: B018
    with pytest.raises(KdlensError, match=r"weights\.atx.*Did you mean: at"):
        crd_at_kd(weights={"atx": 1.0})
    with pytest.raises(KdlensError, match="cross-entropy weight is gamma"):
        crd_at_kd(weights={"ce": 1.0})
    with pytest.raises(KdlensError, match="both alpha and weights.kd"):
        crd_at_kd(weights={"kd": 1.0}, alpha=0.5)
    with pytest.raises(KdlensError, match="mapping"):
        build_objective("crd+at", CRD_S, CRD_T, n_data=50)
    two_logits = build_objective("kd+dkd", weights={"dkd": 2.0})
    assert two_logits.term_weights == {"kd": 0.9, "dkd": 2.0} and two_logits.gamma == 0.1
    with pytest.raises(KdlensError, match="alpha=1 is ambiguous"):
        build_objective("kd+dkd", alpha=1)
    assert build_objective("kd", kd={"T": 2.0}).logit_loss.T == 2.0  # loss.kd.T=2 on the CLI


@pytest.mark.parametrize("method", ["kd", "dkd", "at", "at+kd", "fitnet+kd", "crd", "crd+kd", "ab"])
def test_single_term_objective_is_the_old_formula(method):
    """Regression: with at most one term of each kind the value, parts and weights are
    what the former Objective computed: γ·CE + α·L_logit + β·L_hint, summed in that order."""
    zs, zt, y = logits(5)
    crd = "crd" in method
    s_shapes, t_shapes = (CRD_S, CRD_T) if crd else (AT_S, AT_T)
    kw = {"n_data": 50, "nce_k": 4} if crd else {}
    obj = build_objective(method, s_shapes, t_shapes, **kw).double()
    fs, ft = features(s_shapes, 6, True), features(t_shapes, 7, False)
    logit, hint = copy.deepcopy(obj.logit_loss), copy.deepcopy(obj.hint_loss)
    total, parts = obj(zs, y, zt, fs, ft, indices=torch.arange(B))
    old = obj.gamma * F.cross_entropy(zs, y)
    old_parts = {"ce", "total"}
    if logit is not None:
        old = old + obj.alpha * logit(zs, zt, y)
        old_parts.add("logit")
    if hint is not None:
        old = old + obj.beta * hint(fs, ft, targets=y, indices=torch.arange(B))
        old_parts.add("hint")
    assert total.item() == old.item()  # bit for bit
    assert set(parts) == old_parts and set(obj.weights) == {"gamma", "alpha", "beta"}


def test_checkpoints_from_before_terms_still_load():
    obj = build_objective("fitnet+kd", AT_S, AT_T)
    legacy = {k.replace("hint_terms.fitnet.", "hint_loss."): v.clone() + 1 for k, v in obj.state_dict().items()}
    assert any(k.startswith("hint_loss.") for k in legacy)
    obj.load_state_dict(legacy)
    after = obj.state_dict()
    assert all(torch.equal(after[k.replace("hint_loss.", "hint_terms.fitnet.")], v) for k, v in legacy.items())


def test_pretraining_sums_each_terms_own_and_main_phase_keeps_the_rest():
    obj = build_objective("ab+at", {"ab": [(4,), (4,)], "at": AT_S}, {"ab": [(4,), (4,)], "at": AT_T},
                          weights={"ab": 2.0}).double()
    s_ab, t_ab = features([(4,), (4,)], 8, True), features([(4,), (4,)], 9, False)
    s_at, t_at = features(AT_S, 10, True), features(AT_T, 11, False)
    assert obj.requires_pretraining
    pre = obj.pretrain_loss(s_ab + s_at, t_ab + t_at)
    assert pre.item() == pytest.approx(2.0 * obj.term("ab").loss.pretrain_loss(s_ab, t_ab).item(), rel=1e-12)
    main = obj.main_phase()  # AB is initialisation only (active_in_main_phase = False)
    assert main.hint_names == ["at"] and main.needs_features
    zs, zt, y = logits()
    _, parts = main(zs, y, zt, s_ab + s_at, t_ab + t_at)  # still reads AT's slice of the full lists
    assert parts["hint"] == pytest.approx(hand_at(s_at, t_at).item(), rel=1e-12)


# --------------------------------------------------------------------------------------
# AFD over all teacher × student layers (different counts)


def test_afd_three_teacher_two_student_layers_builds_and_backpropagates():
    s_shapes, t_shapes = [(4, 4, 4), (8, 2, 2)], [(4, 8, 8), (8, 4, 4), (16, 2, 2)]
    obj = build_objective("afd+kd", s_shapes, t_shapes).double()
    afd = obj.hint_loss
    assert not afd.pairs_layers and len(afd.teacher_shapes) == 3 and len(afd.student_shapes) == 2
    fs, ft = features(s_shapes, 12, True), features(t_shapes, 13, False)
    zs, zt, y = logits()
    total, parts = obj(zs, y, zt, fs, ft)
    assert afd.attention(fs, ft).shape == (B, 3, 2)
    total.backward()
    assert all(torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0 for f in fs)
    assert afd.pos_s.grad is not None and afd.key[1][0].weight.grad is not None
    with pytest.raises(KdlensError, match="one student layer per teacher layer"):
        create_loss("at", s_shapes, t_shapes)  # a pairing loss still needs equal counts


def test_hints_all_is_every_block():
    model = build_model("resnet20", 10, 1)
    example = torch.randn(2, 1, 8, 8)
    assert resolve_layers("all", model, example, "teacher") == hint_blocks(model)
    assert len(hint_blocks(model)) == 9


# --------------------------------------------------------------------------------------
# warm-up declared by the loss class (ReviewKD: 20 of 240 epochs), like DKD's


def test_reviewkd_warmup_weights_per_epoch():
    s_shapes = t_shapes = [(4, 4, 4), (8, 2, 2)]
    obj = build_objective("reviewkd+kd", s_shapes, t_shapes, beta=2.0)
    assert warmup_epochs(obj, 240) == {"reviewkd": 20}
    assert warmup_epochs(obj, 48) == {"reviewkd": 4}  # round(20 / 240 · 48)
    assert warmup_epochs(obj, 6) == {"reviewkd": 1}  # at least one epoch
    loop = DistillLoop(None, None, obj, warmup_epochs=warmup_epochs(obj, 48))
    seen = []
    for epoch in range(6):
        loop.on_epoch_start(epoch)
        seen.append((obj.term_weights["reviewkd"], obj.term_weights["kd"]))
    # β·min(1, (e + 1)/4): 2·¼, 2·½, 2·¾, 2, 2, 2; KD has no warm-up
    assert seen == [(0.5, 0.9), (1.0, 0.9), (1.5, 0.9), (2.0, 0.9), (2.0, 0.9), (2.0, 0.9)]
    both = build_objective("reviewkd+dkd", s_shapes, t_shapes)
    assert warmup_epochs(both, 24) == {"dkd": 2, "reviewkd": 2}
    assert warmup_epochs(build_objective("at+kd", s_shapes, t_shapes), 240) == {}


# --------------------------------------------------------------------------------------
# configs


def test_terms_config_sets_the_method_and_old_identities_stay():
    base = {"teacher": {"run": "x"}}
    cfg = validate(DistillConfig, {**base, "terms": [{"loss": "crd", "layers": ["penultimate"], "weight": 0.8},
                                                     {"loss": "at", "layers": "auto"}, {"loss": "kd", "weight": 0.9}]})
    assert cfg.method == "crd+at+kd" and cfg.terms[1].layers == "auto"
    with pytest.raises(KdlensError, match="terms list"):
        validate(DistillConfig, {**base, "method": "at+kd", "terms": [{"loss": "kd"}]})
    with pytest.raises(KdlensError, match="given twice"):
        validate(DistillConfig, {**base, "terms": [{"loss": "kd", "weight": 1}], "weights": {"kd": 2}})
    plain = validate(DistillConfig, {**base, "method": "at+kd"})
    assert "terms" not in plain.identity() and "weights" not in plain.identity()
    assert validate(DistillConfig, {**base, "weights": {"kd": 1}}).identity()["weights"] == {"kd": 1.0}


# --------------------------------------------------------------------------------------
# runs on digits, resnet8 teacher and student


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    cfg = validate(TrainConfig, {"model": {"name": "resnet8"}, "data": {"name": "digits"},
                                 "epochs": 1, "out": str(out), "name": "t"})
    return run_training(cfg, progress=False).path


def _last_row(path):
    return [json.loads(r) for r in (path / "metrics.jsonl").read_text().splitlines()][-1]


def test_crd_at_kd_cli_run(teacher_run, tmp_path):
    result = CliRunner().invoke(app, [
        "distill", "--teacher", str(teacher_run), "--student", "resnet8", "--method", "crd+at+kd",
        "--epochs", "1", "--out", str(tmp_path / "runs"), "--quiet",
        "weights.crd=0.5", "weights.at=20", "loss.crd.nce_k=32",
    ])
    assert result.exit_code == 0, result.output
    run = next((tmp_path / "runs").glob("crd_at_kd-*"))
    res = json.loads((run / "result.json").read_text())
    layers = res["hint_layers"]["terms"]
    assert layers["crd"] == {"teacher": ["penultimate"], "student": ["penultimate"]}
    assert layers["at"]["teacher"] == ["layer1.0", "layer2.0", "layer3.0"]  # hints: conventional
    row = _last_row(run)
    for part in ("train_ce", "train_logit.kd", "train_hint.crd", "train_hint.at", "train_hint", "train_logit"):
        assert part in row
    # epoch means of the parts obey the weights: γ = 0.1 (KD's), KD 0.9, CRD 0.5, AT 20
    weighted = 0.1 * row["train_ce"] + 0.9 * row["train_logit.kd"] + 0.5 * row["train_hint.crd"] + 20 * row["train_hint.at"]
    assert row["train_total"] == pytest.approx(weighted, rel=1e-5)


def test_terms_list_and_afd_all_pairs_run(teacher_run, tmp_path):
    base = {"teacher": {"run": str(teacher_run)}, "model": {"name": "resnet8"}, "data": {"name": "digits"},
            "epochs": 1, "out": str(tmp_path / "runs")}
    cfg = validate(DistillConfig, {**base, "terms": [
        {"loss": "rkd", "weight": 0.5}, {"loss": "at", "layers": [1, 3], "weight": 30}, {"loss": "kd", "weight": 0.9}]})
    out = run_distillation(cfg, progress=False)
    terms = out.metrics["hint_layers"]["terms"]
    assert terms["rkd"]["teacher"] == ["penultimate"] and terms["at"]["teacher"] == ["layer1.0", "layer3.0"]
    row = _last_row(out.path)
    weighted = 0.1 * row["train_ce"] + 0.9 * row["train_logit.kd"] + 0.5 * row["train_hint.rkd"] + 30 * row["train_hint.at"]
    assert row["train_total"] == pytest.approx(weighted, rel=1e-5)
    # AFD, all teacher blocks (3) × two student blocks: the counts may differ
    afd = run_distillation(validate(DistillConfig, {**base, "method": "afd+kd", "hints": "all",
                                                    "student_hints": [1, 3]}), progress=False)
    assert afd.metrics["hint_layers"] == {"teacher": ["layer1.0", "layer2.0", "layer3.0"],
                                          "student": ["layer1.0", "layer3.0"]}
    assert "train_hint" in _last_row(afd.path)
    with pytest.raises(KdlensError, match="pairs student layer i"):
        run_distillation(validate(DistillConfig, {**base, "method": "at", "hints": "all", "student_hints": [1, 3]}),
                         progress=False)


def test_a_layer_shared_by_two_terms_is_cached_once(teacher_run, tmp_path):
    from kdlens.train.data_setup import InMemorySource, prepare_data
    from kdlens.train.teacher import load_teacher

    data = prepare_data(validate(DistillConfig, {"teacher": {"run": "x"}, "data": {"name": "digits", "hflip": True}}).data)
    teacher = load_teacher(str(teacher_run), data.train)
    device = torch.device("cpu")
    names = ["layer3.0", "penultimate", "layer3.0"]  # AT and SP both at layer3.0, CRD at penultimate
    cache = TeacherOutputCache(tmp_path, weights_hash(teacher.model), "digits", "train", "t", flips=True,
                               feature_names=names)
    assert cache.stored_names == ["layer3.0", "penultimate"]
    assert cache.key_parts["features"] == ["layer3.0", "penultimate"]  # = the key of the de-duplicated list
    cache.ensure(teacher.model, data.train.images, data.eval_set(device).prepare, device)
    assert not (cache.dir / "feat2.npy").exists()
    _, feats = cache.lookup(torch.arange(4), None, device)
    assert len(feats) == 3 and torch.equal(feats[0], feats[2])
    student = build_model("resnet8", 10, 1)
    obj = build_objective("at+crd+sp", {"at": [(64, 2, 2)], "crd": [(64,)], "sp": [(64, 2, 2)]},
                          {"at": [(64, 2, 2)], "crd": [(64,)], "sp": [(64, 2, 2)]}, n_data=len(data.train), nce_k=8)
    assert obj.hint_names == ["at", "crd", "sp"]
    s_names = ["layer3.0", "penultimate", "layer3.0"]
    source = InMemorySource(data.train.images, data.train.labels, None, 64, data.augment, device)
    live = DistillLoop(source, LiveTeacher(teacher.model, names), obj, s_names)
    cached = DistillLoop(source, CachedTeacher(cache, device), copy.deepcopy(obj), s_names)
    for i, batch in enumerate(source.epoch(torch.Generator().manual_seed(0))):
        a, b = live.step(student, batch), cached.step(student, batch)
        assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-5)
        assert set(a.parts) >= {"hint.at", "hint.crd", "hint.sp"}
        if i == 2:
            break
