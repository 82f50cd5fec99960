"""Faults and bad input: config fuzzing, non-finite losses."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdlens.config import DistillConfig, TrainConfig, TuneConfig, validate
from kdlens.config.loading import apply_overrides
from kdlens.errors import KdlensError, TrainingDivergedError
from kdlens.train import StepOutput, SupervisedLoop, Trainer
from kdlens.config import OptimConfig

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(-3, 30), max_size=3))
keys = st.sampled_from(["epochs", "optim.lr", "optim.momentum", "optim.schedule", "data.name", "data.budget",
                        "data.fold", "data.n_folds", "data.val_fraction", "model.name", "model.kwargs", "seed",
                        "batch_size", "bogus", "optim.bogus", "data.remove_classes", "teacher.run", "method",
                        "loss", "cache", "eval_split", "base", "space", "trials"])
configs = st.dictionaries(keys, scalars, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=configs, schema=st.sampled_from([TrainConfig, DistillConfig, TuneConfig]))
def test_config_fuzzing_gives_a_message_naming_the_key_never_a_traceback(data, schema):
    nested = apply_overrides({}, [f"{k}=0" for k in data])  # build the nesting
    for key, value in data.items():
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    try:
        validate(schema, nested)
    except KdlensError as exc:
        text = str(exc)
        assert text.startswith("invalid config:")
        # every error line names a key path
        assert all(line.strip().split(":")[0] for line in text.splitlines()[1:])


class _NaNAfter(SupervisedLoop):
    def __init__(self, source, bad_step):
        super().__init__(source)
        self.bad_step, self.calls = bad_step, 0

    def step(self, model, batch):
        out = super().step(model, batch)
        self.calls += 1
        if self.calls == self.bad_step:
            nan = out.loss * float("nan")
            return StepOutput(nan, {"ce": out.parts["ce"], "kd": nan}, out.logits, out.targets)
        return out


class _Source:
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)

    def __len__(self):
        return 4

    def epoch(self, generator):
        from kdlens.train import Batch

        for i in range(4):
            yield Batch(self.x[i * 16:(i + 1) * 16], self.y[i * 16:(i + 1) * 16], torch.arange(i * 16, (i + 1) * 16))


def test_nan_loss_stops_the_run_naming_the_loss_and_step():
    model = torch.nn.Linear(4, 3)
    trainer = Trainer(model, _NaNAfter(_Source(), bad_step=6), OptimConfig(), epochs=3, progress=False)
    with pytest.raises(TrainingDivergedError, match=r"kd = nan\) at epoch 2, step 2"):
        trainer.fit()


def test_resume_after_divergence_is_not_silently_valid(tmp_path):
    """A failed run is recorded as failed with its reason in the store."""
    from kdlens.store import RunIndex
    from kdlens.train.run import run_training

    cfg = validate(TrainConfig, {"model": {"name": "baseline_student"}, "data": {"name": "digits"},
                                 "epochs": 1, "out": str(tmp_path), "optim": {"lr": 1e30}})
    with pytest.raises(TrainingDivergedError):
        run_training(cfg, progress=False)
    rec = RunIndex(tmp_path).list()[0]
    assert rec.status == "failed" and "non-finite loss" in rec.reason
