"""Data-parallel training of one run with torch DistributedDataParallel, under ``torchrun``.

    kdlens train examples/train.yaml epochs=10 --ddp 2       # launches torchrun (launch_local)
    torchrun --nproc_per_node 2 -m kdlens.train.ddp examples/train.yaml epochs=10
    torchrun --nproc_per_node 4 -m kdlens.train.ddp CONFIG.yaml device=cuda     # one GPU per process

Backend: NCCL when the processes have CUDA devices (``device`` auto/cuda: process ``LOCAL_RANK``
uses ``cuda:LOCAL_RANK``), gloo on CPU.

**Same result as one process with the same global batch.**  Every process draws the same
shuffled global batch of ``batch_size`` examples (and the same augmentation) from the same
per-epoch generator as :class:`~kdlens.train.trainer.Trainer` in a single process, then trains
on its contiguous share; its loss is the *sum* over its share divided by the global batch size
and multiplied by the number of processes, so DDP's gradient average is exactly the gradient of
the mean loss over the global batch — also for a smaller last batch whose shares differ in
size.  Batch norm becomes :class:`torch.nn.SyncBatchNorm` (statistics over the global batch) on GPUs;
on CPU (gloo) :class:`GlobalBatchNorm` does the same.
So parameters match the single-process run up to float summation order (the test checks this
with 2 gloo processes on CPU); dropout masks differ (drawn per process).

Recording: process 0 records the run in the store exactly like ``kdlens train`` (same run id,
directory, checkpoints in the plain model layout, metrics, store row); the others keep their
checkpoints in a scratch folder.  A finished run is skipped by all processes; ``resume=true``
resumes every process from process 0's last checkpoint.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kdlens.config import TrainConfig, load_config
from kdlens.errors import KdlensError
from kdlens.store import RunDir, RunIndex, config_hash
from kdlens.train.data_setup import InMemorySource, prepare_data
from kdlens.train.loop import Batch, SourceLoop, StepOutput
from kdlens.train.run import RunOutcome, build_student, execute_run, finished_result, run_id_for, run_identity, short_name
from kdlens.train.trainer import Trainer


class ShareOfBatches:
    """This process's contiguous share of every global batch of ``source`` (same generator on
    every process → same global batches and augmentation)."""

    def __init__(self, source: InMemorySource, rank: int, world: int) -> None:
        self.source, self.rank, self.world = source, rank, world

    def __len__(self) -> int:
        return len(self.source)

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        for batch in self.source.epoch(generator):
            n = batch.x.shape[0]
            rows = torch.tensor_split(torch.arange(n, device=batch.x.device), self.world)[self.rank]
            extras = {k: v[rows] for k, v in batch.extras.items()}
            extras["global_batch"] = torch.tensor(n)
            yield Batch(x=batch.x[rows], y=batch.y[rows], idx=batch.idx[rows], extras=extras)


class DataParallelSupervisedLoop(SourceLoop):
    """Cross-entropy scaled so that DDP's gradient average is the global-batch mean."""

    def __init__(self, source: ShareOfBatches, world: int, label_smoothing: float = 0.0) -> None:
        self.source = source
        self.world = world
        self.label_smoothing = label_smoothing

    def step(self, model: nn.Module, batch: Batch) -> StepOutput:
        logits = model(batch.x)
        total = int(batch.extras["global_batch"])
        ce_sum = F.cross_entropy(logits.float(), batch.y, label_smoothing=self.label_smoothing, reduction="sum")
        loss = ce_sum * (self.world / total)
        report = ce_sum.detach().clone()
        dist.all_reduce(report)  # the global-batch mean, for the log
        return StepOutput(loss=loss, parts={"ce": report / total}, logits=logits, targets=batch.y)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all processes, for CPU/gloo (``SyncBatchNorm`` needs
    GPUs).  Per-channel sums, sums of squares and counts are summed across processes with the
    differentiable :func:`torch.distributed.nn.functional.all_reduce`, so both the statistics
    and their gradients are those of one process seeing the whole batch.  Same parameters and
    buffers as ``nn.BatchNorm*d`` (checkpoints are interchangeable); eval mode is plain batch norm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        import warnings

        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_tensor([xf.numel() / c])])
        with warnings.catch_warnings():  # deprecated in favour of a private module; still the autograd-aware one
            warnings.simplefilter("ignore", FutureWarning)
            total = all_reduce(local)
        s, ss, n = total[:c], total[c:2 * c], total[2 * c]
        mean = s / n
        var = (ss / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)).clamp_min(0), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def global_batch_norm(module: nn.Module, device: torch.device) -> nn.Module:
    """Batch norms → ``SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm` on CPU (in place)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            global_batch_norm(child, device)
    return module


class PlainStateDDP(DistributedDataParallel):
    """DDP whose ``state_dict`` is the wrapped module's (no ``module.`` prefix), so checkpoints
    load into a plain model (teachers, fine-tuning, `kdlens embed`)."""

    def state_dict(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True):  # type: ignore[override]
        return self.module.load_state_dict(state_dict, strict)


def _setup() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    if not dist.is_available():
        raise KdlensError("this torch build has no torch.distributed")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise KdlensError("run under torchrun: torchrun --nproc_per_node N -m kdlens.train.ddp CONFIG.yaml [key=value …]")
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


def check_data_parallel(cfg: TrainConfig, world: int, per_node: int | None = None) -> None:
    """Refuse (exit 2, before any work) what a data-parallel run of ``cfg`` on ``world``
    processes, ``per_node`` of them on this machine, cannot do."""
    if world < 1:
        raise KdlensError(f"data-parallel training needs at least 1 process; got {world}")
    if cfg.batch_size < world:
        raise KdlensError(f"batch_size={cfg.batch_size} is smaller than the {world} processes "
                          "(batch_size is the global batch, shared by all processes)")
    if per_node and per_node > 1:
        if cfg.device.startswith("cuda:"):
            raise KdlensError(f"device={cfg.device!r} would put all {per_node} processes on one GPU; "
                              "data-parallel process i uses cuda:i — give device=cuda (or auto)")
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if cfg.device in ("auto", "cuda") and gpus and per_node > gpus:
            raise KdlensError(f"{per_node} processes but {gpus} GPU(s): NCCL needs one GPU per process; "
                              f"use at most {gpus} processes, or device=cpu (gloo)")


def launch_local(nproc: int, module: str, args: list[str]) -> int:
    """Run ``python -m MODULE ARGS`` as ``nproc`` processes of this node under torchrun
    (``torch.distributed.run --standalone``: a free local rendezvous port); the exit code."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", module, *args]
    return subprocess.run(cmd, check=False).returncode


def exit_process(code: int) -> None:
    """Flush and leave at once, skipping the interpreter's teardown, where gloo/autograd worker
    threads were seen to abort ("terminate called without an active exception") now and then
    after a finished run, turning a good run into a failed torchrun job."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise KdlensError(f"device={cfg.device!r} but CUDA is not available")
    return torch.device(cfg.device if cfg.device not in ("auto",) else "cpu")


def run_training_ddp(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> RunOutcome | None:
    """Train ``cfg`` data-parallel; every process of the ``torchrun`` job calls this.  Returns
    the outcome on every process (metrics from process 0)."""
    rank, world, local = _setup()
    device = _device(cfg, local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns_group = not dist.is_initialized()
    if owns_group:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    try:
        return _train(cfg, resume, progress, rank, world, device)
    finally:
        if owns_group:
            try:
                dist.barrier()  # leave together: a process exiting early breaks the others' gloo threads
            finally:
                dist.destroy_process_group()


def _train(cfg: TrainConfig, resume: bool, progress: bool, rank: int, world: int, device: torch.device) -> RunOutcome:
    check_data_parallel(cfg, world)
    data = prepare_data(cfg.data)
    default = f"{short_name(cfg.model.name)}-{short_name(cfg.data.name)}"
    name = cfg.name or default
    model = build_student(cfg, data, device)  # same seed in every process: same initial weights
    identity = run_identity(cfg, model, data)
    run_id = run_id_for(name, "train", config_hash(identity))
    run_path = Path(cfg.out) / run_id
    # process 0 decides whether the run is already done, and everyone follows
    decision = [None]
    if rank == 0:
        decision = [finished_result(RunIndex(cfg.out), run_id, RunDir(run_path))]  # as execute_run decides
    dist.broadcast_object_list(decision, src=0)
    if decision[0] is not None:
        return RunOutcome(run_id, run_path, decision[0], skipped=True)

    scratch = Path(tempfile.mkdtemp(prefix=f"kdlens-ddp-rank{rank}-")) if rank else None

    def body(run_dir: RunDir) -> dict[str, Any]:
        if rank == 0:
            for split_name, idx in data.splits.items():
                run_dir.save_split(split_name, idx)
        synced = global_batch_norm(model, device).to(device)
        ddp = PlainStateDDP(synced, device_ids=[device.index] if device.type == "cuda" else None)
        source = data.batch_source(data.train_indices, cfg.batch_size, device)
        loop = DataParallelSupervisedLoop(ShareOfBatches(source, rank, world), world, cfg.label_smoothing)
        trainer = Trainer(
            ddp, loop, cfg.optim, cfg.epochs,
            eval_set=data.eval_set(device) if cfg.eval_split == "test" else data.val_set(), run_dir=run_dir,
            seed=cfg.seed, device=device, bf16=cfg.bf16, channels_last=cfg.channels_last, eval_every=cfg.eval_every,
            progress=progress and rank == 0, description=f"{cfg.model.name} on {cfg.data.name} (DDP × {world})",
        )
        metrics = trainer.fit(resume=resume).metrics()
        metrics["ddp_world_size"] = world
        metrics["ddp_backend"] = dist.get_backend()
        return metrics

    try:
        if rank == 0:
            outcome = execute_run("train", identity, cfg.model_dump(), cfg.out, name, resume, body)
        else:
            assert scratch is not None
            mine = RunDir(scratch)
            if resume and RunDir(run_path).last_checkpoint.exists():
                mine.checkpoint_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(RunDir(run_path).last_checkpoint, mine.last_checkpoint)
            metrics = body(mine)
            outcome = RunOutcome(run_id, run_path, metrics)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    result = [outcome.metrics if rank == 0 else None]
    dist.broadcast_object_list(result, src=0)
    return RunOutcome(run_id, run_path, result[0])


def main(argv: list[str] | None = None) -> int:
    """``torchrun … -m kdlens.train.ddp [CONFIG.yaml] [key=value …] [--resume] [--quiet]``"""
    args = list(sys.argv[1:] if argv is None else argv)
    resume = "--resume" in args
    quiet = "--quiet" in args
    args = [a for a in args if a not in ("--resume", "--quiet")]
    path = args[0] if args and "=" not in args[0] else None
    overrides = args[1:] if path else args
    try:
        cfg = load_config(TrainConfig, path, overrides)
        outcome = run_training_ddp(cfg, resume=resume, progress=not quiet)
    except KdlensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if int(os.environ.get("RANK", 0)) == 0 and outcome is not None:
        print(outcome.summary())
    return 0


if __name__ == "__main__":  # pragma: no cover - torchrun entry
    exit_process(main())  # everything is written and the process group is gone
