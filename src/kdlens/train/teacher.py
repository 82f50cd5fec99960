"""Load a trained teacher from a run directory or a checkpoint file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from kdlens.config import DistillConfig
from kdlens.data import Dataset
from kdlens.errors import KdlensError
from kdlens.models.weights import extract_state_dict, load_state_checked
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


def load_teacher(
    ref: str | None,
    data: Dataset,
    model_name: str | None = None,
    seed: int = 0,
    which: str = "last",
    weights: str | None = None,
    kwargs: dict | None = None,
) -> LoadedTeacher:
    """A frozen teacher from a run directory, a checkpoint file (``model_name`` names its
    architecture), or a model reference ``model_name`` with a ``weights`` file trained elsewhere."""
    if weights is not None:
        if model_name is None:
            raise KdlensError("a teacher weights file needs the teacher's model reference (--teacher-model REF)")
        ckpt, name, run_kwargs = Path(weights), model_name, {}
        if not ckpt.is_file():
            raise KdlensError(f"teacher weights file {weights!r} does not exist")
    elif ref is None:
        raise KdlensError("give a teacher: a run directory, or --teacher-model REF --weights PATH")
    else:
        ckpt, run_model, run_kwargs = resolve_checkpoint(ref, which)
        name = model_name or run_model
    if name is None:
        raise KdlensError(f"teacher checkpoint {ref!r} is a bare file: also give its architecture with --teacher-model REF "
                          "(teacher.model=REF in YAML)")
    model = model_for_data(name, data, seed, **{**run_kwargs, **(kwargs or {})})
    state = extract_state_dict(safe_torch_load(ckpt), str(ckpt))
    check_class_count(model, state, data, name)
    try:
        load_state_checked(model, state, f"teacher {name} from {ckpt}")
    except KdlensError as exc:
        trained_on = RunDir(ref).read_config().get("data", {}).get("name") if ref and Path(ref).is_dir() else None
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


def init_from(model: nn.Module, ref: str, data: Dataset, log: bool = True) -> list[str]:
    """Initialise ``model`` in place from a run directory or checkpoint (fine-tuning).

    A checkpoint trained for another class count (e.g. a teacher pre-trained elsewhere, Lee &
    Wallraven's teacher with outside knowledge) initialises everything but the classifier
    head — the last ``nn.Linear`` — which keeps its fresh initialisation; this is said, and
    the replaced keys are returned.  Any other mismatch is an error naming the keys."""
    ckpt, _, _ = resolve_checkpoint(ref)
    state = dict(extract_state_dict(safe_torch_load(ckpt), str(ckpt)))
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    head = linears[-1] if linears else None
    replaced: list[str] = []
    if head is not None and f"{head}.weight" in state and state[f"{head}.weight"].shape[0] != data.num_classes:
        own = model.state_dict()
        replaced = [k for k in (f"{head}.weight", f"{head}.bias") if k in state]
        trained_for = state[f"{head}.weight"].shape[0]
        for key in replaced:
            state[key] = own[key]  # the fresh head: its own initialisation
        if log:
            print(f"init from {ckpt}: trained for {trained_for} classes, {data.name!r} has {data.num_classes}: "
                  f"classifier head {head!r} replaced (fresh), all other weights loaded")
    load_state_checked(model, state, f"init weights from {ckpt}")
    return replaced


def teacher_training_data(ref: str | None) -> dict | None:
    """The ``data`` section of the teacher run's config (``None`` for a checkpoint file or weights)."""
    if ref is None or not (Path(ref) / "config.yaml").is_file():
        return None
    return RunDir(ref).read_config().get("data")


def align_with_teacher_data(cfg: DistillConfig) -> DistillConfig:
    """The transfer set defaults to the teacher's dataset; a different one is an error unless
    ``allow_dataset_mismatch`` (a teacher of other data silently gave meaningless students)."""
    trained = teacher_training_data(cfg.teacher.run)
    if trained is None or not trained.get("name"):
        return cfg
    if "name" not in cfg.data.model_fields_set:
        update = {"name": trained["name"], "root": cfg.data.root if "root" in cfg.data.model_fields_set else trained.get("root")}
        return cfg.model_copy(update={"data": cfg.data.model_copy(update=update)})
    if cfg.data.name != trained["name"] and not cfg.allow_dataset_mismatch:
        raise KdlensError(
            f"teacher {cfg.teacher.run!r} was trained on {trained['name']!r} but the transfer set is "
            f"{cfg.data.name!r}; leave out --dataset to distill on the teacher's data, or add "
            "--allow-dataset-mismatch (allow_dataset_mismatch=true) if this is intended"
        )
    return cfg

