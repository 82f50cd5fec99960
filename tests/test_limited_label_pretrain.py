"""A teacher with outside knowledge, offline (issue 17): pre-training on a reserve of the
training split that no fold's labeled set and no unlabeled pool contains."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import DataConfig, validate
from kdlens.data import load_dataset
from kdlens.data.pretrain_split import check_disjoint, pretrain_reserve
from kdlens.errors import KdlensError
from kdlens.studies.limited_label import run_limited_label_study
from kdlens.train.data_setup import prepare_data


@pytest.fixture(scope="module")
def digits_labels():
    return load_dataset("digits").labels.numpy()


def test_reserve_is_stratified_and_partitions_the_training_split(digits_labels):
    reserve, rest = pretrain_reserve(digits_labels, 0.2, seed=3)
    assert np.intersect1d(reserve, rest).size == 0
    assert np.array_equal(np.sort(np.concatenate([reserve, rest])), np.arange(len(digits_labels)))
    for c in range(10):  # each class gives round(0.2 · its count)
        assert (digits_labels[reserve] == c).sum() == round(0.2 * (digits_labels == c).sum())
    again, _ = pretrain_reserve(digits_labels, 0.2, seed=3)
    assert np.array_equal(reserve, again)  # seeded


@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_reserve_intersects_no_fold_and_no_unlabeled_pool(digits_labels, fraction):
    reserve, _ = pretrain_reserve(digits_labels, fraction, seed=0)
    n = len(digits_labels)
    for budget in (20, 50, 100):
        for fold in range(3):
            data = prepare_data(validate(DataConfig, {"name": "digits", "budget": budget, "n_folds": 3, "fold": fold,
                                                      "val_fraction": fraction}))
            labeled, unlabeled = data.train_indices, data.unlabeled_indices
            assert np.intersect1d(reserve, labeled).size == 0
            assert np.intersect1d(reserve, unlabeled).size == 0
            assert len(labeled) == budget
            # the three parts cover the training split exactly once
            assert np.array_equal(np.sort(np.concatenate([reserve, labeled, unlabeled])), np.arange(n))


def test_check_disjoint_names_the_overlapping_set():
    check_disjoint(np.array([1, 2]), labeled=np.array([3]), unlabeled=None)
    with pytest.raises(KdlensError, match="unlabeled"):
        check_disjoint(np.array([1, 2]), labeled=np.array([3]), unlabeled=np.array([2, 5]))


def test_reserve_fraction_is_checked(digits_labels):
    with pytest.raises(KdlensError, match="between 0 and 1"):
        pretrain_reserve(digits_labels, 1.0)


def _config(path: Path) -> dict:
    return yaml.safe_load((path / "config.yaml").read_text())


def _run_dir(out: Path, prefix: str) -> Path:
    [found] = [p for p in out.iterdir() if p.is_dir() and p.name.startswith(prefix)]
    return found


def _pretrained_study(out: Path, epochs: int, unlabeled: int, pretrain_epochs: int, extra: list[str] = ()):
    """``study limited-label`` on digits (budget 20 × 2 folds) with a teacher pre-trained on a 25 % reserve."""
    return CliRunner().invoke(app, [
        "study", "limited-label", "--dataset", "digits", "--budgets", "20", "--folds", "2",
        "--teacher-model", "baseline_student", "--student", "baseline_student", "--student-epochs", str(epochs),
        "--labeled-epochs", str(epochs), "--unlabeled-limit", str(unlabeled), "--teacher-pretrain", "disjoint",
        "--pretrain-fraction", "0.25", "--pretrain-epochs", str(pretrain_epochs), *extra, "--out", str(out)])


def test_study_pretrains_the_teacher_on_the_reserve_then_fine_tunes(tmp_path):
    out = tmp_path / "ll"
    res = _pretrained_study(out, epochs=1, unlabeled=200, pretrain_epochs=2)
    assert res.exit_code == 0, res.output
    assert "| 20 |" in res.output
    lines = res.output.splitlines()  # progress while it works (issue 14), not only the table at the end
    assert lines[0].startswith("limited-label (cpu scale): teacher, undistilled and distilled student")
    assert "budget 20, fold 0 (1/2): teacher, UD, D (3 runs)" in lines
    assert "budget 20, fold 1 (2/2): teacher, UD, D (3 runs)" in lines
    pre = _run_dir(out, "teacher-pretrain-disjoint")
    reserve = np.load(pre / "splits" / "pretrain_reserve.npy")
    expected, _ = pretrain_reserve(load_dataset("digits").labels.numpy(), 0.25, seed=0)
    assert np.array_equal(reserve, expected)
    assert len(np.load(pre / "splits" / "train.npy")) == len(reserve)  # trained on the reserve, all labels
    assert _config(pre)["epochs"] == 2
    for fold in (0, 1):
        teacher = _run_dir(out, f"teacher-b20-f{fold}")
        assert Path(_config(teacher)["model"]["init"]) == pre  # fine-tuned from the pre-trained teacher
        for prefix in (f"teacher-b20-f{fold}", f"ud-b20-f{fold}", f"d-b20-f{fold}"):
            run = _run_dir(out, prefix)
            labeled = np.load(run / "splits" / "train.npy")
            assert len(labeled) == 20
            assert np.intersect1d(reserve, labeled).size == 0
            unlabeled = run / "splits" / "unlabeled.npy"
            assert np.intersect1d(reserve, np.load(unlabeled)).size == 0 and len(np.load(unlabeled)) == 200
            assert np.array_equal(np.load(run / "splits" / "val.npy"), reserve)  # held out, recorded


def test_pretrain_and_teacher_init_are_exclusive(tmp_path):
    with pytest.raises(KdlensError, match="one teacher initialisation"):
        run_limited_label_study("digits", budgets=[20], folds=1, teacher="baseline_student", student="baseline_student",
                                teacher_init=str(tmp_path), teacher_pretrain="disjoint", out=str(tmp_path / "ll"))
    with pytest.raises(KdlensError, match="none, disjoint"):
        run_limited_label_study("digits", budgets=[20], folds=1, teacher="baseline_student", student="baseline_student",
                                teacher_pretrain="imagenet", out=str(tmp_path / "ll"))
    assert not (tmp_path / "ll").exists()


def test_a_budget_too_large_for_the_pool_fails_before_pretraining(tmp_path):
    with pytest.raises(KdlensError, match="budget"):  # 0.9 of digits reserved: 1,000 labels no longer fit
        run_limited_label_study("digits", budgets=[1000], folds=1, teacher="baseline_student",
                                student="baseline_student", teacher_pretrain="disjoint", pretrain_fraction=0.9,
                                out=str(tmp_path / "ll"))
    assert not (tmp_path / "ll").exists()


def test_compare_scratch_adds_a_scratch_teacher_and_its_student_on_the_same_folds(tmp_path):
    out = tmp_path / "ll"
    res = _pretrained_study(out, epochs=2, unlabeled=100, pretrain_epochs=1,
                            extra=["--compare-scratch", "--evaluations", "1"])
    assert res.exit_code == 0, res.output
    assert "budget 20, fold 1 (2/2): teacher, UD, D, scratch teacher, D (scratch) (5 runs)" in res.output
    header = next(line for line in res.output.splitlines() if line.startswith("| labels"))
    assert "| D (scratch teacher) | scratch teacher | D(scratch) − UD |" in header
    pre = _run_dir(out, "teacher-pretrain-disjoint")
    for fold in (0, 1):
        scratch = _run_dir(out, f"teacher-scratch-b20-f{fold}")
        assert _config(scratch)["model"].get("init") is None  # from scratch
        assert Path(_config(_run_dir(out, f"teacher-b20-f{fold}"))["model"]["init"]) == pre
        d0 = _run_dir(out, f"d-scratch-b20-f{fold}")
        for prefix in (f"teacher-scratch-b20-f{fold}", f"ud-b20-f{fold}", f"d-b20-f{fold}", f"d-scratch-b20-f{fold}"):
            assert _config(_run_dir(out, prefix))["eval_every"] == 2  # --evaluations 1: the last of 2 epochs only
        assert Path(_config(d0)["teacher"]["run"]) == scratch
        for run in (scratch, d0):  # the same labeled fold and unlabeled pool as the pre-trained teacher's student
            for split in ("train", "unlabeled"):
                same = _run_dir(out, f"d-b20-f{fold}") / "splits" / f"{split}.npy"
                assert np.array_equal(np.load(run / "splits" / f"{split}.npy"), np.load(same))
    rows = json.loads((out / "limited_label.json").read_text())
    assert all({"teacher_scratch", "distilled_scratch"} <= set(r) for r in rows)


def test_compare_scratch_needs_an_outside_teacher(tmp_path):
    out = tmp_path / "ll"
    res = CliRunner().invoke(app, ["study", "limited-label", "--dataset", "digits", "--budgets", "20",
                                   "--compare-scratch", "--out", str(out)])
    assert res.exit_code == 2
    assert "--teacher-pretrain disjoint or --teacher-init" in res.output
    assert not out.exists()


def test_table_1_figure_draws_every_column_through_the_fold_means():
    from kdlens.studies.limited_label import limited_label_figure

    rows = [{"budget": 100, "fold": f, "undistilled": 70.0 + f, "distilled": 80.0 + 2 * f, "teacher": 85.0,
             "distilled_scratch": 71.0, "teacher_scratch": 72.0, "fixmatch": 60.0 + f} for f in range(3)]
    rows += [{"budget": 1000, "fold": f, "undistilled": 82.0, "distilled": 84.0, "teacher": 88.0,
              "distilled_scratch": 83.0, "teacher_scratch": 83.5, "fixmatch": 81.0 - f} for f in range(3)]
    ax = limited_label_figure(rows).axes[0]
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar containers: label → data line
    assert set(lines) >= {"UD", "D", "D (scratch teacher)", "teacher", "scratch teacher", "FixMatch"}
    assert np.allclose(lines["UD"].get_ydata(), [71.0, 82.0])  # the mean of folds 70, 71, 72
    assert np.allclose(lines["D"].get_ydata(), [82.0, 84.0])
    assert np.allclose(lines["FixMatch"].get_ydata(), [61.0, 80.0])
    assert ax.get_xscale() == "log"
