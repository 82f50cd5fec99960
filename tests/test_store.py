import multiprocessing as mp
import pickle

import numpy as np
import pytest
import torch

from kdlens.errors import KdlensError
from kdlens.store import RunDir, RunIndex, atomic_torch_save, atomic_write_bytes, config_hash, safe_torch_load


def test_config_hash_ignores_key_order_but_not_values():
    assert config_hash({"a": 1, "b": {"c": 2}}) == config_hash({"b": {"c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_run_index_lifecycle(tmp_path):
    index = RunIndex(tmp_path)
    index.start("r1", "train", "h1", tmp_path / "r1")
    assert index.get("r1").status == "running"
    assert index.find_done("h1") is None
    index.finish("r1", {"final_acc": 90.0})
    rec = index.get("r1")
    assert rec.status == "done" and rec.metrics == {"final_acc": 90.0}
    assert index.find_done("h1").id == "r1"
    index.start("r2", "train", "h2", tmp_path / "r2")
    index.fail("r2", "NaN loss at epoch 3")
    assert index.get("r2").reason == "NaN loss at epoch 3"
    index.start("r2", "train", "h2", tmp_path / "r2")  # a retry keeps one row
    assert [r.id for r in index.list()] == ["r1", "r2"]
    assert index.get("r2").attempts == 2 and index.get("r2").reason is None


def _writer(root, worker, n):
    index = RunIndex(root)
    for i in range(n):
        run_id = f"w{worker}-{i}"
        index.start(run_id, "train", f"h{worker}-{i}", root)
        index.update_metrics(run_id, {"step": i})
        index.finish(run_id, {"worker": worker})


def test_concurrent_writers_lose_nothing(tmp_path):
    workers, per_worker = 8, 40
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(tmp_path, w, per_worker)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)  # generous: 8 interpreters importing torch on a loaded 2-core machine
        assert p.exitcode == 0
    rows = RunIndex(tmp_path).list()
    assert len(rows) == workers * per_worker
    assert len({r.id for r in rows}) == workers * per_worker
    assert all(r.status == "done" for r in rows)
    assert all(r.metrics["step"] == int(r.id.split("-")[1]) for r in rows)
    assert all(r.metrics["worker"] == int(r.id[1:].split("-")[0]) for r in rows)


def test_atomic_write_failure_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    atomic_torch_save({"w": torch.ones(3)}, target)

    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("kdlens.store.atomic.os.fsync", full_disk)
    with pytest.raises(OSError):
        atomic_torch_save({"w": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert torch.equal(safe_torch_load(target)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Evil()}, path)
    with pytest.raises(KdlensError, match="weights_only"):
        safe_torch_load(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "t.pt"
    atomic_torch_save({"w": torch.arange(1000.0)}, path)
    data = path.read_bytes()
    atomic_write_bytes(path, data[: len(data) // 2])
    with pytest.raises(KdlensError, match="cannot load checkpoint"):
        safe_torch_load(path)


def test_rundir_metrics_drop_torn_line_and_truncate(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create({"a": 1})
    for e in range(1, 5):
        run.append_metrics({"epoch": e, "acc": e * 10})
    with open(run.metrics_path, "a") as f:
        f.write('{"epoch": 5, "ac')  # killed mid-write
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2, 3, 4]
    run.truncate_metrics(2)
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
    run.save_split("labeled", np.array([3, 1, 2]))
    assert run.load_split("labeled").tolist() == [3, 1, 2]
    assert run.read_config() == {"a": 1}
    assert pickle.loads(pickle.dumps(run.path)) == run.path
