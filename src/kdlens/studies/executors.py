"""Where a study's tasks run: in this process, in local worker processes, or on Ray.

Every executor runs :func:`execute_task` on a plain, picklable payload (kind, resolved
config, dependencies) and hands back a future of a plain result dict
(``{"status": "done" | "failed", "path", "metrics", "reason"}``), so the scheduler in
:mod:`kdlens.studies.grid` does not care where a task ran and the same study gives the same
results under every executor (each run is seeded from its config).

* ``local`` with one worker: a background thread of this process (no start-up cost; the
  progress display keeps ticking);
* ``local`` with N > 1 workers: :class:`concurrent.futures.ProcessPoolExecutor` with the
  ``spawn`` start method, each worker limited to ``cores // N`` torch threads;
* ``ray``: ``ray.remote`` tasks on a running cluster (``--address``) or a local instance;
  futures through ``ObjectRef.future()``.  The study directory must be on a file system every
  node sees (runs, caches and the SQLite store are files).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlens.errors import KdlensError

EXECUTORS = ("local", "ray")


# ------------------------------------------------------------------------- the task body
def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def execute_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one study task; never raises (a failure is a result with its reason)."""
    _set_threads(payload.get("threads"))
    kind = payload["kind"]
    try:
        if kind in ("train", "distill"):
            return _execute_run(payload)
        return _execute_step(payload)
    except BaseException as exc:  # recorded, not propagated: the study goes on
        if isinstance(exc, KeyboardInterrupt):
            raise
        reason = f"{type(exc).__name__}: {exc}".strip()
        return {"status": "failed", "reason": reason, "traceback": traceback.format_exc(),
                "path": payload.get("_path")}


def _execute_run(payload: dict[str, Any]) -> dict[str, Any]:
    from kdlens.config import DistillConfig, TrainConfig, validate

    config = dict(payload["config"])
    config["out"] = payload["study_dir"]
    config["name"] = payload["id"]
    config.pop("kind", None)
    source = f"task {payload['id']}"
    if payload["kind"] == "train":
        from kdlens.train.run import run_training

        cfg = validate(TrainConfig, config, source=source)
        outcome = run_training(cfg, resume=True, progress=False)
    else:
        from kdlens.explain.hint_search import auto_hint_layers
        from kdlens.train.distill_run import run_distillation

        cfg = validate(DistillConfig, config, source=source)
        outcome = run_distillation(cfg, resume=True, progress=False, hint_search=auto_hint_layers)
    return {"status": "done", "path": str(outcome.path), "metrics": _plain(outcome.metrics),
            "skipped": outcome.skipped}


def _execute_step(payload: dict[str, Any]) -> dict[str, Any]:
    from kdlens.store import atomic_write_text
    from kdlens.studies.papers import STEPS, Dependency, StepContext

    fn = STEPS.get(payload["kind"])
    out_dir = Path(payload["study_dir"]) / "steps" / payload["id"]
    payload["_path"] = str(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").unlink(missing_ok=True)
    deps = [Dependency(d["id"], d["group"], d["kind"], d["levels"], Path(d["path"]), d.get("metrics") or {})
            for d in payload["deps"]]
    ctx = StepContext(payload["id"], payload["group"], payload["levels"], dict(payload["config"]), deps,
                      out_dir, Path(payload["study_dir"]))
    try:
        metrics = fn(ctx) or {}
    except BaseException:
        (out_dir / "error.txt").write_text(traceback.format_exc())
        raise
    import json

    metrics = _plain(metrics)
    atomic_write_text(out_dir / "result.json", json.dumps(metrics, indent=1, sort_keys=True))
    (out_dir / "error.txt").unlink(missing_ok=True)
    return {"status": "done", "path": str(out_dir), "metrics": metrics}


def _plain(obj: Any) -> Any:
    """JSON-ready numbers and containers (numpy scalars → Python)."""
    import json

    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


# ---------------------------------------------------------------------------- executors
class _ThreadExecutor:
    """One daemon thread in this process (a Ctrl-C does not wait for the task to finish)."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []

    def submit(self, payload: dict[str, Any]) -> cf.Future:
        future: cf.Future = cf.Future()

        def work() -> None:
            try:
                future.set_result(execute_task(payload))
            except BaseException as exc:  # pragma: no cover - KeyboardInterrupt in a thread
                future.set_exception(exc)

        thread = threading.Thread(target=work, daemon=True, name=f"kdlens-task-{payload['id']}")
        thread.start()
        self._threads.append(thread)
        return future

    def wait(self, futures: Sequence[cf.Future], timeout: float) -> list[cf.Future]:
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def shutdown(self, wait: bool = True) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]


class LocalExecutor:
    """``workers`` spawned processes (``concurrent.futures.ProcessPoolExecutor``)."""

    def __init__(self, workers: int, threads: int | None = None) -> None:
        self.workers = workers
        self.threads = threads
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_set_threads, initargs=(self.threads,),
        )

    def submit(self, payload: dict[str, Any]) -> cf.Future:
        try:
            return self._pool.submit(execute_task, payload)
        except cf.process.BrokenProcessPool:
            self._pool = self._new_pool()  # a worker died (killed, out of memory): start afresh
            return self._pool.submit(execute_task, payload)

    def wait(self, futures: Sequence[cf.Future], timeout: float) -> list[cf.Future]:
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


class RayExecutor:
    """Tasks as Ray remote functions, ``cpus_per_task`` CPUs each."""

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise KdlensError(
                "--executor ray needs Ray, which is not installed: pip install 'kdlens[ray]' "
                "(or use --executor local)"
            ) from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            elif workers:
                kwargs["num_cpus"] = workers
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise KdlensError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
        self._fn = ray.remote(num_cpus=1, max_retries=0)(execute_task)

    def submit(self, payload: dict[str, Any]) -> cf.Future:
        return self._fn.remote(payload).future()

    def wait(self, futures: Sequence[cf.Future], timeout: float) -> list[cf.Future]:
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def shutdown(self, wait: bool = True) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(kind: str = "local", workers: int = 1, address: str | None = None, threads: int | None = None,
                  check_only: bool = False):
    """The executor for ``kind``; ``check_only`` validates the choice (and that Ray is
    installed) without starting anything."""
    if kind not in EXECUTORS:
        raise KdlensError(f"unknown executor {kind!r}; use one of {', '.join(EXECUTORS)}")
    if address and kind != "ray":
        raise KdlensError("--address is for --executor ray")
    if kind == "ray":
        if check_only:
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise KdlensError("--executor ray needs Ray, which is not installed: pip install 'kdlens[ray]' "
                                  "(or use --executor local)")
            return None
        return RayExecutor(address=address, workers=workers, threads=threads)
    if check_only:
        return None
    if workers <= 1:
        return _ThreadExecutor()
    return LocalExecutor(workers, threads)
