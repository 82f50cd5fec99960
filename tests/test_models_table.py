"""``kdlens models`` and ``list_taps`` agree (issue 14): the `taps` column is
``len(list_taps(model))`` — 11 for resnet20 — and the pre-activation form is a column of its own,
labelled (``list_taps(model, form="all")``: 20 for resnet20)."""

from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.models import create_model, list_models, list_taps


def test_models_table_counts_taps_as_list_taps_does():
    res = CliRunner().invoke(app, ["models", "--format", "tsv"])
    assert res.exit_code == 0, res.output
    header, *lines = res.output.strip().splitlines()
    assert header.split("\t") == ["model", "parameters", "hint blocks", "taps", "taps with pre-activations"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert sorted(rows) == list_models()
    assert rows["resnet20"][3:] == ["11", "20"]
    for name in ("resnet20", "wrn_16_2", "thesis_student", "mobilenetv2"):
        model = create_model(name, num_classes=10, in_channels=3)
        assert rows[name][3] == str(len(list_taps(model)))
        assert rows[name][4] == str(len(list_taps(model, form="all")))


def test_models_help_says_what_each_count_is():
    res = CliRunner().invoke(app, ["models", "--help"])
    said = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code == 0 and "len(list_taps(model))" in said and 'list_taps(model, form="all")' in said
