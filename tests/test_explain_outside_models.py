"""`kdlens hints`, `embed` and `softlabels` on a model trained outside kdlens
(`--teacher-model REF --weights PATH`) and on dataset references (`folder:DIR`, `python:…`)."""

from __future__ import annotations

import csv
import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.data import load_dataset, normalize
from kdlens.models.reference import build_model


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def said(result) -> str:
    return " ".join(result.output.split())


def analysis(store: Path, prefix: str) -> Path:
    """The analysis directory a command wrote in the run store ``store`` (``prefix``: its kind,
    command and model, e.g. ``softlabels-entropy-mine``)."""
    [out] = store.glob(f"{prefix}-*")
    return out


def digits_resnet8(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet8", 10, in_channels=1, input_size=8).eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A resnet8 for digits with seed-1 weights (kdlens would build it with seed 0), saved as a
    plain state_dict — a model trained outside kdlens."""
    path = tmp_path_factory.mktemp("outside") / "mine.pt"
    torch.save(digits_resnet8(1).state_dict(), path)
    return path


def loaded(path: Path, name: str = "resnet8", **kw) -> torch.nn.Module:
    model = build_model(name, 10, in_channels=1, input_size=8, **kw)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def entropies64(logits: torch.Tensor, temperatures) -> list[float]:
    z = logits.double()
    return [float(-(torch.softmax(z / t, 1) * torch.log_softmax(z / t, 1)).sum(1).mean()) for t in temperatures]


# ----------------------------------------------------------------------------------------------
# softlabels
# ----------------------------------------------------------------------------------------------
def test_softlabels_entropy_comes_from_the_given_weights(weights, tmp_path):
    out = tmp_path / "e"
    r = invoke("softlabels", "entropy", "--teacher-model", "resnet8", "--weights", weights, "--dataset", "digits",
               "--split", "test", "--temperatures", "1,4", "--out", out)
    assert r.exit_code == 0, r.output
    summary = json.loads((analysis(out, "softlabels-entropy-mine") / "entropy.json").read_text())
    assert list(summary["teachers"]) == ["mine"]
    got = summary["teachers"]["mine"]["mean_entropy"]

    test = load_dataset("digits", "test")
    x = normalize(test.images, test.mean, test.std).double()
    with torch.no_grad():
        want = entropies64(loaded(weights).double()(x), [1, 4])
        fresh = entropies64(digits_resnet8(0).double()(x), [1, 4])  # what kdlens builds before loading
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert abs(got[0] - fresh[0]) > 1e-3


def test_softlabels_projection_with_outside_weights(weights, tmp_path):
    out = tmp_path / "p"
    r = invoke("softlabels", "projection", "--teacher-model", "resnet8", "--weights", weights, "--dataset", "digits",
               "--classes", "0,1,2", "--max-per-class", "5", "--out", out)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((analysis(out, "softlabels-projection-mine") / "projection.csv").open()))
    assert len(rows) == 15 and {r["teacher"] for r in rows} == {"mine"}


@pytest.mark.parametrize("command", ["entropy", "missing-class", "transfer-set", "projection"])
def test_every_softlabels_command_takes_weights_only_with_a_model(command, weights, tmp_path):
    out = tmp_path / "never"
    r = invoke("softlabels", command, "--weights", weights, "--dataset", "digits", "--out", out)
    assert r.exit_code == 2 and "needs --teacher-model REF" in said(r)
    r = invoke("softlabels", command, "--teacher-model", "resnet8", "--weights", weights, "--out", out)
    assert r.exit_code == 2 and "give --dataset" in said(r)
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# hints
# ----------------------------------------------------------------------------------------------
def linear_cka64(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def test_hints_on_outside_weights(weights, tmp_path):
    from kdlens.distill.cache import weights_hash
    from kdlens.explain.hint_search import sample_indices

    out = tmp_path / "h"
    r = invoke("hints", "--teacher-model", "resnet8", "--weights", weights, "--dataset", "digits", "--clusters", "2",
               "--samples", "200", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    d = json.loads((analysis(out, "hints-mine") / "hints.json").read_text())
    model = loaded(weights)
    assert d["weights_sha256"] == weights_hash(model) != weights_hash(digits_resnet8(0))
    modules = dict(model.named_modules())
    assert len(d["hint_layers"]) == 2 and all(name in modules for name in d["hint_layers"])
    assert d["extra"]["teacher"]["weights"] == str(weights)

    # the saved similarities are those of this model's layers (float64 linear CKA)
    train = load_dataset("digits", "train")
    rows = sample_indices(len(train), 200, 0)
    feats = {}
    hooks = [modules[name].register_forward_hook(lambda m, i, o, name=name: feats.__setitem__(name, o))
             for name in d["layer_names"]]
    with torch.no_grad():
        model(normalize(train.images[rows], train.mean, train.std))
    for h in hooks:
        h.remove()
    reps = [feats[name].double().mean((2, 3)).numpy() for name in d["layer_names"]]
    want = np.array([[linear_cka64(a, b) for b in reps] for a in reps])
    np.testing.assert_allclose(np.array(d["similarity"]), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--teacher-model", "resnet8", "--weights", "{missing}", "--dataset", "digits", "--out", "{out}"],
         "does not exist"),
        (["--teacher-model", "resnet14", "--weights", "{weights}", "--dataset", "digits", "--out", "{out}"],
         "missing keys"),
        (["--weights", "{weights}", "--dataset", "digits", "--out", "{out}"], "needs --teacher-model REF"),
        (["--teacher-model", "resnet8", "--dataset", "digits", "--out", "{out}"], "add --weights PATH"),
        (["--dataset", "digits", "--out", "{out}"], "give the model to explain"),
        (["--teacher-model", "resnet8", "--weights", "{weights}", "--out", "{out}"], "give --dataset"),
        (["--teacher", "{weights}", "--teacher-model", "resnet8", "--out", "{out}"], "is a checkpoint file"),
        (["--teacher", "{weights}", "--teacher-model", "resnet8", "--weights", "{weights}", "--dataset", "digits",
          "--out", "{out}"], "not both"),
    ],
)
def test_hints_bad_teacher_options_exit_2(extra, message, weights, tmp_path):
    out = tmp_path / "never"
    args = [a.format(missing=tmp_path / "nope.pt", weights=weights, out=out) for a in extra]
    r = invoke("hints", *args, "--quiet")
    assert r.exit_code == 2, r.output
    assert message in said(r)
    assert not out.exists()


def test_weights_that_do_not_fit_name_the_keys_in_every_command(weights, tmp_path):
    out = tmp_path / "never"
    common = ["--teacher-model", "wrn_16_1", "--weights", weights, "--dataset", "digits", "--out", out]
    for args in (["softlabels", "entropy", *common], ["embed", *common, "--method", "pca", "--images", "40"],
                 ["hints", *common]):
        r = invoke(*args)
        assert r.exit_code == 2, r.output
        text = said(r)
        assert "does not fit" in text and re.search(r"missing keys \(\d+\): [\w.]+\.(weight|bias)", text), text
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# embed
# ----------------------------------------------------------------------------------------------
def test_embed_outside_weights_beside_a_run(weights, tmp_path):
    from kdlens.explain.embed import make_embedder

    run = tmp_path / "runs" / "student"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "thesis_student"}, "data": {"name": "digits"}}))
    torch.manual_seed(0)
    student = build_model("thesis_student", 10, in_channels=1, input_size=8)
    torch.save({"model": student.state_dict()}, run / "checkpoints" / "last.pt")

    out = tmp_path / "emb"
    r = invoke("embed", "--run", run, "--teacher-model", "resnet8", "--weights", weights, "--points", "C,E",
               "--method", "pca", "--images", 60, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    out = analysis(out, "embed-pca-student+1")
    assert {row["run"] for row in csv.DictReader((out / "metrics.csv").open())} == {"student", "mine"}

    with np.load(out / "mine" / "embeddings.npz") as npz:
        indices, emb = npz["indices"], npz["E"]
    test = load_dataset("digits", "test")
    with torch.no_grad():
        logits = loaded(weights)(normalize(test.images[indices], test.mean, test.std)).numpy()
    want = make_embedder("pca", seed=0).fit_transform(logits)
    np.testing.assert_allclose(np.abs(emb), np.abs(want), atol=1e-3 * np.abs(want).max())

    # without a run: --dataset is required
    r = invoke("embed", "--teacher-model", "resnet8", "--weights", weights, "--out", tmp_path / "x")
    assert r.exit_code == 2 and "give --dataset" in said(r)
    r = invoke("embed", "--run", run, "--teacher-model", "resnet8", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "needs --weights PATH" in said(r)
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------------
# dataset references
# ----------------------------------------------------------------------------------------------
def write_folder(root: Path, classes: int = 4, n_train: int = 20, n_test: int = 5, size: int = 16) -> Path:
    """100 small RGB PNGs: ``root/train/<class>/*.png`` and ``root/val/…``, a colour per class."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_test)):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            base = rng.integers(0, 256, size=3)
            for i in range(n):
                img = np.clip(base + rng.normal(0, 25, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def test_folder_dataset_with_a_torchvision_model(tmp_path):
    import torchvision

    from kdlens.data.reference import resolve_data

    folder = write_folder(tmp_path / "images")
    torch.manual_seed(3)
    net = torchvision.models.resnet18(num_classes=4).eval()
    path = tmp_path / "tv.pt"
    torch.save({"state_dict": net.state_dict()}, path)  # a checkpoint holding the state_dict
    ref = f"folder:{folder}"

    r = invoke("softlabels", "entropy", "--teacher-model", "torchvision:resnet18", "--weights", path,
               "--dataset", ref, "--split", "test", "--temperatures", "1,3", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    got = json.loads((analysis(tmp_path / "e", "softlabels-entropy-tv") / "entropy.json").read_text())
    got = got["teachers"]["tv"]["mean_entropy"]
    test = resolve_data(ref).test
    with torch.no_grad():
        want = entropies64(net.double()(normalize(test.images, test.mean, test.std).double()), [1, 3])
    np.testing.assert_allclose(got, want, rtol=1e-5)

    r = invoke("hints", "--teacher-model", "torchvision:resnet18", "--weights", path, "--dataset", ref,
               "--samples", 50, "--clusters", 2, "--out", tmp_path / "h", "--quiet")
    assert r.exit_code == 0, r.output
    d = json.loads((analysis(tmp_path / "h", "hints-tv") / "hints.json").read_text())
    assert d["data"]["dataset"] == ref and d["data"]["fingerprint"] and d["n"] == 50
    assert all(name in dict(net.named_modules()) for name in d["hint_layers"])


USER_DATA = '''
import torch

READ = {"train": set(), "test": set()}


class Noise(torch.utils.data.Dataset):
    """Float images (already transformed), labels exposed without reading images."""

    def __init__(self, n, split, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 1, 8, 8, generator=g)
        self.targets = torch.randint(0, 10, (n,), generator=g)
        self.targets[:10] = torch.arange(10)
        self.split = split

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        READ[self.split].add(int(i))
        return self.x[i], int(self.targets[i])


def make():
    return Noise(400, "train", 0), Noise(300, "test", 1)
'''


def test_python_dataset_reads_only_the_sampled_items(weights, tmp_path, monkeypatch):
    from kdlens.explain.embed.points import subsample

    pkg = tmp_path / "pkgs" / "outside_data_mod"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(USER_DATA))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    import outside_data_mod

    ref = "python:outside_data_mod:make"
    r = invoke("embed", "--teacher-model", "resnet8", "--weights", weights, "--dataset", ref, "--points", "C,E",
               "--method", "pca", "--images", 40, "--neighbours", 5, "--out", tmp_path / "emb", "--quiet")
    assert r.exit_code == 0, r.output
    with np.load(analysis(tmp_path / "emb", "embed-pca-mine") / "mine" / "embeddings.npz") as npz:
        indices = npz["indices"]
    ds = outside_data_mod.make()[1]
    np.testing.assert_array_equal(indices, subsample(ds.targets, 40, 0))  # rows of the whole test split
    # besides the sample: items 0 and 1 (the dry forward pass) and the last (the fingerprint)
    assert outside_data_mod.READ["test"] <= set(indices.tolist()) | {0, 1, 299}

    r = invoke("softlabels", "entropy", "--teacher-model", "resnet8", "--weights", weights, "--dataset", ref,
               "--train-subset", 30, "--temperatures", "2", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    assert len(outside_data_mod.READ["train"] - {0, 1, 399}) <= 30
    rows = np.sort(np.random.default_rng(0).choice(400, 30, replace=False))
    x = outside_data_mod.make()[0].x[rows]
    with torch.no_grad():
        want = entropies64(loaded(weights).double()(x.double()), [2])
    got = json.loads((analysis(tmp_path / "e", "softlabels-entropy-mine") / "entropy.json").read_text())
    got = got["teachers"]["mine"]["mean_entropy"]
    np.testing.assert_allclose(got, want, rtol=1e-5)
