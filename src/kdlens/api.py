"""The Python API: train, distill and reload runs with your own models and data.

>>> import kdlens
>>> result = kdlens.distill(teacher, student, train_set, test=test_set, method="kd", epochs=5)
>>> result.best_acc, result.run_dir, result.student          # doctest: +SKIP

``teacher`` / ``student`` / ``model``: an ``nn.Module`` instance, a model reference
(``resnet20``, ``torchvision:resnet18``, ``timm:…``, ``pkg.mod:Class``) or a run directory.
``train`` / ``test``: a torch ``Dataset`` or ``DataLoader`` of ``(image tensor, class)``
(their own transforms are honoured), a kdlens in-memory Dataset, or a dataset reference
(``digits``, ``folder:DIR``, ``python:pkg.mod:make``).  With a Dataset and no ``test``,
10% of ``train`` (stratified) is held out for evaluation.

Other settings are config keys: ``lr=0.1``, ``batch_size=128``, ``T=4``, ``alpha=0.9`` or
whole sections (``optim={"schedule": "cosine"}``, ``data={"crop_padding": 4}``); the
resolved config of every run is in its directory.  Runs are recorded in ``out`` (default
``runs``) like CLI runs, and a finished run with the same identity is reused (``skipped``).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from kdlens.config import DistillConfig, TrainConfig, validate
from kdlens.data.reference import DataPair, data_pair_from_objects
from kdlens.errors import KdlensError
from kdlens.models.reference import build_model
from kdlens.models.weights import load_weights
from kdlens.store import RunDir

#: short keyword → dotted config key
ALIASES = {
    "lr": "optim.lr", "momentum": "optim.momentum", "weight_decay": "optim.weight_decay",
    "schedule": "optim.schedule", "T": "loss.T", "dataset_root": "data.root", "budget": "data.budget",
}


@dataclass
class RunResult:
    """What a run produced: its directory, accuracies, per-epoch metrics and the trained model."""

    run_dir: Path
    run_id: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    student: nn.Module
    skipped: bool = False

    @property
    def model(self) -> nn.Module:
        return self.student

    @property
    def final_acc(self) -> float | None:
        return self.metrics.get("final_acc")

    @property
    def best_acc(self) -> float | None:
        return self.metrics.get("best_acc")

    @property
    def final_acc5(self) -> float | None:
        return self.metrics.get("final_acc5")


@dataclass
class LoadedRun:
    """A finished (or interrupted) run: the model with its weights, the resolved config, metrics."""

    model: nn.Module
    config: dict[str, Any]
    metrics: dict[str, Any] | None
    history: list[dict[str, Any]]
    run_dir: Path
    checkpoint: Path = field(default_factory=Path)


def object_reference(model: nn.Module) -> str:
    """A model instance's class as a reference: ``pkg.mod:Class`` when importable, else
    ``object:Class`` (a class defined in ``__main__`` or inside a function, or a library
    container such as ``nn.Sequential`` whose layers its constructor call held)."""
    cls = type(model)
    library = cls.__module__.split(".")[0] in ("torch", "torchvision", "timm")  # e.g. nn.Sequential(...)
    if not library and "<locals>" not in cls.__qualname__ and _importable(cls.__module__):
        return f"{cls.__module__}:{cls.__qualname__}"
    return f"object:{cls.__qualname__}"


def _importable(module: str) -> bool:
    if module == "__main__":
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _settings(overrides: dict[str, Any]) -> dict[str, Any]:
    """Keyword overrides → a nested config mapping (``lr`` → ``optim.lr``; dicts merge)."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        path = ALIASES.get(key, key).split(".")
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):
            node[path[-1]].update(value)
        else:
            node[path[-1]] = value
    return nested


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _data(train: Any, test: Any, settings: dict[str, Any]) -> tuple[dict[str, Any], DataPair | None]:
    """The data section of the config and, for Python objects, the resolved pair."""
    data_cfg = dict(settings.pop("data", {}))
    if isinstance(train, (str, Path)):
        if test is not None:
            raise KdlensError("train is a dataset reference (it names both splits): leave test=None")
        data_cfg["name"] = str(train)
        return data_cfg, None
    from torch.utils.data import DataLoader

    if isinstance(train, DataLoader):
        settings.setdefault("batch_size", train.batch_size or 64)
        data_cfg.setdefault("num_workers", train.num_workers)
    held_out = test is None
    pair = data_pair_from_objects(train, test)  # test None: evaluated on a held-out part of train
    data_cfg["name"] = pair.train.name
    if held_out:
        data_cfg.setdefault("val_fraction", 0.1)
        settings.setdefault("eval_split", "val")
    return data_cfg, pair


def _model_section(model: Any, role: str) -> tuple[dict[str, Any], nn.Module | None]:
    """``model`` config section and the instance (if one was given)."""
    if isinstance(model, nn.Module):
        return {"name": object_reference(model)}, model
    if isinstance(model, (str, Path)):
        path = Path(model)
        if (path / "config.yaml").is_file():  # a run directory
            cfg = RunDir(path).read_config()
            return {"name": cfg["model"]["name"], "kwargs": cfg["model"].get("kwargs", {}), "init": str(path)}, None
        return {"name": str(model)}, None
    raise KdlensError(f"{role} must be an nn.Module, a model reference or a run directory; got {type(model).__name__}")


def _history(run_dir: Path) -> list[dict[str, Any]]:
    return RunDir(run_dir).read_metrics()


def _trained(model: nn.Module | None, run_dir: Path) -> nn.Module:
    """The final weights of the run in ``run_dir``, in ``model`` (or rebuilt from the run)."""
    if model is None:
        return load_run(run_dir, which="last").model
    load_weights(model, RunDir(run_dir).last_checkpoint, "trained model")
    return model


def train(
    model: Any,
    train: Any,
    *,
    test: Any = None,
    epochs: int = 30,
    out: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
    restart: bool = False,
    **overrides: Any,
) -> RunResult:
    """Supervised training of ``model`` on ``train``, evaluated on ``test`` (see the module docstring).

    A run with a checkpoint (an interrupted call) continues with ``resume=True`` and is
    discarded with ``restart=True``; with neither it is a :class:`KdlensError`."""
    from kdlens.train.semi_run import run_train_config

    settings = _settings(overrides)
    data_cfg, pair = _data(train, test, settings)
    model_cfg, instance = _model_section(model, "model")
    cfg = validate(TrainConfig, _merge({"model": model_cfg, "data": data_cfg, "epochs": epochs,
                                        "out": str(out or "runs")}, settings), "kdlens.train arguments")
    outcome = run_train_config(cfg, resume=resume, progress=progress, restart=restart, resume_strict=True,
                           model=instance, pair=pair)
    return RunResult(outcome.path, outcome.run_id, outcome.metrics, _history(outcome.path),
                     _trained(instance, outcome.path), outcome.skipped)


def distill(
    teacher: Any,
    student: Any,
    train: Any,
    *,
    test: Any = None,
    method: str = "kd",
    hints: str | list[int] | list[str] | None = None,
    epochs: int = 30,
    out: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
    restart: bool = False,
    **overrides: Any,
) -> RunResult:
    """Distill ``student`` from ``teacher`` on ``train`` with ``method`` (``kd``, ``at+kd``, …).
    ``resume`` / ``restart``: as for :func:`train`.

    ``hints``: teacher layers for hint losses, by module name (``["layer2", "layer3"]``, any
    model), 1-based sub-block index, ``"conventional"`` or ``"auto"`` (PURSUhInT search);
    student layers default to the same relative depth (``student_hints=`` to name them).
    """
    from kdlens.train.distill_run import run_distillation
    from kdlens.train.teacher import LoadedTeacher

    settings = _settings(overrides)
    data_cfg, pair = _data(train, test, settings)
    model_cfg, instance = _model_section(student, "student")
    loaded: LoadedTeacher | None = None
    if isinstance(teacher, nn.Module):
        frozen = teacher.eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
        loaded = LoadedTeacher(frozen, object_reference(teacher), Path())
        teacher_cfg: dict[str, Any] = {"model": loaded.name, "weights": "<in-memory module>"}
    elif isinstance(teacher, (str, Path)):
        teacher_cfg = {"run": str(teacher)}
    else:
        raise KdlensError(f"teacher must be an nn.Module or a run directory / checkpoint; got {type(teacher).__name__}")
    teacher_cfg.update(settings.pop("teacher", {}))
    body = {"model": model_cfg, "data": data_cfg, "epochs": epochs, "out": str(out or "runs"),
            "teacher": teacher_cfg, "method": method}
    if hints is not None:
        body["hints"] = hints
    cfg = validate(DistillConfig, _merge(body, settings), "kdlens.distill arguments")
    from kdlens.explain.hint_search import auto_hint_layers

    outcome = run_distillation(cfg, resume=resume, progress=progress, hint_search=auto_hint_layers,
                               restart=restart, resume_strict=True, student=instance, teacher=loaded, pair=pair)
    return RunResult(outcome.path, outcome.run_id, outcome.metrics, _history(outcome.path),
                     _trained(instance, outcome.path), outcome.skipped)


def load_run(path: str | Path, model: nn.Module | None = None, which: str = "best") -> LoadedRun:
    """The run in ``path``: its model with the ``which`` checkpoint's weights (``best`` falls back
    to ``last``), the resolved config, ``result.json`` metrics and per-epoch history.

    The model is rebuilt from the run's model reference; a run of a model given as an object
    of a class kdlens cannot import (``object:…``) needs ``model=`` (an instance to load into).
    """
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise KdlensError(f"run directory {str(path)!r} does not exist (`kdlens runs` lists runs)")
    config = run.read_config()
    checkpoint = run.checkpoint_dir / f"{which}.pt"
    if not checkpoint.exists():
        checkpoint = run.last_checkpoint
    if not checkpoint.exists():
        raise KdlensError(f"run {str(path)!r} has no checkpoint yet (checkpoints/{which}.pt or last.pt)")
    if model is None:
        model = _rebuild(config, run.path)
    load_weights(model, checkpoint, f"run {run.path.name}")
    return LoadedRun(model.eval(), config, run.read_result(), run.read_metrics(), run.path, checkpoint)


def _rebuild(config: dict[str, Any], run_path: Path) -> nn.Module:
    """The run's architecture from its ``model.json`` (reference, kwargs, classes, input shape)."""
    ref = config["model"]["name"]
    if ref.startswith("object:"):
        raise KdlensError(
            f"run {run_path.name} trained a {ref[7:]} defined in a script or function: kdlens cannot "
            "rebuild it; pass load_run(path, model=YourModel(...))"
        )
    card_path = run_path / "model.json"
    if not card_path.exists():
        raise KdlensError(f"run {run_path.name} has no model.json (made by an older kdlens): pass model=…")
    card = json.loads(card_path.read_text())
    c, h, _ = card["image_shape"]
    return build_model(ref, num_classes=card["num_classes"], in_channels=c, input_size=h, kwargs=card["kwargs"])


# -- explain, on any model and any dataset ----------------------------------------------------

def find_hint_points(model: nn.Module, data: Any, k: int = 3, n: int = 1000, metric: str = "cka",
                     seed: int = 0, **options: Any):
    """PURSUhInT hint points (Keser et al. 2022) of ``model``: layer representations on ``n``
    samples of ``data`` (any dataset, see :func:`kdlens.data.torch_dataset.materialize`),
    similarity ``metric`` between layers, k-means over layers, cluster centres.  ``options`` go
    to :func:`kdlens.explain.hint_search.find_hint_points` (``rule``, ``form``, ``layers``, …)."""
    from kdlens.data.torch_dataset import materialize
    from kdlens.explain.hint_search import dataset_prepare
    from kdlens.explain.hint_search import find_hint_points as search

    ds = materialize(data, n=n, seed=seed)
    return search(model.eval(), ds.images, dataset_prepare(ds), k=k, metric=metric, n=len(ds), seed=seed, **options)


def embed_points(model: nn.Module, data: Any, points: str | None = None, method: str = "ivis",
                 n: int = 1000, seed: int = 0, **params: Any) -> dict[str, Any]:
    """Lee & Wallraven 2021: activations of ``model`` at extraction points A–E (``points``, default
    all the model has: A–C are the last blocks of its last three resolution stages, D the
    penultimate layer, E the logits) on ``n`` samples of ``data``, each embedded in 2-D with ``method`` (ivis, tsne, umap, pca).  Returns
    ``{"labels": N, "layers": {letter: layer}, "embeddings": {letter: N×2}}``."""
    from kdlens.data.torch_dataset import materialize
    from kdlens.explain.embed import embed, point_activations

    ds = materialize(data, n=n, seed=seed)
    acts = point_activations(model.eval(), ds, points=points, seed=seed)
    embeddings = {p: embed(x, method=method, seed=seed, **params) for p, x in acts.features.items()}
    return {"labels": acts.labels, "layers": acts.layers, "embeddings": embeddings}


def soft_label_entropy(model: nn.Module, data: Any, temperatures: tuple[float, ...] = (1, 2, 4, 8, 16),
                       n: int | None = None, seed: int = 0) -> dict[float, float]:
    """Vats 2021 §4.3: mean entropy (bits) of ``model``'s soft labels softmax(z/T) on ``data``
    at each temperature ``T``."""
    from kdlens.data.torch_dataset import materialize
    from kdlens.explain.softlabels.entropy import soft_label_entropy as entropy
    from kdlens.explain.softlabels.experiments import teacher_logits

    logits = teacher_logits(model.eval(), materialize(data, n=n, seed=seed))
    return {float(T): float(entropy(logits, T=T, base=2).mean()) for T in temperatures}


__all__ = ["LoadedRun", "RunResult", "distill", "embed_points", "find_hint_points", "load_run", "soft_label_entropy", "train"]
