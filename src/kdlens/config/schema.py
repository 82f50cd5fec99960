"""Run configurations as pydantic models.

Defaults live here, next to the field, with the paper they come from; a YAML file states
only what differs.  Every model forbids unknown keys so a typo fails before any work.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from kdlens.config.search_space import SearchParam, corner_errors, space_errors, trial_mapping


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    name: str = Field(
        "digits",
        description="dataset reference: a catalog name (digits, fashion-mnist, …), folder:DIR "
        "(train/ and val/ or test/ of class sub-folders) or python:pkg.module:make (returns train, test)",
    )
    root: str | None = Field(None, description="torchvision-style root directory")
    download: bool = Field(False, description="download through torchvision when missing")
    budget: int | None = Field(
        None, gt=0, description="balanced label budget: total labeled examples (same per class)"
    )
    n_folds: int = Field(1, ge=1, description="disjoint label-budget folds")
    fold: int = Field(0, ge=0, description="which budget fold this run uses")
    remove_classes: list[int] = Field(
        default_factory=list, description="classes removed from the training/transfer set"
    )
    val_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="stratified held-out validation fraction of train"
    )
    crop_padding: int | None = Field(
        None, ge=0, description="random-crop padding in pixels (None: dataset default)"
    )
    hflip: bool | None = Field(None, description="random horizontal flips (None: dataset default)")
    split_seed: int = Field(0, description="seed of every data split")
    unlabeled_limit: int | None = Field(
        None, gt=0, description="use at most this many unlabeled examples (random, seeded)"
    )
    stream: Literal["auto", "on", "off"] = Field(
        "auto", description="folder data: decode lazily in DataLoader workers (on), hold in memory "
        "(off), or auto: in memory when the decoded images fit in memory_limit_mb",
    )
    memory_limit_mb: float = Field(
        1024.0, gt=0, description="stream=auto: largest decoded dataset (both splits, uint8) held in memory"
    )
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes of the streamed path (None: min(4, CPUs))"
    )
    image_size: int | None = Field(
        None, gt=0, description="folder data: resize every image to this square size (None: keep; all must match)"
    )
    on_bad_image: Literal["error", "skip"] = Field(
        "error", description="an unreadable image in a folder: exit naming the file, or skip it (counted)"
    )

    @field_validator("stream", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        """YAML 1.1 reads ``stream: on`` as a boolean: take it as meant."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _fold_in_range(self) -> DataConfig:
        if self.fold >= self.n_folds:
            raise ValueError(f"data.fold={self.fold} must be < data.n_folds={self.n_folds}")
        return self


class ModelConfig(Strict):
    name: str = Field(
        "thesis_student",
        description="model reference: a zoo name (kdlens models), torchvision:NAME, timm:NAME or pkg.module:Class",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model's constructor")
    weights: str | None = Field(None, description="initial weights from a local file (a state_dict or a checkpoint)")
    init: str | None = Field(None, description="initialise from a run directory or checkpoint (fine-tuning)")


class OptimConfig(Strict):
    """SGD with momentum; schedule defaults follow RepDistiller (Tian et al. 2020).

    RepDistiller (CIFAR-100): lr 0.05, ×0.1 at epochs 150/180/210 of 240, batch 64,
    momentum 0.9, weight decay 5e-4 — ``milestones=None`` scales those fractions to
    ``epochs``.  Lee & Wallraven 2021: lr 0.1, ×0.2 every 60 epochs, batch 64
    (``schedule="step", lr=0.1, gamma=0.2, step_size=60``).
    """

    lr: float = Field(0.05, gt=0.0, description="initial learning rate")
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    nesterov: bool = False
    schedule: Literal["multistep", "step", "cosine", "constant"] = "multistep"
    milestones: list[int] | None = Field(
        None, description="epochs where lr is multiplied by gamma (None: 150/180/210 of 240, scaled)"
    )
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="lr decay factor")
    step_size: int = Field(60, gt=0, description="epochs between decays for schedule=step")


#: semi-supervised methods (:data:`kdlens.train.semi_loops.SEMI_LOOPS`); they need no teacher,
#: so they are a training option (``kdlens train semi=fixmatch data.budget=400``), not a distill loop
SemiMethod = Literal["pseudo_label", "pi_model", "mean_teacher", "mixmatch", "fixmatch"]


class TrainConfig(Strict):
    """One training run: supervised, or semi-supervised with ``semi`` (labeled budget +
    unlabeled pool, no teacher)."""

    kind: Literal["train"] = "train"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(64, gt=0, description="64 in RepDistiller and Lee & Wallraven")
    seed: int = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 only where the CPU/GPU computes it natively (kdlens.config.precision)"
    )
    channels_last: bool = False
    eval_every: int = Field(1, gt=0)
    eval_split: Literal["test", "val"] = Field(
        "test", description="evaluate on the test set or on the held-out validation split"
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="α_LS of the CE target")
    out: str = Field("runs", description="run store directory")
    name: str | None = Field(None, description="run name (default: derived from the config)")
    log: list[Literal["jsonl", "tensorboard", "mlflow"]] = Field(
        default_factory=lambda: ["jsonl"],
        description="trackers: jsonl (always, metrics.jsonl), tensorboard, mlflow",
    )
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (default: sqlite:///<out>/mlflow.db)"
    )
    semi: SemiMethod | None = Field(
        None, description="semi-supervised training on data.budget labels + the unlabeled rest "
        "(kdlens.train.semi_loops): pseudo_label | pi_model | mean_teacher | mixmatch | fixmatch",
    )
    semi_options: dict[str, Any] = Field(
        default_factory=dict, description="hyper-parameters of the semi method, e.g. {threshold: 0.95, mu: 7}",
    )

    @model_validator(mode="after")
    def _val_split_exists(self) -> TrainConfig:
        if self.eval_split == "val" and self.data.val_fraction <= 0:
            raise ValueError("eval_split=val needs data.val_fraction > 0 (e.g. 0.1)")
        return self

    @model_validator(mode="after")
    def _semi_has_a_budget(self) -> TrainConfig:
        if self.semi is not None and self.data.budget is None:
            raise ValueError(f"semi={self.semi} needs data.budget (the number of labeled examples; "
                             "the rest of the training set is the unlabeled pool)")
        if self.semi is None and self.semi_options:
            raise ValueError("semi_options without semi: name the method, e.g. semi=fixmatch")
        return self

    @model_validator(mode="before")
    @classmethod
    def _legacy_bf16(cls, data: Any) -> Any:
        """``bf16: true|false`` (older configs, ``--bf16/--no-bf16``) sets ``precision``."""
        if isinstance(data, dict) and "bf16" in data:
            data = dict(data)
            flag = data.pop("bf16")
            if flag is not None:
                data["precision"] = "bf16" if flag else "fp32"
        return data

    @property
    def bf16(self) -> bool:
        """Whether this run uses bf16 autocast (``precision`` resolved on ``device``)."""
        from kdlens.config.precision import resolve_precision

        return resolve_precision(self.precision, self.device)[0]

    def identity(self) -> dict[str, Any]:
        """The fields that define the result (not where it is stored or shown).  ``semi`` and
        ``semi_options`` count only when set, so supervised runs keep their identity."""
        exclude = {"out", "name", "device", "log", "tracking_uri"}
        if self.semi is None:
            exclude |= {"semi", "semi_options"}
        return self.model_dump(exclude=exclude)


class TeacherConfig(Strict):
    """A kdlens run directory, or a model reference with a weights file trained elsewhere."""

    run: str | None = Field(None, description="teacher run directory or checkpoint file")
    model: str | None = Field(
        None, description="teacher model reference (with weights=PATH, or for a bare checkpoint file)"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the teacher's constructor")
    weights: str | None = Field(None, description="teacher weights file (a state_dict or a checkpoint)")
    checkpoint: Literal["last", "best"] = Field("last", description="which checkpoint of a run")

    @model_validator(mode="after")
    def _run_or_model(self) -> TeacherConfig:
        if self.run is None and self.weights is None:
            raise ValueError("give teacher.run (a kdlens run directory or checkpoint) or "
                             "teacher.model=REF with teacher.weights=PATH")
        if self.run is not None and self.weights is not None:
            raise ValueError("teacher.run and teacher.weights both name the weights: give one")
        if self.weights is not None and self.model is None:
            raise ValueError("teacher.weights needs teacher.model (the architecture, e.g. torchvision:resnet18)")
        return self


class TermConfig(Strict):
    """One term of a multi-term objective (``terms:``): a loss, its weight and, for a hint
    loss, its own layers (same forms as ``hints`` / ``student_hints``)."""

    loss: str = Field(..., description="loss name (see `kdlens methods`)")
    weight: float | None = Field(None, ge=0.0, description="the term's weight (None: the method table's α or β)")
    layers: str | list[int] | list[str] | None = Field(
        None, description="teacher layers of a hint term (None: penultimate for CRD/RKD/PKT/CC, else hints)"
    )
    student_layers: str | list[int] | list[str] | None = Field(
        None, description="student layers of a hint term (None: same relative depth as the teacher's)"
    )


class HintSearchConfig(Strict):
    """How ``hints: auto`` searches (PURSUhInT, Keser et al. 2022; ``kdlens hints`` takes the same)."""

    metric: str = Field("cka", description="layer similarity: cka (linear CKA) | cca (R²_CCA) | … (kdlens hints --help)")
    rule: str = Field("centroid", description="hint point of a cluster: centroid | centre | medoid | last")
    form: Literal["post", "pre"] = Field("post", description="post- or pre-activation layer outputs")
    samples: int | None = Field(None, gt=1, description="training samples for the representations (None: 10,000)")


class DistillConfig(TrainConfig):
    """Offline distillation of a student from a frozen teacher (or the limited-label loop).

    ``method``: loss names joined by ``+`` (``kd``, ``at+kd``, ``fitnet+kd``,
    ``crd+at+kd``; see ``kdlens methods``); weights default to the method table
    (RepDistiller's CIFAR-100 settings) unless ``gamma`` (CE), ``alpha``/``beta`` (the
    single logit/hint term) or ``weights`` (any term by name: ``{crd: 0.8, at: 1000, kd:
    0.9}``) are given.  ``hints``: teacher layers as 1-based sub-block indices (``[6, 27,
    49]``), tap names, ``"conventional"`` (last sub-block before each downsampling),
    ``"all"`` (every sub-block) or ``"auto"`` (hint-point search).  ``terms``: the
    objective as a list (``[{loss: crd, layers: [penultimate], weight: 0.8}, {loss: at},
    {loss: kd, weight: 0.9}]``), each hint term with its own ``layers`` /
    ``student_layers``; it sets ``method``.
    """

    kind: Literal["distill"] = "distill"  # type: ignore[assignment]
    teacher: TeacherConfig
    method: str = "kd"
    hints: str | list[int] | list[str] = "conventional"
    hint_search: HintSearchConfig = Field(default_factory=HintSearchConfig, description="settings of hints: auto")
    student_hints: str | list[int] | list[str] | None = Field(
        None, description="student layers (default: same relative depth as the teacher's)"
    )
    gamma: float | None = Field(None, ge=0.0)
    alpha: float | None = Field(None, ge=0.0)
    beta: float | None = Field(None, ge=0.0)
    loss: dict[str, Any] = Field(default_factory=dict, description="loss hyper-parameters, e.g. {T: 4}")
    weights: dict[str, float] = Field(
        default_factory=dict, description="per-term weights by loss name, e.g. {crd: 0.8, at: 1000, kd: 0.9}"
    )
    terms: list[TermConfig] | None = Field(
        None, description="the objective's terms, each with its weight and (hint terms) layers; sets method"
    )
    cache: Literal["auto", "on", "off"] = Field(
        "auto", description="teacher-output cache (auto: on when the transfer set has no random crop)"
    )
    loop: Literal["offline", "limited_label"] = Field(
        "offline", description="limited_label: Lee & Wallraven cycles of labeled CE + unlabeled KD"
    )
    allow_dataset_mismatch: bool = Field(
        False, description="distill on a dataset other than the teacher run's (otherwise an error)"
    )
    pretrain_epochs: int | None = Field(
        None, ge=0, description="hint pre-training epochs for FitNet stage 1 / AB / FSP / FT (None: epochs // 4)"
    )

    @field_validator("loop", mode="before")
    @classmethod
    def _semi_loop_is_a_train_option(cls, value: Any) -> Any:
        if value in get_args(SemiMethod):
            raise ValueError(f"loop={value} is a semi-supervised method, which needs no teacher: run it with "
                             f"`kdlens train semi={value} data.budget=N`")
        return value

    @model_validator(mode="before")
    @classmethod
    def _method_from_terms(cls, data: Any) -> Any:
        """``terms`` names the losses: ``method`` follows (or, if given too, must agree)."""
        if not isinstance(data, dict) or not isinstance(data.get("terms"), list) or not data["terms"]:
            return data
        names = [t.get("loss") if isinstance(t, dict) else getattr(t, "loss", None) for t in data["terms"]]
        if not all(isinstance(n, str) for n in names):
            return data  # the field validation says what is missing
        method = "+".join(n.strip() for n in names)
        given = data.get("method")
        if given is not None and sorted(p.strip() for p in str(given).split("+")) != sorted(n.strip() for n in names):
            raise ValueError(f"method={given} but terms list {method}: give one (terms set the method)")
        return {**data, "method": method}

    @model_validator(mode="after")
    def _term_weights_once(self) -> DistillConfig:
        for term in self.terms or []:
            if term.weight is not None and term.loss in self.weights:
                raise ValueError(f"the {term.loss} term's weight is given twice (terms and weights.{term.loss}): give one")
        if self.terms is not None and not self.terms:
            raise ValueError("terms is empty: list at least one term, e.g. [{loss: kd}]")
        return self

    def identity(self) -> dict[str, Any]:
        """As :meth:`TrainConfig.identity`; ``weights`` and ``terms`` count only when set, so
        configs without them keep the identity they had before these fields existed."""
        out = super().identity()
        if not self.weights:
            out.pop("weights", None)
        if self.terms is None:
            out.pop("terms", None)
        return out

    @model_validator(mode="after")
    def _no_semi(self) -> DistillConfig:
        if self.semi is not None:
            raise ValueError(f"semi={self.semi} trains without a teacher: run it with `kdlens train semi={self.semi} "
                             "data.budget=N`; distillation's own limited-label cycle is loop=limited_label")
        return self


DEFAULT_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    # PURSUhInT chose γ, α, β by Bayesian search (Keser et al. 2022 §4); T around Hinton's 4
    "distill": {"gamma": {"low": 0.05, "high": 1.0}, "alpha": {"low": 0.1, "high": 1.0}, "T": {"low": 1.0, "high": 10.0}},
    # around RepDistiller's lr 0.05 and batch 64 (Tian et al. 2020)
    "train": {"optim.lr": {"low": 0.005, "high": 0.5, "log": True}, "batch_size": {"choices": [32, 64, 128]}},
}


class TuneConfig(Strict):
    """Bayesian search (Optuna TPE) of any config keys on a validation split, as PURSUhInT
    chose γ, α, β (Keser et al. 2022 §4).

    ``base``: a distill config, or a train config with ``kind: train``.  ``space``: dotted
    keys of the base (``optim.lr``, ``batch_size``, ``loss.T``; ``T`` for short) → a float
    range, an int range (``int: true``) or ``choices`` (:mod:`kdlens.config.search_space`).
    Keys, types and every trial's extreme values are checked here, before anything trains.
    """

    kind: Literal["tune"] = "tune"
    base: DistillConfig | TrainConfig = Field(..., description="every trial's config: distill (default) or kind: train")
    space: dict[str, SearchParam] | None = Field(
        None, validate_default=True, description="dotted config key → search dimension (None: DEFAULT_SPACES[base.kind])"
    )
    trials: int = Field(20, gt=0)
    seed: int = 0
    name: str = "tune"

    @field_validator("base", mode="before")
    @classmethod
    def _base_by_kind(cls, value: Any) -> Any:
        if isinstance(value, TrainConfig):
            return value
        if not isinstance(value, dict):
            raise ValueError("must be a mapping: a distill config, or a train config with kind: train")
        schema = {"distill": DistillConfig, "train": TrainConfig}.get(value.get("kind", "distill"))
        if schema is None:
            raise ValueError(f"kind {value['kind']!r} cannot be tuned: use kind: distill (the default) or kind: train")
        return schema.model_validate(value)  # its errors keep their keys (base.optim.lr)

    @field_validator("space")
    @classmethod
    def _space_keys(cls, space: dict[str, SearchParam] | None, info: ValidationInfo) -> dict[str, SearchParam] | None:
        base = info.data.get("base")
        if base is None:  # the base's own errors are reported
            return space
        if space is None:
            return {k: SearchParam.model_validate(v) for k, v in DEFAULT_SPACES[base.kind].items()}
        if not space:
            raise ValueError("is empty: name at least one config key to search (e.g. optim.lr)")
        _raise_at_keys(space_errors(type(base), space), space)
        return space

    @model_validator(mode="after")
    def _trials_are_valid(self) -> TuneConfig:
        if self.base.data.val_fraction <= 0:
            raise ValueError("base.data.val_fraction must be > 0: tuning evaluates on a validation split")
        _raise_at_keys(corner_errors(self.base, self.space or {}, self._trial_settings(0)), self.space or {}, "space")
        return self

    def _trial_settings(self, number: int) -> dict[str, Any]:
        return {"eval_split": "val", "name": f"{self.name}-trial{number}"}

    def trial_mapping(self, params: dict[str, Any], number: int) -> dict[str, Any]:
        """Trial ``number``'s config: the base with ``params`` applied, evaluated on val."""
        return trial_mapping(self.base, params, self._trial_settings(number))

    def best_mapping(self, params: dict[str, Any]) -> dict[str, Any]:
        """The base with ``params`` applied and nothing else: a config ``kdlens train|distill`` runs."""
        return trial_mapping(self.base, params)


def _raise_at_keys(errors: list[tuple[str, str]], space: dict[str, SearchParam], *where: str) -> None:
    """Raise ``errors`` (``(key, why)``) as one validation error at ``[*where, key]``."""
    if errors:
        raise ValidationError.from_exception_data("TuneConfig", [
            {"type": PydanticCustomError("search_space", "{why}", {"why": why}),
             "loc": (*where, key) if key else where,
             "input": space[key].model_dump(by_alias=True, exclude_defaults=True) if key else {}}
            for key, why in errors
        ])
