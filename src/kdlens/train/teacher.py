"""Load a trained teacher from a run directory or a checkpoint file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from kdlens.data import Dataset
from kdlens.errors import KdlensError
from kdlens.store import RunDir, safe_torch_load
from kdlens.train.model_setup import model_for_data


@dataclass
class LoadedTeacher:
    model: nn.Module
    name: str
    checkpoint: Path


def resolve_checkpoint(ref: str, which: str = "last") -> tuple[Path, str | None, dict]:
    """``RUN_DIR`` (uses its ``checkpoints/{which}.pt`` and config) or ``FILE.pt``."""
    path = Path(ref)
    if path.is_dir():
        run = RunDir(path)
        ckpt = run.checkpoint_dir / f"{which}.pt"
        if not ckpt.exists():
            raise KdlensError(
                f"teacher run {ref!r} has no checkpoints/{which}.pt; is the run finished? "
                "(`kdlens runs` lists runs and their status)"
            )
        config = run.read_config()
        return ckpt, config["model"]["name"], config["model"].get("kwargs", {})
    if path.is_file():
        return path, None, {}
    raise KdlensError(f"teacher {ref!r} is neither a run directory nor a checkpoint file")


def load_teacher(ref: str, data: Dataset, model_name: str | None = None, seed: int = 0, which: str = "last") -> LoadedTeacher:
    ckpt, run_model, kwargs = resolve_checkpoint(ref, which)
    name = model_name or run_model
    if name is None:
        raise KdlensError(f"teacher checkpoint {ref!r} is a bare file: also give the teacher model name (teacher.model=…)")
    model = model_for_data(name, data, seed, **kwargs)
    state = safe_torch_load(ckpt)
    state = state.get("model", state) if isinstance(state, dict) else state
    check_class_count(model, state, data, name)
    try:
        load_state_checked(model, state, f"teacher {name} from {ckpt}")
    except KdlensError as exc:
        trained_on = RunDir(ref).read_config().get("data", {}).get("name") if Path(ref).is_dir() else None
        if trained_on and trained_on != data.name:
            raise KdlensError(f"{exc}\n  the teacher was trained on {trained_on!r} but the transfer set is "
                              f"{data.name!r} (other input size or channels); distill on {trained_on!r} or "
                              f"train a teacher on {data.name!r}") from None
        raise
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return LoadedTeacher(model, name, ckpt)


def check_class_count(model: nn.Module, state: dict, data: Dataset, name: str) -> None:
    """A teacher trained for K classes cannot teach a dataset with another class count."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    key = f"{linears[-1]}.weight" if linears else None
    if key in state and state[key].shape[0] != data.num_classes:
        raise KdlensError(
            f"teacher {name} was trained for {state[key].shape[0]} classes but dataset "
            f"{data.name!r} has {data.num_classes}; teacher and student must share the classes"
        )


def load_state_checked(model: nn.Module, state: dict, what: str) -> None:
    """``load_state_dict`` with a readable report of missing / unexpected / mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        lines = [f"{what}: checkpoint does not fit the architecture"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}{' …' if len(unexpected) > 8 else ''}")
        if shape:
            lines.append("  shape mismatches: " + "; ".join(shape[:6]))
        raise KdlensError("\n".join(lines))
    model.load_state_dict(state)


def init_from(model: nn.Module, ref: str, data: Dataset) -> None:
    """Initialise ``model`` in place from a run directory or checkpoint (fine-tuning)."""
    ckpt, _, _ = resolve_checkpoint(ref)
    state = safe_torch_load(ckpt)
    state = state.get("model", state) if isinstance(state, dict) else state
    check_class_count(model, state, data, type(model).__name__)
    load_state_checked(model, state, f"init weights from {ckpt}")
