"""Teacher-output cache: the teacher's logits (and requested features) computed once.

When the transfer set has no random augmentation, or only horizontal flips, a frozen
teacher's outputs for an example are a fixed function of (example, flipped?).  They are
computed once for every image of the split — a flipped copy as a second array when
flips are on — and reused exactly by every student of a sweep (DESIGN: teacher forward
passes dominate KD cost for small students).

Key: SHA-256 of (teacher weights hash, dataset, split, input transform, feature names).
Files: ``ROOT/KEY/{logits,logits_flip,feat_i,...}.npy`` memory-mapped for reading, and
``meta.json`` with each file's SHA-256 written last: a directory without a valid
``meta.json`` (a kill while building) is rebuilt, never read.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdlens.store import atomic_write_bytes, atomic_write_text


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
        self.key_parts = {
            "teacher": teacher_hash, "dataset": dataset, "split": split,
            "transform": transform, "flips": bool(flips), "features": list(feature_names),
        }
        key = hashlib.sha256(json.dumps(self.key_parts, sort_keys=True).encode()).hexdigest()[:20]
        self.dir = Path(root) / key
        self.flips = bool(flips)
        self.feature_names = list(feature_names)
        self.hits = 0
        self.misses = 0
        self._arrays: dict[str, np.ndarray] = {}

    # -- validity ---------------------------------------------------------------
    def _array_names(self) -> list[str]:
        names = ["logits"] + [f"feat{i}" for i in range(len(self.feature_names))]
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

        if self.dir.exists():
            shutil.rmtree(self.dir)  # stale or half-written: rebuild from scratch
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
                    with FeatureTaps(teacher, self.feature_names) as taps:
                        logits = teacher(xin)
                    outputs["logits" + suffix].append(logits.float().cpu().numpy())
                    for i, name in enumerate(self.feature_names):
                        outputs[f"feat{i}{suffix}"].append(taps[name].float().cpu().numpy())
                if progress is not None:
                    progress(x.shape[0])
        finally:
            teacher.train(was_training)
        sha = {}
        for name, chunks in outputs.items():
            buffer = io.BytesIO()
            np.save(buffer, np.concatenate(chunks), allow_pickle=False)
            atomic_write_bytes(self.dir / f"{name}.npy", buffer.getvalue())
            sha[name] = hashlib.sha256(buffer.getvalue()).hexdigest()
        atomic_write_text(self.dir / "meta.json", json.dumps({"key": self.key_parts, "sha256": sha}, indent=1))

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
        """Teacher logits and features for dataset indices ``idx`` (mirrored where ``flip``)."""
        idx_np = idx.cpu().numpy()
        names = ["logits"] + [f"feat{i}" for i in range(len(self.feature_names))]
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
        return out[0], out[1:]
