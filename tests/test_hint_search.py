"""PURSUhInT hint-point search: composition, `kdlens hints`, and `distill --hints auto`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import DistillConfig, TrainConfig, validate
from kdlens.data import load_dataset
from kdlens.errors import KdlensError
from kdlens.explain.hint_search import (
    HintSearchResult,
    auto_hint_layers,
    find_hint_points,
    format_members,
    sample_indices,
)
from kdlens.models import create_model
from kdlens.train.distill_run import run_distillation
from kdlens.train.run import run_training


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on a shared CPU: one intra-op thread avoids waiting for descheduled threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hint-teacher")
    cfg = validate(TrainConfig, {"model": {"name": "resnet8"}, "data": {"name": "digits"},
                                 "epochs": 1, "out": str(out), "name": "t"})
    return run_training(cfg, progress=False).path


def test_sample_indices_deterministic_and_sorted():
    a = sample_indices(1000, 100, seed=3)
    assert np.array_equal(a, sample_indices(1000, 100, seed=3))
    assert not np.array_equal(a, sample_indices(1000, 100, seed=4))
    assert len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    pool = np.arange(500, 600)
    assert set(sample_indices(pool, 10).tolist()) <= set(pool.tolist())
    assert np.array_equal(sample_indices(pool, 1000), pool)  # n ≥ pool: all of it
    assert format_members([0, 1, 2, 5, 7, 8]) == "1–3, 6, 8–9"


def test_find_hint_points_on_resnet20(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet20", 10, in_channels=3)
    ds = load_dataset("synthetic", n=240, channels=3, size=16, num_classes=10)
    res = find_hint_points(model, ds.images, None, k=3, n=200, cache_dir=tmp_path / "c")
    sel = res.selection
    assert res.n == 200 and len(res.layer_names) == 9 and res.similarity.shape == (9, 9)
    assert sel.k == 3 and sorted(set(sel.labels)) == [0, 1, 2]
    assert all(name in res.layer_names for name in res.names)
    assert res.conventional == (2, 5, 8)  # last block of each stage
    assert set(res.timings) >= {"step1_representations", "step2", "total"}
    # deterministic, and the second run reads the representation cache
    again = find_hint_points(model, ds.images, None, k=3, n=200, cache_dir=tmp_path / "c")
    assert again.cache == "hit" and again.selection == sel
    np.testing.assert_array_equal(again.similarity, res.similarity)
    # JSON round trip
    back = HintSearchResult.from_json(res.to_json())
    assert back.selection == sel and back.names == res.names and back.conventional == res.conventional
    # other metric / rule / form
    cca = find_hint_points(model, ds.images, None, k=2, metric="cca", rule="last", form="pre", n=200)
    assert cca.selection.k == 2 and all(n.endswith(".preact") for n in cca.names)
    assert "layer3.2.preact" in cca.names  # the last rule takes the deepest member of its cluster
    for bad in ({"k": 10}, {"k": 0}, {"metric": "cosine"}, {"rule": "middle"}, {"form": "mid"}):
        with pytest.raises(KdlensError):
            find_hint_points(model, ds.images, None, n=50, **{"k": 3, **bad})


def test_cli_hints_writes_json_and_png(teacher_run, tmp_path):
    store = tmp_path / "h"
    result = CliRunner().invoke(app, ["hints", "--teacher", str(teacher_run), "--clusters", "2", "--metric", "cca",
                                      "--samples", "300", "--out", str(store), "--quiet"])
    assert result.exit_code == 0, result.output
    [out] = store.glob("hints-t-*")  # the analysis's own directory in the run store
    assert "conventional" in result.output and "layer1.0" in result.output
    d = json.loads((out / "hints.json").read_text())
    assert d["k"] == 2 and d["metric"] == "cca" and d["n"] == 300 and d["data"]["dataset"] == "digits"
    assert d["conventional"]["indices_1based"] == [1, 2, 3]
    assert len(d["selection"]["labels"]) == 3 and len(d["hint_layers"]) == 2
    assert {"step1_representations", "step2"} <= set(d["timings"])
    assert (out / "hints.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clusters", "4"], "1 ≤ k ≤ 3"),
        (["--metric", "cosine"], "unknown similarity metric"),
        (["--rule", "middle"], "unknown hint rule"),
    ],
)
def test_cli_hints_bad_input_exit_2_nothing_written(teacher_run, tmp_path, args, message):
    out = tmp_path / "h"
    result = CliRunner().invoke(app, ["hints", "--teacher", str(teacher_run), "--out", str(out), "--quiet", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists()


def test_cli_hints_missing_teacher(tmp_path):
    result = CliRunner().invoke(app, ["hints", "--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "h")])
    assert result.exit_code == 2 and "neither a run directory nor a checkpoint" in " ".join(result.output.split())
    assert not (tmp_path / "h").exists()


def test_distill_hints_auto_searches_then_reuses(teacher_run, tmp_path):
    def cfg(hints, name):
        return validate(DistillConfig, {
            "teacher": {"run": str(teacher_run)}, "model": {"name": "resnet8"}, "data": {"name": "digits"},
            "method": "at+kd", "hints": hints, "epochs": 1, "out": str(tmp_path / "runs"), "name": name,
        })

    # auto:2 — no saved search for k = 2: runs one and saves it under OUT/cache/hint-search
    first = run_distillation(cfg("auto:2", "a"), progress=False, hint_search=auto_hint_layers)
    saved = list((tmp_path / "runs" / "cache" / "hint-search").glob("hints-*.json"))
    assert len(saved) == 1
    d = json.loads(saved[0].read_text())
    assert d["k"] == 2 and d["metric"] == "cka" and d["rule"] == "centroid"
    assert first.metrics["hint_layers"]["teacher"] == d["hint_layers"]
    assert len(first.metrics["hint_layers"]["student"]) == 2

    # `kdlens hints` (an analysis in the run store) → `--hints auto` (k = 3 conventional points) reuses it
    result = CliRunner().invoke(app, ["hints", "--teacher", str(teacher_run), "--clusters", "3", "--quiet",
                                      "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    [saved_cli] = (tmp_path / "runs").glob("hints-t-*/hints.json")
    cli = json.loads(saved_cli.read_text())
    assert cli["selection"]["indices"] == [0, 1, 2]  # 3 layers, 3 clusters
    # mark the saved file: a reuse must return these (reversed) points
    cli["selection"].update(indices=[2, 1, 0], indices_1based=[3, 2, 1])
    saved_cli.write_text(json.dumps(cli))
    second = run_distillation(cfg("auto", "b"), progress=False, hint_search=auto_hint_layers)
    assert second.metrics["hint_layers"]["teacher"] == ["layer3.0", "layer2.0", "layer1.0"]
    assert len(list((tmp_path / "runs" / "cache" / "hint-search").glob("hints-*.json"))) == 1
    assert second.metrics["final_acc"] is not None


def test_student_auto_is_an_error():
    from kdlens.train.hint_layers import resolve_layers

    model = create_model("resnet8", 10)
    with pytest.raises(KdlensError, match="teacher's hint-point search"):
        resolve_layers("auto", model, torch.zeros(1, 3, 8, 8), "student")


def test_cca_search_allows_dead_channels():
    """Real teachers have dead ReLU channels: R²_CCA runs on each layer's column space
    (eps=0) unless plain CCA is asked for, which then says why it cannot."""
    torch.manual_seed(0)
    model = create_model("resnet20", 10, in_channels=3)
    with torch.no_grad():  # channel 0 of layer1.1 is always 0 after its ReLU
        model.layer1[1].bn2.weight[0] = 0.0
        model.layer1[1].bn2.bias[0] = -1e4
    ds = load_dataset("synthetic", n=200, channels=3, size=12, num_classes=10)
    res = find_hint_points(model, ds.images, None, k=3, metric="cca", n=200)
    assert res.selection.k == 3 and res.extra["metric_options"] == {"eps": 0.0}
    assert np.isfinite(res.similarity).all()
    with pytest.raises(KdlensError, match="rank-deficient"):
        find_hint_points(model, ds.images, None, k=3, metric="cca", n=200, metric_options={"eps": None})


def test_distill_hints_auto_takes_metric_rule_form_and_samples(teacher_run, tmp_path):
    cfg = validate(DistillConfig, {
        "teacher": {"run": str(teacher_run)}, "model": {"name": "resnet8"}, "data": {"name": "digits"},
        "method": "at+kd", "hints": "auto:2", "epochs": 1, "out": str(tmp_path / "runs"),
        "hint_search": {"metric": "cca", "rule": "last", "form": "pre", "samples": 300},
    })
    out = run_distillation(cfg, progress=False, hint_search=auto_hint_layers)
    (saved,) = (tmp_path / "runs" / "cache" / "hint-search").glob("hints-*.json")
    d = json.loads(saved.read_text())
    assert (d["metric"], d["rule"], d["form"], d["n"]) == ("cca", "last", "pre", 300)
    assert out.metrics["hint_layers"]["teacher"] == d["hint_layers"]
    assert all(name.endswith(".preact") for name in d["hint_layers"])
