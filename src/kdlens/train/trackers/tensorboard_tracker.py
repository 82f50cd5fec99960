"""TensorBoard: event files in ``RUN_DIR/tensorboard/``.

Scalars are tagged ``step/<name>`` (x = global step) and ``epoch/<name>`` (x = epoch, the
numbers of metrics.jsonl's row); the config is a text table (tag ``config``).  TensorBoard has
no artifact store: an artifact is copied to ``RUN_DIR/tensorboard/artifacts/``, and a PNG is
also shown in the Images tab (tag ``artifacts/<file name>``, read with matplotlib).

The event files always agree with metrics.jsonl: when the writer opens, scalars that earlier
attempts logged past the resumed checkpoint are removed from their files (all of them when
the run starts afresh), so the record does not depend on the reader's own purging of
out-of-order steps (which the Python ``EventAccumulator`` does by tag and the Rust data
server of TensorBoard does not do).
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdlens.train.trackers.base import Tracker, flatten_params, param_text

_EVENT_FILES = "events.out.tfevents.*"


def _records(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file (u64 length, u32 crc, data, u32 crc); a torn last
    record (a writer killed mid-write) ends the file."""
    data = path.read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        end = pos + 12 + length + 4
        if end > len(data):
            break
        yield data[pos + 12 : pos + 12 + length]
        pos = end


def _kept(tag: str, step: int, epoch: int, global_step: int) -> bool:
    if tag.startswith("step/"):
        return step < global_step
    if tag.startswith("epoch/"):
        return step <= epoch
    return False  # the config text and artifact images are written again by the new attempt


def trim_event_files(log_dir: str | Path, epoch: int, global_step: int) -> int:
    """Drop, from the event files in ``log_dir``, the ``step/`` scalars at steps ≥
    ``global_step``, the ``epoch/`` scalars after ``epoch`` and every other summary; files
    left with no summary are deleted.  Returns the number of values dropped."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    dropped = 0
    for path in sorted(Path(log_dir).glob(_EVENT_FILES)):
        events, changed, summaries = [], False, 0
        for record in _records(path):
            event = Event.FromString(record)
            if event.HasField("summary"):
                keep = [v for v in event.summary.value if _kept(v.tag, event.step, epoch, global_step)]
                if len(keep) != len(event.summary.value):
                    dropped += len(event.summary.value) - len(keep)
                    changed = True
                    del event.summary.value[:]
                    event.summary.value.extend(keep)
                if not keep:
                    continue
                summaries += 1
            events.append(event)
        if not summaries:
            path.unlink()
        elif changed:
            tmp = path.with_name(f".{path.name}.tmp")
            writer = RecordWriter(open(tmp, "wb"))
            for event in events:
                writer.write(event.SerializeToString())
            writer.close()
            os.replace(tmp, path)
    return dropped


class TensorBoardTracker(Tracker):
    """TensorBoard event files in ``log_dir`` through ``torch.utils.tensorboard.SummaryWriter``,
    opened at the first metric or artifact (after :meth:`resumed`, when the run resumes)."""

    name = "tensorboard"

    def __init__(self, log_dir: str | Path) -> None:
        import torch.utils.tensorboard  # noqa: F401  (fails here, not mid-run, without tensorboard)

        self.log_dir = Path(log_dir)
        self.writer: Any = None
        self._config: str | None = None
        self._resume_at = (0, 0)

    def _open(self) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            trim_event_files(self.log_dir, *self._resume_at)
            self.writer = SummaryWriter(log_dir=str(self.log_dir))
            if self._config is not None:
                self.writer.add_text("config", self._config, 0)
        return self.writer

    def start(self, params: dict[str, Any]) -> None:
        rows = [f"| {k} | {param_text(v).replace('|', '&#124;')} |" for k, v in flatten_params(params).items()]
        self._config = "\n".join(["| parameter | value |", "|---|---|", *rows])

    def resumed(self, epoch: int, global_step: int) -> None:
        if self.writer is None:
            self._resume_at = (epoch, global_step)
        self._open()

    def log_metrics(self, metrics: dict[str, float], step: int, scope: str) -> None:
        writer = self._open()
        for key, value in metrics.items():
            writer.add_scalar(f"{scope}/{key}", value, step)
        if scope == "epoch":
            writer.flush()

    def log_artifact(self, path: str | Path) -> None:
        writer = self._open()
        path = Path(path)
        target = self.log_dir / "artifacts"
        target.mkdir(exist_ok=True)
        shutil.copy2(path, target / path.name)
        if path.suffix.lower() == ".png":
            from matplotlib.image import imread

            image = imread(path)  # H×W(×C) floats in [0, 1]
            if image.ndim == 2:
                writer.add_image(f"artifacts/{path.name}", image, 0, dataformats="HW")
            else:
                writer.add_image(f"artifacts/{path.name}", image[..., :3], 0, dataformats="HWC")
        writer.flush()

    def close(self, status: str = "FINISHED") -> None:
        if self.writer is not None:  # never opened: an earlier attempt's files stay as they are
            self.writer.close()
