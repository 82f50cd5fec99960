"""Pydantic configs, YAML loading and key=value overrides."""

from kdlens.config.loading import apply_overrides, load_config, parse_override, read_yaml, validate
from kdlens.config.schema import DataConfig, DistillConfig, ModelConfig, OptimConfig, TeacherConfig, TrainConfig, TuneConfig

__all__ = [
    "DataConfig",
    "DistillConfig",
    "TeacherConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "TuneConfig",
    "apply_overrides",
    "load_config",
    "parse_override",
    "read_yaml",
    "validate",
]
