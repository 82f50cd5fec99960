"""Trackers (TensorBoard, MLflow) and top-5 accuracy: the numbers the Trainer reports
reach each sink unchanged, resumed runs continue the step numbering, typos exit 2."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from kdlens.config import OptimConfig
from kdlens.data import BatchAugment
from kdlens.errors import KdlensError
from kdlens.store import RunDir
from kdlens.train import EvalSet, SupervisedLoop, Trainer, evaluate
from kdlens.train.accuracy import top_k_for, topk_accuracy, topk_correct
from kdlens.train.data_setup import InMemorySource
from kdlens.train.trackers import (
    Tracker,
    Trackers,
    build_trackers,
    check_trackers,
    default_tracking_uri,
    flatten_params,
    mlflow_key,
)

CLASSES = 8
CONFIG = {"model": {"name": "tiny", "init": None}, "optim": {"lr": 0.1, "milestones": [2, 3]}, "epochs": 3,
          "name": "x" * 7000}


# ------------------------------------------------------------------ top-5
def test_top5_hand_worked_label_ranked_third():
    logits = torch.tensor([[0.1, 3.0, 2.0, 1.0, 0.5, 0.0, -1.0]])  # label 3 is ranked 3rd
    target = torch.tensor([3])
    assert topk_accuracy(logits, target, 1) == 0.0
    assert topk_accuracy(logits, target, 2) == 0.0
    assert topk_accuracy(logits, target, 3) == 100.0
    assert topk_accuracy(logits, target, 5) == 100.0
    # label ranked 6th: outside the top 5
    assert topk_accuracy(logits, torch.tensor([5]), 5) == 0.0
    # unlabeled rows (−1) are left out; none labeled → NaN
    assert topk_accuracy(logits.repeat(2, 1), torch.tensor([3, -1]), 5) == 100.0
    assert topk_accuracy(logits, torch.tensor([-1]), 5) != topk_accuracy(logits, torch.tensor([-1]), 5)


def test_top5_capped_at_the_number_of_classes_and_ties_favour_the_label():
    assert top_k_for(3) == 3 and top_k_for(10) == 5 and top_k_for(1) == 1
    tied = torch.zeros(4, 10)  # all logits equal: every label shares rank 1
    assert bool(topk_correct(tied, torch.tensor([0, 3, 7, 9]), 1).all())


def test_top5_matches_a_float64_sort_on_random_logits():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2000, 100, generator=g)
    targets = torch.randint(0, 100, (2000,), generator=g)
    order = logits.double().argsort(1, descending=True)[:, :5]
    reference = (order == targets[:, None]).any(1).double().mean().item() * 100.0
    assert topk_accuracy(logits, targets, 5) == pytest.approx(reference, abs=1e-12)
    top1 = (logits.double().argmax(1) == targets).double().mean().item() * 100.0
    assert topk_accuracy(logits, targets, 1) == pytest.approx(top1, abs=1e-12)


def test_evaluate_reports_top5_next_to_top1():
    g = torch.Generator().manual_seed(2)
    images, labels = torch.rand(50, 1, 4, 4, generator=g), torch.randint(0, CLASSES, (50,), generator=g)
    model = _model()
    scores = evaluate(model, EvalSet(images, labels, lambda x: x), torch.device("cpu"), batch_size=16)
    with torch.no_grad():
        logits = model(images)
    assert set(scores) == {"acc", "acc5", "loss"}
    assert scores["acc5"] == pytest.approx(topk_accuracy(logits, labels, 5), abs=1e-4)
    assert scores["acc"] <= scores["acc5"]


# ------------------------------------------------------------------ names and extras
def test_unknown_tracker_name_names_the_close_match():
    with pytest.raises(KdlensError, match=r"unknown tracker 'tensorbord'.*Did you mean: tensorboard"):
        check_trackers(["jsonl", "tensorbord"])
    check_trackers(["jsonl"])


@pytest.mark.parametrize("name, module", [("mlflow", "mlflow"), ("tensorboard", "torch.utils.tensorboard")])
def test_missing_tracker_package_says_what_to_install(monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # import → ImportError
    with pytest.raises(KdlensError, match=rf"pip install 'kdlens\[{name}\]'"):
        check_trackers([name])


def test_params_flatten_to_dotted_keys_and_legal_mlflow_names():
    flat = flatten_params(CONFIG)
    assert flat["model.name"] == "tiny" and flat["optim.milestones"] == [2, 3] and flat["model.init"] is None
    assert mlflow_key("epoch/loss(total)") == "epoch/loss_total_"
    assert default_tracking_uri("/tmp/store") == "sqlite:////tmp/store/mlflow.db"


def test_failing_tracker_is_dropped_with_a_warning_not_the_run():
    class Broken(Tracker):
        name = "broken"

        def log_metrics(self, metrics, step, scope):
            raise OSError("server gone")

    trackers = Trackers([Broken()])
    with pytest.warns(RuntimeWarning, match="broken tracker failed"):
        trackers.log_metrics({"a": 1.0}, 0, "step")
    assert len(trackers) == 0


# ------------------------------------------------------------------ the Trainer with trackers
def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, CLASSES))


def _data():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(100, 1, 4, 4, generator=g)
    labels = torch.randint(0, CLASSES, (100,), generator=g)
    return images, labels


def _trainer(run_dir, trackers, epochs=3, loop=None):
    images, labels = _data()
    source = InMemorySource(images, labels, None, 16, BatchAugment(), torch.device("cpu"))  # 7 batches
    return Trainer(_model(), loop or SupervisedLoop(source), OptimConfig(lr=0.1), epochs,
                   eval_set=EvalSet(images[:40], labels[:40], lambda x: x), run_dir=run_dir,
                   progress=False, trackers=trackers, log_every=3)


class _Recorder(Tracker):
    name = "recorder"

    def __init__(self):
        self.calls = []

    def log_metrics(self, metrics, step, scope):
        self.calls.append((scope, step, dict(metrics)))


def test_trainer_logs_steps_every_log_every_and_the_last_step_of_each_epoch(tmp_path):
    rec = _Recorder()
    result = _trainer(RunDir(tmp_path / "run"), Trackers([rec]), epochs=2).fit()
    steps = [s for scope, s, _ in rec.calls if scope == "step"]
    assert steps == [2, 5, 6, 9, 12, 13]  # 7 batches per epoch, log_every=3, + last step
    first = next(m for scope, _, m in rec.calls if scope == "step")
    assert set(first) == {"ce", "loss", "top1", "top5", "lr", "images_per_s"}
    assert 0 <= first["top1"] <= first["top5"] <= 100 and first["loss"] == pytest.approx(first["ce"])
    epochs = [(s, m) for scope, s, m in rec.calls if scope == "epoch"]
    assert [s for s, _ in epochs] == [1, 2]
    rows = RunDir(tmp_path / "run").read_metrics()
    assert all({"test_acc5", "train_acc5"} <= set(r) for r in rows)
    for (_, logged), row in zip(epochs, rows):
        assert logged == {k: v for k, v in row.items() if k != "epoch"}
    metrics = result.metrics()
    assert metrics["final_acc5"] == rows[-1]["test_acc5"] >= metrics["final_acc"]
    best = max(rows, key=lambda r: r["test_acc"])
    assert metrics["best_acc5"] == best["test_acc5"]


def test_trainer_without_trackers_trains_the_same_weights(tmp_path):
    a = _trainer(None, None, epochs=2)
    a.fit()
    b = _trainer(None, Trackers([_Recorder()]), epochs=2)
    b.fit()
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return acc, {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_hold_the_step_and_epoch_series_of_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    run = RunDir(tmp_path / "store" / "run-1")
    with build_trackers(["jsonl", "tensorboard"], run.path, store_dir=tmp_path / "store") as trackers:
        trackers.start(CONFIG)
        _trainer(run, trackers).fit()
        figure = tmp_path / "figure.png"
        import matplotlib.pyplot as plt

        plt.imsave(figure, torch.rand(8, 8).numpy())
        trackers.log_artifact(figure)
        trackers.log_artifact(run.metrics_path)
    acc, scalars = _scalars(run.path / "tensorboard")
    assert [s for s, _ in scalars["step/loss"]] == [2, 5, 6, 9, 12, 13, 16, 19, 20]
    assert {"step/ce", "step/top1", "step/top5", "step/lr", "step/images_per_s"} <= set(scalars)
    rows = run.read_metrics()
    for key in ("train_loss", "train_acc", "train_acc5", "test_acc", "test_acc5", "test_loss", "lr"):
        assert [s for s, _ in scalars[f"epoch/{key}"]] == [1, 2, 3]
        assert [v for _, v in scalars[f"epoch/{key}"]] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert "config" in str(acc.Tags()["tensors"])  # add_text is stored as a text tensor
    assert acc.Tags()["images"] == ["artifacts/figure.png"]
    assert (run.path / "tensorboard" / "artifacts" / "metrics.jsonl").exists()


class _FailAt(SupervisedLoop):
    """Raises at its ``fail_at``-th step (a kill mid-epoch, after some steps were logged)."""

    def __init__(self, source, fail_at):
        super().__init__(source)
        self.calls, self.fail_at = 0, fail_at

    def step(self, model, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return super().step(model, batch)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One run store (and MLflow database, 5–10 s to create) for the module; each test
    uses its own experiment."""
    pytest.importorskip("mlflow")
    return tmp_path_factory.mktemp("store")


def _mlflow_run(store, experiment):
    from mlflow import MlflowClient

    client = MlflowClient(default_tracking_uri(store))
    [mlrun] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, mlrun


def test_resumed_run_continues_global_steps_without_duplicates(store):
    pytest.importorskip("tensorboard")
    run = RunDir(store / "run-resumed")
    images, labels = _data()
    source = InMemorySource(images, labels, None, 16, BatchAugment(), torch.device("cpu"))
    with pytest.raises(KeyboardInterrupt):  # killed at the 5th step of epoch 2: steps 9 logged
        with build_trackers(["tensorboard", "mlflow"], run.path, store_dir=store, experiment="resume") as trackers:
            trackers.start(CONFIG)
            _trainer(run, trackers, loop=_FailAt(source, fail_at=12)).fit()
    with build_trackers(["tensorboard", "mlflow"], run.path, store_dir=store, experiment="resume") as trackers:
        trackers.start(CONFIG)
        _trainer(run, trackers).fit(resume=True)
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    _, scalars = _scalars(run.path / "tensorboard")
    assert [s for s, _ in scalars["epoch/test_acc"]] == [1, 2, 3]
    assert [v for _, v in scalars["epoch/test_acc"]] == pytest.approx([r["test_acc"] for r in rows], rel=1e-6)
    assert [s for s, _ in scalars["step/loss"]] == [2, 5, 6, 9, 12, 13, 16, 19, 20]  # orphan step 9 replaced

    client, mlrun = _mlflow_run(store, "resume")
    assert mlrun.info.status == "FINISHED"
    history = client.get_metric_history(mlrun.info.run_id, "epoch/test_acc")
    assert sorted(m.step for m in history) == [1, 2, 3]  # one MLflow run continued, no duplicates
    steps = sorted(m.step for m in client.get_metric_history(mlrun.info.run_id, "step/loss"))
    assert steps[0] == 2 and steps[-1] == 20 and 13 in steps and 16 in steps


def test_mlflow_run_holds_params_metrics_and_artifacts_inside_the_store(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written into the current directory
    run = RunDir(store / "run-mlflow")
    with build_trackers(["mlflow"], run.path, store_dir=store, run_name="my-run", experiment="full") as trackers:
        trackers.start(CONFIG)
        _trainer(run, trackers).fit()
        run.write_result({"final_acc": 1.0})
        trackers.log_artifact(run.result_path)
    assert list(tmp_path.iterdir()) == []
    assert (store / "mlflow.db").exists() and (store / "mlartifacts").is_dir()
    client, mlrun = _mlflow_run(store, "full")
    assert mlrun.info.run_name == "my-run" and mlrun.info.status == "FINISHED"
    params = mlrun.data.params
    assert params["model.name"] == "tiny" and params["optim.milestones"] == "[2, 3]"
    assert params["model.init"] == "null" and len(params["name"]) == 6000  # MLflow's value limit
    rows = run.read_metrics()
    history = client.get_metric_history(mlrun.info.run_id, "epoch/test_acc5")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], pytest.approx(r["test_acc5"])) for r in rows]
    steps = [m.step for m in client.get_metric_history(mlrun.info.run_id, "step/top5")]
    assert steps == [2, 5, 6, 9, 12, 13, 16, 19, 20]
    assert [a.path for a in client.list_artifacts(mlrun.info.run_id)] == ["result.json"]


def test_failed_run_marks_the_mlflow_run_failed(store):
    with pytest.raises(RuntimeError):
        with build_trackers(["mlflow"], store / "run-failed", store_dir=store, experiment="failed") as trackers:
            trackers.start({"a": 1})
            raise RuntimeError("diverged")
    _, mlrun = _mlflow_run(store, "failed")
    assert mlrun.info.status == "FAILED" and mlrun.data.params == {"a": "1"}
