import pytest

from kdlens.config import TrainConfig, validate
from kdlens.studies.kd_vs_alone import kd_vs_alone_table, run_kd_vs_alone
from kdlens.studies.limited_label import labeled_epochs, limited_label_table, run_limited_label_study
from kdlens.studies.summary import fmt_mean_std, mean_std
from kdlens.store import RunIndex
from kdlens.train.run import run_training


def test_mean_std_is_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)
    assert fmt_mean_std([1.0, 3.0]) == "2.00 ± 1.41"
    assert fmt_mean_std([2.5]) == "2.50 (n = 1)"  # one fold: no spread to show


def test_labeled_epochs_rule():
    assert [labeled_epochs(b) for b in (100, 500, 1000, 5000)] == [200, 40, 20, 10]


def test_limited_label_study_is_resumable(tmp_path):
    kw = dict(dataset="digits", budgets=[20], folds=2, teacher="baseline_student", student="baseline_student",
              student_epochs=1, unlabeled_limit=300, labeled_epochs_override=2, out=str(tmp_path))
    rows = run_limited_label_study(**kw)
    assert [(r["budget"], r["fold"]) for r in rows] == [(20, 0), (20, 1)]
    assert all(0 <= r[k] <= 100 for r in rows for k in ("teacher", "undistilled", "distilled"))
    n_runs = len(RunIndex(tmp_path).list("done"))
    assert n_runs == 6
    again = run_limited_label_study(**kw)  # everything done: same numbers, no new runs
    assert again == rows and len(RunIndex(tmp_path).list()) == n_runs
    table = limited_label_table(rows)
    assert table.count("\n") == 2 and "| 20 |" in table


def _stop_run_after(monkeypatch, prefix: str, epoch: int):
    """Ctrl-C (KeyboardInterrupt) right after the checkpoint of ``epoch`` of the run named ``prefix-…``;
    returns a function that undoes it."""
    from kdlens.train.trainer import Trainer

    save = Trainer._save

    def save_then_stop(self, done, is_best):
        save(self, done, is_best)
        if done == epoch and self.run_dir.path.name.startswith(prefix + "-"):
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", save_then_stop)
    return lambda: monkeypatch.setattr(Trainer, "_save", save)


def _record_trained_epochs(monkeypatch) -> list[tuple[str, int]]:
    """(run name prefix, 1-based epoch) of every epoch trained from now on."""
    from kdlens.train.trainer import Trainer

    trained: list[tuple[str, int]] = []
    train_epoch = Trainer._train_epoch

    def recording(self, epoch, bar):
        trained.append((self.run_dir.path.name.split("-")[0], epoch + 1))  # 0-based in the loop
        return train_epoch(self, epoch, bar)

    monkeypatch.setattr(Trainer, "_train_epoch", recording)
    return trained


def test_limited_label_study_resumes_a_run_interrupted_mid_way(tmp_path, monkeypatch):
    """Ctrl-C during the undistilled student's run: the same study again continues that run from
    its checkpoint (and keeps the finished teacher) instead of refusing it."""
    kw = dict(dataset="digits", budgets=[20], folds=1, teacher="baseline_student", student="baseline_student",
              student_epochs=1, unlabeled_limit=300, labeled_epochs_override=3, out=str(tmp_path))
    undo = _stop_run_after(monkeypatch, "ud", 2)
    with pytest.raises(KeyboardInterrupt):
        run_limited_label_study(**kw)
    undo()
    index = RunIndex(tmp_path)
    [teacher_before] = index.list("done")
    assert teacher_before.id.startswith("teacher-")
    trained = _record_trained_epochs(monkeypatch)
    [row] = run_limited_label_study(**kw)
    assert 0 <= row["undistilled"] <= 100
    assert [e for name, e in trained if name == "ud"] == [3]  # epochs 1-2 kept, only 3 trained
    assert not [e for name, e in trained if name == "teacher"]  # the finished teacher is not trained again
    runs = {r.id.split("-")[0]: r for r in index.list()}
    assert sorted(runs) == ["d", "teacher", "ud"] and all(r.status == "done" for r in runs.values())
    assert runs["teacher"].id == teacher_before.id


def test_kd_vs_alone_resumes_a_run_interrupted_mid_way(tmp_path, monkeypatch):
    teacher = run_training(validate(TrainConfig, {"model": {"name": "baseline_student"}, "data": {"name": "digits"},
                                                  "epochs": 1, "out": str(tmp_path), "name": "t"}), progress=False)
    kw = dict(teacher_run=str(teacher.path), dataset="digits", student="baseline_student", seeds=[0], epochs=2,
              out=str(tmp_path / "s"))
    undo = _stop_run_after(monkeypatch, "alone", 1)
    with pytest.raises(KeyboardInterrupt):
        run_kd_vs_alone(**kw)
    undo()
    trained = _record_trained_epochs(monkeypatch)
    [row] = run_kd_vs_alone(**kw)
    assert trained == [("alone", 2)]  # the distilled run was done; alone continues from its epoch 1
    assert 0 <= row["alone_final"] <= 100


def test_kd_vs_alone(tmp_path):
    teacher = run_training(validate(TrainConfig, {"model": {"name": "baseline_student"}, "data": {"name": "digits"},
                                                  "epochs": 2, "out": str(tmp_path), "name": "t"}), progress=False)
    said: list[str] = []
    rows = run_kd_vs_alone(str(teacher.path), "digits", "baseline_student", seeds=[0, 1], epochs=1,
                           out=str(tmp_path / "s"), log=said.append)
    assert len(rows) == 2
    assert said == ["run 1/4: seed 0, baseline_student distilled (kd)", "run 2/4: seed 0, baseline_student alone",
                    "run 3/4: seed 1, baseline_student distilled (kd)", "run 4/4: seed 1, baseline_student alone"]
    strip = lambda r: {k: v for k, v in r.items() if k != "seed"}  # noqa: E731
    assert strip(rows[0]) != strip(rows[1])  # different seeds, different runs
    assert "| kd |" in kd_vs_alone_table(rows)


def test_kd_vs_alone_weights_reach_only_the_distilled_run_and_alone_is_reused(tmp_path):
    import yaml

    teacher = run_training(validate(TrainConfig, {"model": {"name": "baseline_student"}, "data": {"name": "digits"},
                                                  "epochs": 2, "out": str(tmp_path), "name": "t"}), progress=False)
    out = tmp_path / "s"
    first = run_kd_vs_alone(str(teacher.path), "digits", "baseline_student", seeds=[0], epochs=1, out=str(out))
    tuned = run_kd_vs_alone(str(teacher.path), "digits", "baseline_student", seeds=[0], epochs=1, out=str(out),
                            distill_extra={"gamma": 0.5, "alpha": 0.5, "loss": {"T": 2.0}})
    assert tuned[0]["alone_final"] == first[0]["alone_final"]
    dirs = sorted(p.name.split("-")[0] for p in out.iterdir() if p.is_dir())
    assert dirs.count("alone") == 1 and dirs.count("kd") == 2  # alone trained once, two KD settings
    configs = [yaml.safe_load((p / "config.yaml").read_text()) for p in out.iterdir() if p.name.startswith("kd-")]
    settings = {(c["gamma"], c["alpha"], c["loss"].get("T")) for c in configs}
    assert (0.5, 0.5, 2.0) in settings and len(settings) == 2
    assert (out / "kd_vs_alone_alpha-0.5_gamma-0.5_T-2.json").exists() and (out / "kd_vs_alone.json").exists()


def test_kd_vs_alone_verdict_hand_worked():
    from kdlens.studies.kd_vs_alone import kd_vs_alone_verdict

    rows = [{"alone_final": 90.0, "kd_final": 90.5}, {"alone_final": 91.0, "kd_final": 90.8}]
    strong = kd_vs_alone_verdict(rows, teacher_acc=93.0)  # alone mean 90.5 → lead +2.50
    assert "+0.50, -0.20; mean +0.15; KD ahead in 1 of 2 seeds" in strong
    assert "teacher 93.00%: +2.50 points over the student alone" in strong and "stronger teacher" not in strong
    weak = kd_vs_alone_verdict(rows, teacher_acc=91.2)  # lead +0.70 < 1 point
    assert "+0.70 points" in weak and "stronger teacher" in weak
    assert kd_vs_alone_verdict(rows, None).count("\n") == 0  # no teacher accuracy: only the differences


def test_teacher_accuracy_reads_the_run_result(tmp_path):
    from kdlens.studies.kd_vs_alone import teacher_accuracy

    teacher = run_training(validate(TrainConfig, {"model": {"name": "baseline_student"}, "data": {"name": "digits"},
                                                  "epochs": 1, "out": str(tmp_path), "name": "t"}), progress=False)
    assert teacher_accuracy(str(teacher.path)) == pytest.approx(teacher.metrics["final_acc"])
    assert teacher_accuracy(str(tmp_path / "missing")) is None


def test_kd_vs_alone_checks_the_teacher_and_method_before_training(tmp_path):
    from kdlens.errors import KdlensError

    out = tmp_path / "s"
    with pytest.raises(KdlensError, match="neither a run directory nor a checkpoint"):
        run_kd_vs_alone(str(tmp_path / "no-teacher"), "digits", "baseline_student", seeds=[0], epochs=1, out=str(out))
    assert not out.exists()  # the student alone was not trained first
    teacher = run_training(validate(TrainConfig, {"model": {"name": "baseline_student"}, "data": {"name": "digits"},
                                                  "epochs": 1, "out": str(tmp_path), "name": "t"}), progress=False)
    with pytest.raises(KdlensError, match="kdd"):
        run_kd_vs_alone(str(teacher.path), "digits", "baseline_student", method="kdd", seeds=[0], epochs=1, out=str(out))
    assert not any(p.name.startswith("alone") for p in out.glob("*"))


def test_limited_label_checks_model_names_before_training(tmp_path):
    from kdlens.errors import KdlensError

    with pytest.raises(KdlensError, match="no_such_student"):
        run_limited_label_study("digits", budgets=[50], folds=1, teacher="thesis_teacher_small",
                                student="no_such_student", out=str(tmp_path / "ll"))
    assert not (tmp_path / "ll").exists()  # the teacher was not trained first
