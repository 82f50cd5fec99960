"""One recorded distillation run: teacher + student + objective + cache → Trainer."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from kdlens.config import DistillConfig, OptimConfig
from kdlens.distill import build_objective, create_loss
from kdlens.distill.cache import BUILD_COPIES, TeacherOutputCache, available_memory_bytes, cache_size_bytes, fits_in_memory, weights_hash
from kdlens.errors import KdlensError
from kdlens.models import extract_features
from kdlens.store import RunDir
from kdlens.data.reference import DataPair
from kdlens.data.torch_dataset import materialize
from kdlens.models.fingerprint import architecture_fingerprint
from kdlens.train.data_setup import PreparedData, prepare_data
from kdlens.train.distill_loop import CachedTeacher, DistillLoop, HintPretrainLoop, LimitedLabelLoop, LiveTeacher
from kdlens.train.hint_layers import (
    PENULTIMATE_LOSSES, default_term_layers, match_student_layers, parse_hint_spec, resolve_layers,
)
from kdlens.train.model_setup import check_output_classes
from kdlens.train.run import (
    RunOutcome, build_student, execute_run, log_precision, run_identity, save_model_card, short_name,
)
from kdlens.train.run_trackers import run_trackers
from kdlens.train.teacher import LoadedTeacher, align_with_teacher_data, load_teacher
from kdlens.train.trackers import check_trackers
from kdlens.train.progress import TrainingProgress
from kdlens.train.trainer import Trainer, resolve_device


def _cache_for(cfg: DistillConfig, data: PreparedData, teacher_hash: str, features: list[str],
               floats_per_image: int = 0, available: int | None = -1):
    """The teacher-output cache for this run, or None (live teacher). ``cache=auto`` also falls
    back to the live teacher when the cache would not fit in memory while it is built (e.g. AFD
    over all 27 blocks of a resnet56 on 60,000 images: ~47 GB); ``cache=on`` then stops with
    the size. ``available``: free memory in bytes (-1: read it; None: unknown).

    ``cache=auto`` also uses the live teacher when the cache does not exist yet and building it
    takes more teacher forward passes than this run would make live
    (:func:`teacher_forwards`): a cache covers the whole training split (and its mirror
    images), so a run that sees a small part of it — 10,000 unlabeled images of a limited-label
    fold — would pay 2× its own teacher cost to build it (4× with mirror images)."""
    crop = data.augment.padding > 0
    user_transforms = data.streamed and not data.train.raw  # may be random: outputs not fixed
    if cfg.cache == "off" or (cfg.cache == "auto" and (crop or user_transforms)):
        return None
    size = cache_size_bytes(len(data.train), floats_per_image, data.augment.hflip)
    free = available_memory_bytes() if available == -1 else available
    if not fits_in_memory(size, free):
        if cfg.cache == "auto":
            return None
        raise KdlensError(
            f"cache=on: the teacher-output cache would hold {size / 2**30:.1f} GiB ({len(features)} tapped "
            f"layers + logits for {len(data.train)} images{', and their mirror images' if data.augment.hflip else ''}) "
            f"and needs about {BUILD_COPIES}× that while it is built, more than half of the "
            f"{free / 2**30:.1f} GiB of free memory; use cache=auto or cache=off (a live teacher)"
        )
    if crop:
        raise KdlensError(
            "cache=on needs a transfer set without random crops (teacher outputs would change "
            "every epoch); set data.crop_padding=0 or cache=auto/off"
        )
    if user_transforms:
        raise KdlensError(
            "cache=on: the training Dataset applies its own transforms, which kdlens cannot tell "
            "to be deterministic; use cache=off (or return uint8 images and let kdlens augment)"
        )
    transform = f"normalize(mean={data.train.mean}, std={data.train.std})"
    dataset = cfg.data.name if data.fingerprint is None else f"{cfg.data.name}#{data.fingerprint}"
    cache = TeacherOutputCache(
        f"{cfg.out}/cache/teacher-outputs", teacher_hash, dataset, "train", transform,
        flips=data.augment.hflip, feature_names=features,
    )
    if cfg.cache == "auto" and not (cache.dir / "meta.json").exists():
        build, live = teacher_forwards(cfg, data)
        if live < build:
            return None
    return cache


def teacher_forwards(cfg: DistillConfig, data: PreparedData) -> tuple[int, int]:
    """(images the teacher sees to build the cache, images it sees live in this run): the whole
    training split, twice with mirror images, vs ``epochs`` × the images of an epoch that need
    the teacher (the unlabeled pool in ``loop=limited_label``, the transfer set otherwise)."""
    build = len(data.train) * (2 if data.augment.hflip else 1)
    per_epoch = data.unlabeled_indices if cfg.loop == "limited_label" and data.unlabeled_indices is not None \
        else data.train_indices
    return build, cfg.epochs * len(per_epoch)


def run_distillation(
    cfg: DistillConfig,
    resume: bool = False,
    progress: bool = True,
    hint_search=None,
    *,
    restart: bool = False,
    resume_from: str = "last",
    resume_strict: bool = False,
    student: nn.Module | None = None,
    teacher: LoadedTeacher | None = None,
    pair: DataPair | None = None,
) -> RunOutcome:
    """Distill ``cfg.model`` from ``cfg.teacher``; ``hint_search`` resolves ``hints: auto``.

    ``student`` (an ``nn.Module``), ``teacher`` (a loaded, frozen teacher) and ``pair``
    (resolved data) replace what the config names: the Python API's path for user objects.
    ``resume``, ``restart``, ``resume_from``, ``resume_strict``: see :func:`kdlens.train.run.execute_run`."""
    resume = resume or resume_from != "last"
    if teacher is None:
        cfg = align_with_teacher_data(cfg)
    data = prepare_data(cfg.data, pair, log=progress)
    log_precision(cfg, progress)
    device = resolve_device(cfg.device)
    if teacher is None:
        teacher = load_teacher(cfg.teacher.run, data.train, cfg.teacher.model, which=cfg.teacher.checkpoint,
                               weights=cfg.teacher.weights, kwargs=cfg.teacher.kwargs)
    student = build_student(cfg, data, device, student)
    example = data.example(torch.device("cpu"))
    check_output_classes(teacher.model, example, data.train.num_classes, f"teacher {teacher.name}")
    check_trackers(cfg.log)
    overrides: dict[str, Any] = {k: v for k, v in (("gamma", cfg.gamma), ("alpha", cfg.alpha), ("beta", cfg.beta)) if v is not None}
    overrides.update(cfg.loss)
    specs = _term_specs(cfg)
    method = "+".join(spec.loss for spec in specs)
    weights = {**cfg.weights, **{spec.loss: spec.weight for spec in specs if spec.weight is not None}}
    hint_specs = [spec for spec in specs if _loss_class(spec.loss).kind == "hint"]
    layers = _resolve_term_layers(
        cfg, hint_specs, teacher.model, student, example,
        auto=lambda k: _auto_hint_layers(cfg, data, teacher.model, k, progress, hint_search),
    )
    # every hint term's layers, concatenated in method order (the objective's hint_names)
    t_layers = [name for spec in hint_specs for name in layers[spec.loss][0]]
    s_layers = [name for spec in hint_specs for name in layers[spec.loss][1]]
    if hint_specs:
        # features by name: a layer several terms use is one entry of the dict
        t_feats = extract_features(teacher.model, example, list(dict.fromkeys(t_layers)))
        s_feats = extract_features(student, example, list(dict.fromkeys(s_layers)))
        t_shapes = {spec.loss: [tuple(t_feats[n].shape[1:]) for n in layers[spec.loss][0]] for spec in hint_specs}
        s_shapes = {spec.loss: [tuple(s_feats[n].shape[1:]) for n in layers[spec.loss][1]] for spec in hint_specs}
        if "crd" in layers and not _names_crd_n_data(overrides):
            overrides.setdefault("n_data", len(data.train))
        if len(hint_specs) == 1:  # one hint term: the feature lists are its layers
            (only,) = hint_specs
            objective = build_objective(method, s_shapes[only.loss], t_shapes[only.loss], weights=weights, **overrides)
        else:
            objective = build_objective(method, s_shapes, t_shapes, weights=weights, **overrides)
    else:
        objective = build_objective(method, weights=weights, **overrides)
    if objective.hint_names != [spec.loss for spec in hint_specs]:  # the order the layers were concatenated in
        raise RuntimeError(f"hint terms {objective.hint_names} out of the layers' order {[s.loss for s in hint_specs]}")
    # the cache's floats per image: the logits and every tapped teacher layer once
    floats_per_image = data.train.num_classes + (
        sum(int(np.prod(t_feats[n].shape[1:])) for n in dict.fromkeys(t_layers)) if hint_specs else 0)
    teacher_hash = weights_hash(teacher.model)
    teacher_id = {"weights_sha256": teacher_hash, "model": teacher.name,
                  "architecture": architecture_fingerprint(teacher.model)}
    identity = {**run_identity(cfg, student, data), "teacher": teacher_id}
    if cfg.loop == "limited_label" and cfg.data.budget is None:
        raise KdlensError("loop=limited_label needs data.budget (the number of labeled examples)")

    cache = _cache_for(cfg, data, teacher_hash, t_layers, floats_per_image)  # refuses before any run directory

    def body(run_dir: RunDir) -> dict[str, Any]:
        for split_name, idx in data.splits.items():
            run_dir.save_split(split_name, idx)
        save_model_card(run_dir, cfg, student, data)
        teacher.model.to(device)
        prepare = data.eval_set(device).prepare
        teacher_outputs: Any = LiveTeacher(teacher.model, t_layers)
        notes: dict[str, Any] = {"teacher_cache": "off"}
        if cache is not None:
            with TrainingProgress("teacher outputs", len(data.train), progress and not cache.is_valid(),
                                  phase="building the teacher-output cache") as bar:
                hit = cache.ensure(teacher.model, data.train_inputs(), prepare, device, progress=bar.advance)
            teacher_outputs = CachedTeacher(cache, device)
            notes["teacher_cache"] = "hit" if hit else "built"
            if progress:
                print(f"teacher-output cache {'hit' if hit else 'miss (built)'}: {cache.dir}")
        source = data.batch_source(data.train_indices, cfg.batch_size, device)
        common = dict(
            eval_set=data.eval_set(device) if cfg.eval_split == "test" else data.val_set(), seed=cfg.seed, device=device, bf16=cfg.bf16,
            channels_last=cfg.channels_last, eval_every=cfg.eval_every, progress=progress,
        )
        if objective.requires_pretraining:
            epochs = cfg.pretrain_epochs if cfg.pretrain_epochs is not None else max(1, cfg.epochs // 4)
            if epochs:
                pre_dir = RunDir(run_dir.path / "pretrain")
                pre_dir.on_heartbeat = run_dir.on_heartbeat
                Trainer(
                    student, HintPretrainLoop(source, teacher_outputs, objective, s_layers),
                    OptimConfig(**{**cfg.optim.model_dump(), "schedule": "constant"}), epochs,
                    run_dir=pre_dir, description="hint pre-training", **{**common, "eval_set": None},
                ).fit(resume=resume)
        if cfg.loop == "limited_label":
            unlabeled = data.batch_source(data.unlabeled_indices, cfg.batch_size, device)
            kd = create_loss("kd", **{k: v for k, v in cfg.loss.items() if k == "T"})
            loop: Any = LimitedLabelLoop(source, unlabeled, teacher_outputs, kd)
        else:
            main = objective.main_phase() if objective.requires_pretraining else objective
            loop = DistillLoop(source, teacher_outputs, main, s_layers if main.needs_features else [],
                               warmup_epochs=warmup_epochs(main, cfg.epochs))
        with run_trackers(cfg, run_dir) as tracked:
            trainer = Trainer(
                student, loop, cfg.optim, cfg.epochs, run_dir=run_dir, trackers=tracked.trackers,
                description=f"{cfg.method}: {teacher.name} → {cfg.model.name}", **common,
            )
            metrics = trainer.fit(resume=resume).metrics()
            metrics.update(notes)
            metrics["data_path"] = data.path
            metrics["hint_layers"] = {"teacher": t_layers, "student": s_layers}
            if len(hint_specs) > 1:
                metrics["hint_layers"]["terms"] = {n: {"teacher": t, "student": s_} for n, (t, s_) in layers.items()}
            return tracked.finish(metrics)

    default = "-".join([cfg.method.replace("+", "_"), short_name(teacher.name), short_name(cfg.model.name),
                        short_name(cfg.data.name)])
    return execute_run("distill", identity, cfg.model_dump(), cfg.out, cfg.name or default, resume, body,
                       restart=restart, resume_from=resume_from, resume_strict=resume_strict)


#: samples read into memory for ``hints: auto`` on streamed data (PURSUhInT used 1,000–10,000)
STREAMED_SEARCH_N = 2000


#: warm-up of losses whose module does not declare ``warmup_fraction`` (yet): DKD, Zhao et
#: al. 2022 (20 of 240 epochs; mdistiller's ``min(epoch / warmup, 1)``)
WARMUP_FRACTIONS: dict[str, float] = {}  # for losses that do not declare warmup_fraction themselves


def warmup_fraction(name: str, loss: Any) -> float:
    """The fraction of the epochs over which a term's weight rises linearly: the loss class's
    ``warmup_fraction`` (DKD, ReviewKD: 20 / 240), else :data:`WARMUP_FRACTIONS`."""
    return float(getattr(loss, "warmup_fraction", 0.0) or WARMUP_FRACTIONS.get(name, 0.0))


def warmup_epochs(objective, epochs: int) -> dict[str, int]:
    """Term name → W = max(1, round(fraction · ``epochs``)) for the terms with a warm-up
    (the loop weights them by min(1, (e + 1) / W) in epoch e, 0-based)."""
    out = {}
    for term in objective.terms:
        fraction = warmup_fraction(term.name, term.loss)
        if fraction > 0:
            out[term.name] = max(1, round(fraction * epochs))
    return out


def logit_warmup_epochs(method: str, epochs: int) -> int:
    """DKD's linear warm-up: 20 of 240 epochs in Zhao et al. 2022, scaled to ``epochs``
    (the older, logit-only form of :func:`warmup_epochs`)."""
    if "dkd" not in [n.strip() for n in method.split("+")]:
        return 0
    return max(1, round(WARMUP_FRACTIONS["dkd"] * epochs))


@dataclass(frozen=True)
class TermSpec:
    """A term of the run's objective as the config states it (before layers are resolved)."""

    loss: str
    weight: float | None = None
    layers: Any = None
    student_layers: Any = None


def _term_specs(cfg: DistillConfig) -> list[TermSpec]:
    """``terms`` as given, else one term per name of ``method`` (no weights or layers)."""
    if cfg.terms:
        specs = [TermSpec(t.loss.strip(), t.weight, t.layers, t.student_layers) for t in cfg.terms]
    else:
        specs = [TermSpec(name.strip()) for name in cfg.method.split("+")]
    seen = [spec.loss for spec in specs]
    if not all(seen) or len(set(seen)) != len(seen):
        raise KdlensError(f"method {'+'.join(seen)!r} names a loss twice (or an empty name): each loss once")
    for spec in specs:
        cls = _loss_class(spec.loss)  # unknown names: close matches
        if cls.kind == "logit" and (spec.layers is not None or spec.student_layers is not None):
            raise KdlensError(f"terms: {spec.loss} is a logit loss (it reads the logits): drop its layers")
    return specs


def _loss_class(name: str):
    from kdlens.distill.losses import LOSSES

    return LOSSES.get(name)


def _names_crd_n_data(overrides: dict[str, Any]) -> bool:
    nested = overrides.get("crd")
    return "crd.n_data" in overrides or (isinstance(nested, dict) and "n_data" in nested)


def _resolve_term_layers(
    cfg: DistillConfig, hint_specs: list[TermSpec], teacher: nn.Module, student: nn.Module,
    example: torch.Tensor, auto,
) -> dict[str, tuple[list[str], list[str]]]:
    """Each hint term's (teacher layers, student layers).

    One hint term without its own ``layers`` uses ``hints`` / ``student_hints`` (as
    always).  With several, a term's ``layers`` default to :func:`default_term_layers`
    (``penultimate`` for CRD/RKD/PKT/CC, else ``hints``, with ``student_hints`` if given).
    Student layers not given follow the teacher's by relative depth; for a loss that
    does not pair layers (AFD) teacher ``all`` means student ``all``.  A spec is resolved
    once per run (``hints: auto`` searches once)."""
    resolved: dict[tuple[str, str], list[str]] = {}

    def resolve(spec, model, role, **kw) -> list[str]:
        key = (role, spec if isinstance(spec, str) else repr(list(spec)))
        if key not in resolved:
            resolved[key] = resolve_layers(spec, model, example, role, **kw)
        return list(resolved[key])

    out: dict[str, tuple[list[str], list[str]]] = {}
    for spec in hint_specs:
        cls = _loss_class(spec.loss)
        if spec.layers is not None:
            t_spec, s_spec = spec.layers, spec.student_layers
        elif len(hint_specs) == 1 or spec.loss not in PENULTIMATE_LOSSES:
            t_spec = cfg.hints
            s_spec = spec.student_layers if spec.student_layers is not None else cfg.student_hints
        else:
            t_spec, s_spec = default_term_layers(spec.loss, cfg.hints), spec.student_layers
        t_layers = resolve(t_spec, teacher, "teacher", auto=auto)
        if s_spec is not None:
            s_layers = resolve(s_spec, student, "student")
        elif parse_hint_spec(t_spec) == "all" and not cls.pairs_layers:
            s_layers = resolve("all", student, "student")
        else:
            s_layers = match_student_layers(t_layers, teacher, student, example)
        if cls.pairs_layers and len(s_layers) != len(t_layers):
            who = f"{spec.loss}: " if len(hint_specs) > 1 else ""
            raise KdlensError(
                f"{who}{len(t_layers)} teacher hint layers but {len(s_layers)} student layers "
                f"({spec.loss} pairs student layer i with teacher layer i: give as many of each)"
            )
        out[spec.loss] = (t_layers, s_layers)
    return out


def _auto_hint_layers(
    cfg: DistillConfig, data: PreparedData, teacher, k: int | None, progress: bool, hint_search
) -> list[str]:
    """``hints: auto``: PURSUhInT search (cached) on the transfer set.  The search lives in
    ``explain``, a layer above ``train``, so callers inject it (the CLI and studies pass
    :func:`kdlens.explain.hint_search.auto_hint_layers`)."""
    if hint_search is None:
        raise KdlensError(
            "hints=auto needs the hint-point search: use `kdlens distill` or pass "
            "hint_search=kdlens.explain.hint_search.auto_hint_layers to run_distillation"
        )
    train, pool = data.train, data.train_indices
    if data.streamed:  # the search reads arrays: bring a seeded sample of the pool into memory
        rows = np.sort(np.random.default_rng(0).choice(pool, size=min(STREAMED_SEARCH_N, len(pool)), replace=False))
        train = replace(materialize(train, rows=rows), name=f"{train.name}#{data.fingerprint[:12]}")
        pool = None
    search = cfg.hint_search
    return hint_search(
        teacher, train, pool=pool, k=k, cache_dir=f"{cfg.out}/cache/hint-search",
        teacher_ref=cfg.teacher.run, progress=progress, metric=search.metric, rule=search.rule, form=search.form,
        **({"n": search.samples} if search.samples is not None else {}),
    )


