"""Messages for people (issue 14 "Messages")."""

from __future__ import annotations

import pytest
import torch

from kdlens.config import TrainConfig, load_config
from kdlens.errors import KdlensError, plural, unknown_name


def test_plurals_in_unknown_name_lists():
    assert plural("loss") == "losses" and plural("model") == "models" and plural("tap form") == "tap forms"
    message = str(unknown_name("loss", "kdd", ["kd", "dkd"]))
    assert "Known losses:" in message and "losss" not in message


def test_yaml_syntax_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("epochs: 3\nmodel:\n  name: [unclosed\n")
    with pytest.raises(KdlensError) as err:
        load_config(TrainConfig, path, [])
    text = str(err.value)
    assert f"{path}, line 4" in text and "<unicode string>" not in text


def test_a_bare_checkpoint_names_the_cli_flag(tmp_path):
    from kdlens.data import load_dataset
    from kdlens.train.teacher import load_teacher

    ckpt = tmp_path / "t.pt"
    torch.save({"w": torch.zeros(1)}, ckpt)
    with pytest.raises(KdlensError, match="--teacher-model REF"):
        load_teacher(str(ckpt), load_dataset("digits"))
