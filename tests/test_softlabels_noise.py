"""Noise in soft labels (Vats 2021 §4.8), teacher pre-training (ch. 6) and Figs. 4.4 / 4.5:
renormalisation by hand, scale 0 = the noiseless run, per-epoch teacher weights, the
recommendation rule, the two CLI commands, the two study steps and their report sections.
Digits and the single-layer baseline student only; one or two epochs."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import OptimConfig, TrainConfig, validate
from kdlens.data import load_dataset
from kdlens.errors import KdlensError
from kdlens.explain.softlabels import SweepSettings, entropy_by_temperature, missing_class_test
from kdlens.explain.softlabels.noise import (
    check_noise_scales,
    draw_noise,
    noise_values,
    noisy_soft_labels,
    soft_label_noise_sweep,
)
from kdlens.figures.softlabels_extra import (
    class_spread,
    plot_class_entropy_curves,
    plot_ls_projection_comparison,
    plot_noise_sweep,
    plot_pretraining,
)
from kdlens.studies.pretraining import recommend, recommendation_text
from kdlens.train.run import run_training


# ----------------------------------------------------------------------------------------------
# renormalisation
# ----------------------------------------------------------------------------------------------
def test_noisy_soft_labels_clip_at_zero_and_divide_by_the_row_sum_by_hand():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0], [0.6, 0.4, 0.0]])
    eps = torch.tensor([[0.1, -0.3, 0.05], [-0.6, -0.6, 0.1], [-0.7, -0.5, -0.1]])
    out = noisy_soft_labels(p, eps)
    # row 0: (0.8, 0, 0.15) / 0.95; row 1: (0, 0, 0.1) / 0.1; row 2: everything clipped → uniform
    expected = torch.tensor([[0.8 / 0.95, 0.0, 0.15 / 0.95], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-7)
    assert torch.allclose(out.sum(1), torch.ones(3)) and (out >= 0).all()


def test_noise_draws_scale_zero_and_bad_scales():
    g = torch.Generator().manual_seed(0)
    u = draw_noise((2000, 10), "uniform", 0.3, g)
    assert u.abs().max() <= 0.3 and u.min() < -0.25 and u.max() > 0.25
    n = draw_noise((4000, 10), "normal", 0.2, torch.Generator().manual_seed(1))
    assert abs(float(n.std()) - 0.2) < 0.01
    p = torch.softmax(torch.randn(5, 4), 1)
    assert torch.equal(noisy_soft_labels(p, "normal", 0.0, torch.Generator()), p)  # s = 0: the target itself
    same = [noisy_soft_labels(p, "uniform", 0.1, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*same)  # a student's stream is reproducible from its seed
    for bad in ([], [-0.1], [0.1, float("nan")], [math.inf], [0.1, 0.1]):
        with pytest.raises(KdlensError):
            check_noise_scales(bad)
    with pytest.raises(KdlensError, match="unknown noise"):
        draw_noise((2, 2), "pink", 0.1)


# ----------------------------------------------------------------------------------------------
# the sweep
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    g = torch.Generator().manual_seed(0)
    z = 4 * torch.nn.functional.one_hot(train.labels, 10).float() + torch.randn(len(train), 10, generator=g)
    return train, test, z


SLOW_LR = SweepSettings(epochs=1, batch_size=64, optim=OptimConfig(schedule="constant", lr=0.01))


def test_scale_zero_reproduces_the_noiseless_run_exactly(digits):
    train, test, z = digits
    noisy = soft_label_noise_sweep("baseline_student", train, test, {"t": z}, scales=[0.0, 0.5],
                                   noises=["uniform", "normal"], T=4.0, ls_alphas=[0.1], removed_classes=[1, 3],
                                   seeds=[0, 1], settings=SLOW_LR)
    plain = missing_class_test("baseline_student", train, test, {"t": z}, classes=[1, 3], temperatures=[4.0],
                               ls_alphas=[0.1], settings=SLOW_LR)
    rows = noisy.rows()
    for ci, c in enumerate([1, 3]):
        zero = [r for r in rows if r["scale"] == 0.0 and r["removed_class"] == c]
        assert len(zero) == 2 * 2 * 2  # (teacher, LS) × (uniform, normal) × seeds: one student each source
        t_rows = [r for r in zero if r["source"] == "t"]
        ls_rows = [r for r in zero if r["source"] != "t"]
        assert {r["test_acc"] for r in t_rows} == {plain.test_accuracy["t"][ci, 0]}
        assert {r["missing_class_acc"] for r in t_rows} == {plain.missing_class_accuracy["t"][ci, 0]}
        assert {r["test_acc"] for r in ls_rows} == {plain.ls_test_accuracy[ci, 0]}
        assert {r["missing_class_acc"] for r in ls_rows} == {plain.ls_missing_class_accuracy[ci, 0]}
    # the means are the rows' means; the noisy students are not the noiseless one
    assert set(noisy.accuracy) == {("t", "uniform"), ("t", "normal"), ("LS α=0.1", "uniform"), ("LS α=0.1", "normal")}
    cells = noise_values(rows, noisy.scales)
    for key, acc in noisy.accuracy.items():
        np.testing.assert_allclose(acc, [np.mean(c) for c in cells[key]])
        assert len(cells[key][1]) == 4  # 2 removed classes × 2 seeds
    assert noisy.accuracy[("t", "uniform")][1] != noisy.accuracy[("t", "uniform")][0]
    assert noisy.missing_class_accuracy[("t", "normal")].shape == (2,)
    d = noisy.to_dict()
    assert d["removed_classes"] == [1, 3] and len(d["accuracy"]) == 4
    fig = plot_noise_sweep(noisy, cells, noise_values(rows, noisy.scales, "missing_class_acc"))
    assert len(fig.axes) == 2


def test_noise_sweep_without_a_removed_class_and_its_errors(digits):
    train, test, z = digits
    r = soft_label_noise_sweep("baseline_student", train, test, z, scales=[0.0, 0.1], noises=["normal"], ls_alphas=[],
                               settings=SLOW_LR)
    assert list(r.accuracy) == [("teacher", "normal")] and not r.missing_class_accuracy
    assert all(row["missing_class_acc"] is None for row in r.rows())
    assert len(plot_noise_sweep(r).axes) == 1
    with pytest.raises(KdlensError, match=">= 0"):
        soft_label_noise_sweep("baseline_student", train, test, z, scales=[-1.0], settings=SLOW_LR)
    with pytest.raises(KdlensError, match="unknown class"):
        soft_label_noise_sweep("baseline_student", train, test, z, removed_classes=[10], settings=SLOW_LR)
    with pytest.raises(KdlensError, match="teacher logits and/or"):
        soft_label_noise_sweep("baseline_student", train, test, None, ls_alphas=[], settings=SLOW_LR)


# ----------------------------------------------------------------------------------------------
# teacher pre-training
# ----------------------------------------------------------------------------------------------
def test_recommendation_picks_the_most_entropy_among_accurate_teachers():
    h = np.array([[2.0, 1.5, 1.2], [2.3, 1.9, 1.6]])      # batch 16 / 512 × epochs 1, 2, 3
    acc = np.array([[90.0, 93.0, 94.0], [80.0, 92.5, 93.5]])
    student = np.array([[50.0, 60.0, 55.0], [40.0, 66.0, 58.0]])
    rec = recommend([16, 512], [1, 2, 3], h, acc, student, T=9.0, tolerance=1.0)
    # eligible (>= 93): (16, 2), (16, 3), (512, 3) → entropy 1.5, 1.2, 1.6 → (512, 3)
    assert (rec["batch_size"], rec["epochs"], rec["eligible"]) == (512, 3, 3)
    assert rec["teacher_acc"] == 93.5 and rec["student_acc"] == 58.0
    assert rec["most_accurate_teacher"] == {"batch_size": 16, "epochs": 3, "entropy": 1.2, "teacher_acc": 94.0,
                                            "student_acc": 55.0}
    assert rec["best_student"]["batch_size"] == 512 and rec["best_student"]["epochs"] == 2
    assert rec["spearman_entropy_student"] == pytest.approx(np.corrcoef([4, 1, 0, 5, 3, 2], [1, 4, 2, 0, 5, 3])[0, 1])
    assert recommend([16, 512], [1, 2, 3], h, acc, None, tolerance=15.0)["epochs"] == 1  # (512, 1): 2.3
    assert "batch size 512, 3 epochs" in recommendation_text(rec)


def test_every_epoch_kept_equals_the_run_s_own_checkpoints(tmp_path):
    from kdlens.store import safe_torch_load
    from kdlens.train.epoch_checkpoints import epoch_checkpoints, run_training_keeping_epochs

    cfg = validate(TrainConfig, {"model": {"name": "baseline_student"}, "data": {"name": "digits"}, "epochs": 2,
                                 "batch_size": 128, "out": str(tmp_path), "name": "keep"})
    outcome = run_training_keeping_epochs(cfg, progress=False)
    kept = epoch_checkpoints(outcome.path)
    assert list(kept) == [1, 2]
    last = safe_torch_load(outcome.path / "checkpoints" / "last.pt")["model"]
    previous = safe_torch_load(outcome.path / "checkpoints" / "previous.pt")["model"]
    for epoch, ref in ((2, last), (1, previous)):
        state = safe_torch_load(kept[epoch])
        assert state["epoch"] == epoch and state["test_acc"] is not None
        assert all(torch.equal(state["model"][k], ref[k]) for k in ref)
    plain = run_training(cfg, progress=False)  # same config without kept epochs: another run
    assert plain.path != outcome.path and not epoch_checkpoints(plain.path)
    assert run_training_keeping_epochs(cfg, progress=False).skipped  # done: reused


# ----------------------------------------------------------------------------------------------
# Figs. 4.4 and 4.5
# ----------------------------------------------------------------------------------------------
def test_class_entropy_and_ls_projection_figures(digits):
    train, _, z = digits
    tables = {"a": entropy_by_temperature(z, train.labels, [1, 4, 9], class_names=train.classes),
              "b": entropy_by_temperature(z * 0.3, train.labels, [1, 4, 9], class_names=train.classes)}
    fig = plot_class_entropy_curves(tables)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 10 + 1 + 1  # classes, mean, log K
    labels = np.repeat([0, 1, 2], 5)
    tight = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)[labels] + 0.1
    assert class_spread(tight, labels, [0, 1, 2]) == pytest.approx(0.0, abs=1e-9)
    loose = tight + np.random.default_rng(0).normal(0, 3, tight.shape)
    assert class_spread(loose, labels, [0, 1, 2]) > 0.1
    tri = np.array([[0, 0], [1, 0], [0, 1]], dtype=float)
    fig = plot_ls_projection_comparison((loose, labels, tri), (tight, labels, tri), [0, 1, 2], alpha_ls=0.1)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("plain") and titles[1].startswith("label smoothing α=0.1") and "spread" in titles[1]


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    cfg = validate(TrainConfig, {"model": {"name": "baseline_student"}, "data": {"name": "digits"},
                                 "epochs": 2, "batch_size": 64, "out": str(out), "name": "tiny"})
    return str(run_training(cfg, progress=False).path)


def _run(args):
    return CliRunner().invoke(app, ["softlabels", *args])


def test_noise_command_writes_figure_csv_json(teacher_run, tmp_path):
    out = tmp_path / "n"
    r = _run(["noise", "--teacher", teacher_run, "--student", "baseline_student", "--scales", "0,0.2",
              "--noises", "uniform", "--classes", "3", "--seeds", "0,1", "--epochs", "1", "--train-subset", "500",
              "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    (out,) = out.glob("softlabels-noise-*")  # the analysis's own directory in the store
    assert all((out / f"noise.{ext}").stat().st_size > 0 for ext in ("png", "csv", "json"))
    summary = json.loads((out / "noise.json").read_text())
    assert summary["scales"] == [0.0, 0.2] and summary["removed_classes"] == [3] and summary["noises"] == ["uniform"]
    assert len((out / "noise.csv").read_text().splitlines()) == 1 + 2 * 2 * 2  # (teacher, LS) × scales × seeds


@pytest.mark.parametrize("args", [
    ["noise", "--scales", "0,-0.1"],
    ["noise", "--scales", "0,x"],
    ["noise", "--scales", "0.1,0.1"],
    ["noise", "--scales", "nan"],
    ["noise", "--scales", ""],
    ["noise", "--noises", "pink"],
    ["noise", "--T", "0"],
    ["noise", "--classes", "10"],
    ["noise", "--seeds", "0,0"],
])
def test_noise_bad_input_exits_2_and_writes_nothing(teacher_run, tmp_path, args):
    out = tmp_path / "never"
    r = _run([*args, "--teacher", teacher_run, "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "error" in r.output and not out.exists()


def test_pretraining_command_trains_teachers_once_and_recommends(tmp_path):
    out = tmp_path / "p"
    args = ["pretraining", "--model", "baseline_student", "--batch-sizes", "64,512", "--teacher-epochs", "2",
            "--temperatures", "1,4", "--T", "4", "--epochs", "1", "--train-subset", "300", "--quiet", "--out", str(out)]
    r = _run(args)
    assert r.exit_code == 0, r.output
    assert "recommendation" in r.output and "batch size" in r.output
    store = out
    (out,) = store.glob("softlabels-pretraining-*")  # the analysis's own directory in the store
    assert all((out / f"pretraining.{ext}").stat().st_size > 0 for ext in ("png", "csv", "json"))
    res = json.loads((out / "pretraining.json").read_text())
    assert res["batch_sizes"] == [64, 512] and res["epochs"] == [1, 2] and res["temperatures"] == [1.0, 4.0]
    assert np.isfinite(np.asarray(res["student_accuracy"], dtype=float)).all()
    assert res["recommendation"]["batch_size"] in (64, 512)
    assert len((out / "pretraining.csv").read_text().splitlines()) == 1 + 2 * 2 * 2
    assert len(list(store.glob("pretrain-*/checkpoints/epochs/epoch-*.pt"))) == 4  # teachers live in the store
    from types import SimpleNamespace

    assert len(plot_pretraining(SimpleNamespace(**{**res, "entropy": np.asarray(res["entropy"])})).axes) == 4
    again = _run(args)  # the teachers are done: reused, same numbers
    assert again.exit_code == 0, again.output
    assert json.loads((out / "pretraining.json").read_text())["entropy"] == res["entropy"]


@pytest.mark.parametrize("args", [
    ["--batch-sizes", "0,16"],
    ["--batch-sizes", "16,16"],
    ["--teacher-epochs", "2", "--measure-epochs", "1,3"],
    ["--T", "-1"],
    ["--student", "no_such_model"],
    ["--set", "optim.lr=-1"],
])
def test_pretraining_bad_input_exits_2_and_trains_nothing(tmp_path, args):
    out = tmp_path / "never"
    r = _run(["pretraining", "--model", "baseline_student", *args, "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# study steps and report sections
# ----------------------------------------------------------------------------------------------
STUDY = textwrap.dedent("""
    name: softlabel-extra
    defaults:
      data: {name: digits}
      model: {name: baseline_student}
      epochs: 1
      batch_size: 128
    groups:
      teacher: {kind: train}
      noise:
        kind: softlabel-noise
        needs: [teacher]
        params: {student: baseline_student, scales: [0, 0.2], noises: [uniform, normal], classes: [3], epochs: 1}
      pretraining:
        kind: softlabel-pretraining
        needs: [teacher]
        params: {batch_sizes: [64, 512], teacher_epochs: 2, temperatures: [1, 4], T: 4, student: baseline_student,
                 epochs: 1, train_subset: 300}
""")


def test_study_steps_and_report_sections(tmp_path):
    from kdlens.report.html import write_report
    from kdlens.studies.grid import load_study, run_study

    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    study = load_study(path, out=tmp_path / "s")
    assert run_study(study, workers=1, progress=False).ok
    noise_dir, pre_dir = study.directory / "steps" / "noise", study.directory / "steps" / "pretraining"
    assert (noise_dir / "noise.png").exists() and (noise_dir / "noise.json").exists()
    assert "recommendation" in (pre_dir / "recommendation.txt").read_text()
    write_report([study.directory], out=tmp_path / "r" / "report.html")
    sections = json.loads((tmp_path / "r" / "report.json").read_text())["sections"]
    assert sections["noise"]["missing"] is None and sections["pretraining"]["missing"] is None
    assert {"noise_test_acc", "noise_missing_class_acc"} <= set(sections["noise"]["tables"])
    assert {"pretraining_entropy", "pretraining_student_acc"} <= set(sections["pretraining"]["tables"])
