"""Teacher-output cache: the teacher's logits (and requested features) computed once.

When the transfer set has no random augmentation, or only horizontal flips, a frozen
teacher's outputs for an example are a fixed function of (example, flipped?).  They are
computed once for every image of the split — a flipped copy as a second array when
flips are on — and reused exactly by every student of a sweep (DESIGN: teacher forward
passes dominate KD cost for small students).

Key: SHA-256 of (teacher weights hash, dataset, split, input transform, feature names).
Files: ``ROOT/KEY/{logits,logits_flip,feat_i,...}.npy`` memory-mapped for reading, and
``meta.json`` with each file's SHA-256.  A cache is never visible half-built: it is written
under a temporary name (``ROOT/.KEY.building-HOST-PID-…``) and renamed to ``ROOT/KEY`` in one
step, so a reader (another student, another runner) sees either no cache or a whole one.  A
builder that loses a race to another keeps the other's cache; a directory without a valid
``meta.json`` (left by an older kdlens) is moved aside, never deleted under a reader.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdlens.store import atomic_write_bytes, atomic_write_text


#: building holds every output about three times at its peak (the batches, their concatenation
#: and the serialised buffer); ``cache=auto`` builds only when that fits in half the free memory
BUILD_COPIES = 3


def cache_size_bytes(n_images: int, floats_per_image: int, flips: bool) -> int:
    """Bytes of the cache's arrays: images × (logits + tapped features) × 4 (float32), × 2 with
    flipped copies."""
    return int(n_images) * int(floats_per_image) * 4 * (2 if flips else 1)


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` (Linux), else free physical pages; None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fits_in_memory(size_bytes: int, available: int | None, share: float = 0.5) -> bool:
    """Whether building a cache of ``size_bytes`` (peak ``BUILD_COPIES`` × that) stays within
    ``share`` of ``available`` memory; unknown memory counts as fitting."""
    return available is None or BUILD_COPIES * size_bytes <= share * available


def weights_hash(model: nn.Module) -> str:
    """SHA-256 over a module's state (names, shapes, dtypes and raw bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TeacherOutputCache:
    """Cached teacher outputs for one (teacher, dataset split, transform)."""

    def __init__(
        self,
        root: str | Path,
        teacher_hash: str,
        dataset: str,
        split: str,
        transform: str,
        flips: bool = False,
        feature_names: Sequence[str] = (),
    ) -> None:
        #: the requested names, in order (a name may repeat: several hint terms at one layer)
        self.feature_names = list(feature_names)
        #: each name once: what is computed and stored (``feat{i}`` = ``stored_names[i]``)
        self.stored_names = list(dict.fromkeys(self.feature_names))
        self.key_parts = {
            "teacher": teacher_hash, "dataset": dataset, "split": split,
            "transform": transform, "flips": bool(flips), "features": self.stored_names,
        }
        key = hashlib.sha256(json.dumps(self.key_parts, sort_keys=True).encode()).hexdigest()[:20]
        self.dir = Path(root) / key
        self.flips = bool(flips)
        self.hits = 0
        self.misses = 0
        self._arrays: dict[str, np.ndarray] = {}

    # -- validity ---------------------------------------------------------------
    def _array_names(self) -> list[str]:
        names = ["logits"] + [f"feat{i}" for i in range(len(self.stored_names))]
        return names + ([f"{n}_flip" for n in names] if self.flips else [])

    def is_valid(self) -> bool:
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            return False
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            return False
        if meta.get("key") != self.key_parts:
            return False
        for name in self._array_names():
            path = self.dir / f"{name}.npy"
            if not path.exists() or _file_sha256(path) != meta["sha256"].get(name):
                return False
        return True

    # -- building ---------------------------------------------------------------
    @torch.no_grad()
    def build(
        self,
        teacher: nn.Module,
        images: Any,
        prepare: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
        batch_size: int = 500,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Run the teacher over every image (and its mirror) and write the arrays.

        ``images``: an N×… tensor prepared batch by batch with ``prepare``, or an evaluation
        set of the whole split (``batches(batch_size, device)`` yielding prepared inputs in
        index order, e.g. a streamed image folder; ``prepare`` is then unused)."""
        from kdlens.models import FeatureTaps

        was_training = teacher.training
        teacher.eval()
        outputs: dict[str, list[np.ndarray]] = {n: [] for n in self._array_names()}
        variants = [("", False)] + ([("_flip", True)] if self.flips else [])
        try:
            if isinstance(images, torch.Tensor):
                chunks = (prepare(images[s : s + batch_size].to(device)) for s in range(0, images.shape[0], batch_size))
            else:
                chunks = images.batches(batch_size, device)
            for x in chunks:
                for suffix, flip in variants:
                    xin = torch.flip(x, dims=[-1]) if flip else x
                    with FeatureTaps(teacher, self.stored_names) as taps:
                        logits = teacher(xin)
                    outputs["logits" + suffix].append(logits.float().cpu().numpy())
                    for i, name in enumerate(self.stored_names):
                        outputs[f"feat{i}{suffix}"].append(taps[name].float().cpu().numpy())
                if progress is not None:
                    progress(x.shape[0])
        finally:
            teacher.train(was_training)
        self._publish(outputs)

    def _publish(self, outputs: dict[str, list[np.ndarray]]) -> None:
        """Write the arrays and ``meta.json`` under a temporary name, then rename it to the
        cache's name in one step (see the module docstring)."""
        root = self.dir.parent
        root.mkdir(parents=True, exist_ok=True)
        self._sweep_dead_builders()
        tmp = root / f".{self.dir.name}.building-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            sha = {}
            for name, chunks in outputs.items():
                buffer = io.BytesIO()
                np.save(buffer, np.concatenate(chunks), allow_pickle=False)
                atomic_write_bytes(tmp / f"{name}.npy", buffer.getvalue())
                sha[name] = hashlib.sha256(buffer.getvalue()).hexdigest()
            atomic_write_text(tmp / "meta.json", json.dumps({"key": self.key_parts, "sha256": sha}, indent=1))
            if self.dir.exists() and not self.is_valid():  # an older kdlens's half-built directory
                aside = root / f".{self.dir.name}.invalid-{uuid.uuid4().hex[:8]}"
                try:
                    os.rename(self.dir, aside)
                    shutil.rmtree(aside, ignore_errors=True)
                except FileNotFoundError:
                    pass
            try:
                os.rename(tmp, self.dir)  # atomic; fails if another builder got there first
            except OSError:
                if not self.is_valid():
                    raise
                # another builder published the same outputs first: keep theirs
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._arrays.clear()

    def _sweep_dead_builders(self) -> None:
        """Remove temporary directories of builders on this host whose process is gone."""
        host = socket.gethostname()
        for path in self.dir.parent.glob(f".{self.dir.name}.building-*"):
            rest = path.name[len(f".{self.dir.name}.building-"):]
            try:
                b_host, b_pid, _ = rest.rsplit("-", 2)
                if b_host != host:
                    continue
                os.kill(int(b_pid), 0)
            except ProcessLookupError:
                shutil.rmtree(path, ignore_errors=True)
            except (ValueError, PermissionError, OSError):
                continue

    def ensure(self, teacher: nn.Module, images: Any, prepare, device, **kw: Any) -> bool:
        """Build unless a valid cache exists; returns True when it was already there."""
        if self.is_valid():
            return True
        self.build(teacher, images, prepare, device, **kw)
        return False

    # -- reading ----------------------------------------------------------------
    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.dir / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        return self._arrays[name]

    def lookup(
        self, idx: torch.Tensor, flip: torch.Tensor | None, device: torch.device
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Teacher logits and features for dataset indices ``idx`` (mirrored where ``flip``);
        the features in :attr:`feature_names` order, a repeated name as the same tensor."""
        idx_np = idx.cpu().numpy()
        names = ["logits"] + [f"feat{i}" for i in range(len(self.stored_names))]
        out = []
        for name in names:
            values = np.array(self._array(name)[idx_np])
            if flip is not None and bool(flip.any()):
                if not self.flips:
                    raise RuntimeError("cache built without flips was asked for a flipped example")
                f = flip.cpu().numpy()
                values[f] = self._array(f"{name}_flip")[idx_np[f]]
            out.append(torch.from_numpy(values).to(device))
        self.hits += len(idx_np)
        feats = [out[1 + self.stored_names.index(n)] for n in self.feature_names]
        return out[0], feats
