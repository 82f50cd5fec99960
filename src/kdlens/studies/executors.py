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

Stopping: every executor has ``stop(grace_s)``, which the runner calls when it is interrupted
(Ctrl-C, SIGTERM, SIGHUP).  A task in flight gets a ``KeyboardInterrupt`` (worker processes:
SIGTERM, which a worker turns into one; the thread: an asynchronous exception; Ray: a forced
cancel), so its run records itself interrupted and keeps its last epoch's checkpoint; a
worker still busy after ``grace_s`` is killed.  Worker processes ignore SIGINT and SIGHUP (a
terminal sends those to the whole process group; the runner decides) and stop by themselves
when their runner is gone, so none outlives it as an orphan.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
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


_IN_WORKER_PROCESS = False  # set by the initializer of local worker processes
_TASK_RUNNING = False


def _worker_init(threads: int | None) -> None:
    """Initializer of a local worker process: signals as described in the module docstring,
    a watchdog for the runner's death, then the torch thread count."""
    global _IN_WORKER_PROCESS
    _IN_WORKER_PROCESS = True
    for name in ("SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)
    sys.unraisablehook = _retry_swallowed_interrupt
    runner = os.getppid()

    def watch() -> None:  # the runner died without stopping us (kill -9): stop as if asked to
        while os.getppid() == runner:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="kdlens-runner-watchdog").start()
    _set_threads(threads)


def _retry_swallowed_interrupt(unraisable: Any, _default=sys.unraisablehook) -> None:
    """A stop that landed where Python cannot raise (an import lock's callback, a ``__del__``)
    is swallowed with an "Exception ignored" message: deliver it again a moment later instead."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return
    _default(unraisable)


def _worker_sigterm(signum: int, frame: Any) -> None:
    if _TASK_RUNNING:
        raise KeyboardInterrupt  # the run records itself interrupted; execute_task then exits
    os._exit(128 + signum)  # idle: nothing to record


def execute_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one study task; never raises (a failure is a result with its reason) except on
    an interruption, which a worker process answers by exiting once the run has recorded it."""
    global _TASK_RUNNING
    _set_threads(payload.get("threads"))
    kind = payload["kind"]
    _TASK_RUNNING = True
    try:
        if kind in ("train", "distill"):
            return _execute_run(payload)
        return _execute_step(payload)
    except KeyboardInterrupt:
        if _IN_WORKER_PROCESS:
            os._exit(128 + signal.SIGTERM)  # stopped by its runner, which is leaving too
        raise
    except BaseException as exc:  # recorded, not propagated: the study goes on
        reason = f"{type(exc).__name__}: {exc}".strip()
        return {"status": "failed", "reason": reason, "traceback": traceback.format_exc(),
                "path": payload.get("_path")}
    finally:
        _TASK_RUNNING = False


def _execute_run(payload: dict[str, Any]) -> dict[str, Any]:
    from kdlens.config import DistillConfig, TrainConfig, validate

    config = dict(payload["config"])
    config["out"] = payload["study_dir"]
    config["name"] = payload["id"]
    config.pop("kind", None)
    source = f"task {payload['id']}"
    if payload["kind"] == "train":
        from kdlens.train.semi_run import run_train_config

        cfg = validate(TrainConfig, config, source=source)
        outcome = run_train_config(cfg, resume=True, progress=False)  # supervised, or semi= when set
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

    def stop(self, grace_s: float = 1.0) -> None:
        """Raise ``KeyboardInterrupt`` in each task thread; wait up to ``grace_s`` for them (a
        thread still inside one long C call is left to die with the process: it is a daemon)."""
        alive = [t for t in self._threads if t.is_alive()]
        for t in alive:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(t.ident), ctypes.py_object(KeyboardInterrupt))
        deadline = time.monotonic() + grace_s
        for t in alive:
            t.join(max(0.0, deadline - time.monotonic()))
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
            initializer=_worker_init, initargs=(self.threads,),
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

    def worker_pids(self) -> list[int]:
        return [p.pid for p in list((getattr(self._pool, "_processes", None) or {}).values()) if p.pid]

    def stop(self, grace_s: float = 1.0) -> None:
        """SIGTERM every worker (a task in flight records itself interrupted, an idle worker
        just exits); SIGKILL those still there after ``grace_s``; drop queued tasks."""
        procs = list((getattr(self._pool, "_processes", None) or {}).values())
        for p in procs:
            try:
                p.terminate()
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + grace_s
        for p in procs:
            try:
                p.join(max(0.0, deadline - time.monotonic()))
            except (OSError, ValueError, AssertionError):
                pass
        for p in procs:
            try:
                if p.is_alive():
                    p.kill()
                    p.join(0.5)
            except (OSError, ValueError, AssertionError):
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)


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
        self._refs: dict[cf.Future, Any] = {}

    def submit(self, payload: dict[str, Any]) -> cf.Future:
        ref = self._fn.remote(payload)
        future = ref.future()
        self._refs[future] = ref
        return future

    def wait(self, futures: Sequence[cf.Future], timeout: float) -> list[cf.Future]:
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        for future in done:
            self._refs.pop(future, None)
        return list(done)

    def shutdown(self, wait: bool = True) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()

    def stop(self, grace_s: float = 1.0) -> None:
        """Cancel the tasks in flight (forced: their worker processes are killed)."""
        for future, ref in list(self._refs.items()):
            if not future.done():
                try:
                    self._ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone
                    pass
        self._refs.clear()


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
