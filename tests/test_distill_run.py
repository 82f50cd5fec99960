import json

import pytest
import torch
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import DistillConfig, TrainConfig, validate
from kdlens.distill import build_objective
from kdlens.distill.cache import TeacherOutputCache, weights_hash
from kdlens.train.data_setup import InMemorySource, prepare_data
from kdlens.train.distill_loop import CachedTeacher, DistillLoop, LiveTeacher
from kdlens.train.model_setup import model_for_data
from kdlens.train.run import run_training
from kdlens.train.distill_run import run_distillation
from kdlens.train.teacher import load_teacher


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    cfg = validate(TrainConfig, {"model": {"name": "thesis_teacher_small"}, "data": {"name": "digits"},
                                 "epochs": 3, "out": str(out), "name": "t"})
    return run_training(cfg, progress=False).path


def _dcfg(teacher_run, tmp_path, **kw):
    base = {"teacher": {"run": str(teacher_run)}, "model": {"name": "thesis_student"},
            "data": {"name": "digits"}, "epochs": 2, "out": str(tmp_path / "runs")}
    base.update(kw)
    return validate(DistillConfig, base)


def test_kd_run_records_cache_and_layers(teacher_run, tmp_path):
    out = run_distillation(_dcfg(teacher_run, tmp_path), progress=False)
    assert out.metrics["final_acc"] > 50 and out.metrics["teacher_cache"] == "built"
    again = run_distillation(_dcfg(teacher_run, tmp_path, seed=1), progress=False)
    assert again.metrics["teacher_cache"] == "hit"  # shared by the next student


def test_cached_teacher_gives_same_losses_as_live(teacher_run, tmp_path):
    data = prepare_data(validate(DistillConfig, {"teacher": {"run": "x"}, "data": {"name": "digits", "hflip": True}}).data)
    teacher = load_teacher(str(teacher_run), data.train)
    device = torch.device("cpu")
    layers = ["stage2.0"]
    cache = TeacherOutputCache(tmp_path, weights_hash(teacher.model), "digits", "train", "t", flips=True, feature_names=layers)
    assert not cache.ensure(teacher.model, data.train.images, data.eval_set(device).prepare, device)
    student = model_for_data("thesis_student", data.train, 0)
    example = data.eval_set(device).prepare(data.train.images[:2])
    from kdlens.models import extract_features

    s_shapes = [tuple(extract_features(student, example, layers)[layers[0]].shape[1:])]
    t_shapes = [tuple(extract_features(teacher.model, example, layers)[layers[0]].shape[1:])]
    objective = build_objective("at+kd", s_shapes, t_shapes)
    source = InMemorySource(data.train.images, data.train.labels, None, 64, data.augment, device)
    live = DistillLoop(source, LiveTeacher(teacher.model, layers), objective, layers)
    cached = DistillLoop(source, CachedTeacher(cache, device), objective, layers)
    flips_seen = 0
    for batch in source.epoch(torch.Generator().manual_seed(0)):
        flips_seen += int(batch.extras["flip"].sum())
        a = live.step(student, batch)
        b = cached.step(student, batch)
        assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-6, abs=1e-6)
    assert flips_seen > 0 and cache.hits == len(data.train)


def test_changed_teacher_never_reuses_a_stale_cache(teacher_run, tmp_path):
    data = prepare_data(validate(DistillConfig, {"teacher": {"run": "x"}}).data)
    teacher = load_teacher(str(teacher_run), data.train)
    prep, dev = data.eval_set(torch.device("cpu")).prepare, torch.device("cpu")
    first = TeacherOutputCache(tmp_path, weights_hash(teacher.model), "digits", "train", "t")
    first.ensure(teacher.model, data.train.images, prep, dev)
    with torch.no_grad():
        teacher.model.fc.bias.add_(1.0)
    second = TeacherOutputCache(tmp_path, weights_hash(teacher.model), "digits", "train", "t")
    assert second.dir != first.dir and not second.is_valid()
    second.ensure(teacher.model, data.train.images, prep, dev)
    l1, _ = first.lookup(torch.arange(5), None, dev)
    l2, _ = second.lookup(torch.arange(5), None, dev)
    assert torch.allclose(l2 - l1, torch.ones_like(l1), atol=1e-4)


def test_half_written_cache_is_rebuilt(teacher_run, tmp_path):
    data = prepare_data(validate(DistillConfig, {"teacher": {"run": "x"}}).data)
    teacher = load_teacher(str(teacher_run), data.train)
    prep, dev = data.eval_set(torch.device("cpu")).prepare, torch.device("cpu")
    cache = TeacherOutputCache(tmp_path, weights_hash(teacher.model), "digits", "train", "t")
    cache.ensure(teacher.model, data.train.images, prep, dev)
    logits = cache.dir / "logits.npy"
    logits.write_bytes(logits.read_bytes()[:100])  # truncated by a kill / disk full
    fresh = TeacherOutputCache(tmp_path, weights_hash(teacher.model), "digits", "train", "t")
    assert not fresh.is_valid()
    assert fresh.ensure(teacher.model, data.train.images, prep, dev) is False
    assert fresh.is_valid()


def test_limited_label_loop(teacher_run, tmp_path):
    cfg = _dcfg(teacher_run, tmp_path, loop="limited_label", data={"name": "digits", "budget": 50})
    out = run_distillation(cfg, progress=False)
    assert out.metrics["final_acc"] > 20
    assert len(json.loads((out.path / "result.json").read_text())) > 0
    assert len(torch.from_numpy(__import__("numpy").load(out.path / "splits" / "unlabeled.npy"))) == 1437 - 50


def test_fitnet_two_stage_pretrains_then_drops_hint(teacher_run, tmp_path):
    cfg = _dcfg(teacher_run, tmp_path, method="fitnet+kd", loss={"two_stage": True}, pretrain_epochs=1)
    out = run_distillation(cfg, progress=False)
    assert (out.path / "pretrain" / "checkpoints" / "last.pt").exists()
    rows = [json.loads(r) for r in (out.path / "metrics.jsonl").read_text().splitlines()]
    assert "train_hint" not in rows[-1] and "train_logit" in rows[-1]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "kdd"], "kd"),
        (["--method", "at+kd", "--hints", "1,99"], "out of range"),
        (["--method", "at+kd", "--hints", "stage9.0"], "unknown teacher layer"),
        (["--dataset", "synthetic"], "--allow-dataset-mismatch"),  # the teacher was trained on digits
    ],
)
def test_distill_bad_input_exits_2(teacher_run, tmp_path, extra, message):
    result = CliRunner().invoke(app, ["distill", "--teacher", str(teacher_run), "--student", "thesis_student",
                                      "--out", str(tmp_path / "r"), "--epochs", "1", "--quiet", *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").glob("*/checkpoints"))


def test_teacher_with_other_class_count_is_refused(teacher_run):
    from dataclasses import replace

    from kdlens.data import load_dataset
    from kdlens.errors import KdlensError

    digits = load_dataset("digits")
    five = replace(digits, labels=digits.labels % 5, classes=digits.classes[:5])
    with pytest.raises(KdlensError, match="trained for 10 classes but dataset 'digits' has 5"):
        load_teacher(str(teacher_run), five)


def test_teacher_from_another_dataset_names_both_datasets(teacher_run):
    from dataclasses import replace

    import torch.nn.functional as F

    from kdlens.data import load_dataset
    from kdlens.errors import KdlensError

    digits = load_dataset("digits")
    # a 16×16 stand-in transfer set under another name: the 8×8 teacher's dense layer cannot fit
    bigger = replace(digits, name="fashion-mnist", images=F.interpolate(digits.images.float(), size=16).to(digits.images.dtype))
    with pytest.raises(KdlensError, match=r"does not fit(.|\n)*trained on 'digits' but the transfer set is 'fashion-mnist'"):
        load_teacher(str(teacher_run), bigger)


def test_transfer_set_defaults_to_the_teachers_data_and_a_mismatch_is_refused(tmp_path):
    from kdlens.errors import KdlensError

    teacher = run_training(validate(TrainConfig, {
        "model": {"name": "resnet8"}, "data": {"name": "synthetic"}, "epochs": 1, "out": str(tmp_path / "t"),
    }), progress=False).path
    base = {"teacher": {"run": str(teacher)}, "model": {"name": "resnet8"}, "epochs": 1, "out": str(tmp_path / "runs")}
    default = run_distillation(validate(DistillConfig, base), progress=False)  # no data.name given
    config = (default.path / "config.yaml").read_text()
    assert "name: synthetic" in config and "name: digits" not in config
    with pytest.raises(KdlensError, match="trained on 'synthetic' but the transfer set is 'digits'.*--allow-dataset-mismatch"):
        run_distillation(validate(DistillConfig, {**base, "data": {"name": "digits"}}, ), progress=False)
    assert len(list((tmp_path / "runs").glob("*/config.yaml"))) == 1  # nothing written for the refused one


def test_init_from_a_checkpoint_with_another_class_count_replaces_only_the_head(tmp_path):
    from kdlens.data import load_dataset
    from kdlens.models.reference import build_model
    from kdlens.train.teacher import init_from

    torch.manual_seed(1)
    pretrained = build_model("resnet8", num_classes=100, in_channels=1)  # e.g. trained on other data
    torch.save(pretrained.state_dict(), tmp_path / "pretrained.pt")
    digits = load_dataset("digits")  # 10 classes
    model = model_for_data("resnet8", digits, seed=0)
    head = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(head + ".")}
    replaced = init_from(model, str(tmp_path / "pretrained.pt"), digits, log=False)
    assert sorted(replaced) == sorted(fresh)
    state, source = model.state_dict(), pretrained.state_dict()
    assert all(torch.equal(state[k], source[k]) for k in source if k not in replaced)  # the body is loaded
    assert all(torch.equal(state[k], fresh[k]) for k in replaced)  # the head keeps its initialisation


def test_cache_size_and_memory_rule_by_hand():
    from kdlens.distill.cache import cache_size_bytes, fits_in_memory

    # 60,000 images × (10 logits + 2 tapped maps of 16×8×8 = 1,024 floats each) × 4 B × 2 (flips)
    assert cache_size_bytes(60_000, 10 + 2 * 1024, True) == 60_000 * 2058 * 8
    assert cache_size_bytes(100, 10, False) == 4_000
    # building peaks at 3 × the size, allowed up to half the free memory: 3 × 4,000 ≤ 0.5 × 24,000
    assert fits_in_memory(4_000, 24_000) and not fits_in_memory(4_000, 23_999)
    assert fits_in_memory(10**15, None)  # unknown free memory: no refusal


def test_auto_cache_uses_the_live_teacher_when_the_cache_would_not_fit(teacher_run, tmp_path, monkeypatch):
    import kdlens.train.distill_run as distill_run
    from kdlens.errors import KdlensError

    monkeypatch.setattr(distill_run, "available_memory_bytes", lambda: 64 * 1024)  # 64 KiB free
    out = run_distillation(_dcfg(teacher_run, tmp_path, epochs=1), progress=False)
    assert out.metrics["teacher_cache"] == "off" and out.metrics["final_acc"] > 20
    before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    with pytest.raises(KdlensError, match=r"cache=on: .* GiB .* use cache=auto or cache=off"):
        run_distillation(_dcfg(teacher_run, tmp_path, epochs=1, cache="on", name="on"), progress=False)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == before  # refused before any run directory


def test_auto_cache_is_skipped_when_building_it_costs_more_than_a_live_teacher(teacher_run, tmp_path):
    from kdlens.train.distill_run import teacher_forwards

    # a limited-label fold: 20 labels, 100 unlabeled images, 1 epoch → 100 live teacher passes
    # against 1,797 × 0.8 training images (×2 with mirror images) to build the cache
    small = _dcfg(teacher_run, tmp_path, epochs=1, loop="limited_label",
                  data={"name": "digits", "budget": 20, "unlabeled_limit": 100, "hflip": True})
    data = prepare_data(small.data)
    build, live = teacher_forwards(small, data)
    assert (build, live) == (2 * len(data.train), 100)
    out = run_distillation(small, progress=False)
    assert out.metrics["teacher_cache"] == "off"
    assert not (tmp_path / "runs" / "cache" / "teacher-outputs").exists()
    # the ordinary loop over the whole transfer set for 2 epochs without flips: 2·N ≥ N, cached
    whole = _dcfg(teacher_run, tmp_path, epochs=2, name="whole")
    build, live = teacher_forwards(whole, prepare_data(whole.data))
    assert live == 2 * build
    assert run_distillation(whole, progress=False).metrics["teacher_cache"] == "built"
