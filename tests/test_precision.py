"""precision: auto | fp32 | bf16 (issue 14): bf16 only where the hardware computes it natively."""

from __future__ import annotations

import pytest
import torch
import yaml

from kdlens.config import TrainConfig, validate
from kdlens.config import precision as precision_module
from kdlens.config.precision import resolve_precision
from kdlens.errors import TrainingDivergedError
from kdlens.train.trainer import _check_finite


def test_auto_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ())
    assert resolve_precision("auto", "cpu")[0] is False
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    use, reason = resolve_precision("auto", "cpu")
    assert use is True and "avx512_bf16" in reason
    assert resolve_precision("fp32", "cpu")[0] is False and resolve_precision("bf16", "cpu")[0] is True


def test_legacy_bf16_keys_set_precision_and_auto_is_the_default():
    assert TrainConfig().precision == "auto"
    assert validate(TrainConfig, {"bf16": True}).precision == "bf16"
    assert validate(TrainConfig, {"bf16": False}).precision == "fp32"
    assert validate(TrainConfig, {"precision": "bf16"}).bf16 is True


@pytest.mark.parametrize("example", ["teacher_fmnist.yaml"])
def test_examples_use_auto(example):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "examples" / example).read_text()
    assert "bf16: true" not in text and yaml.safe_load(text)["precision"] == "auto"


def test_divergence_advice_mentions_bf16_only_when_it_is_on():
    nan = torch.tensor(float("nan"))
    with pytest.raises(TrainingDivergedError) as off:
        _check_finite({"ce": nan}, nan, 0, 0, bf16=False)
    with pytest.raises(TrainingDivergedError) as on:
        _check_finite({"ce": nan}, nan, 0, 0, bf16=True)
    assert "bf16" not in str(off.value) and "precision=fp32" in str(on.value)
