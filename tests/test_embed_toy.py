"""`kdlens embed toy` (Fig. 1 of Lee & Wallraven 2021) writes its figure and scores into the run store;
the study step puts it in the report; `kdlens embed --density-class` draws one class's density (Fig. 7)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from kdlens.cli.embed_cmd import resolve_class
from kdlens.cli.main import app
from kdlens.errors import KdlensError
from kdlens.models import create_model

SMALL = ["--samples", "120", "--perplexity", "10", "--ivis-k", "10", "--param", "ivis.epochs=5", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_embed_toy_writes_figures_and_scores(tmp_path):
    res = invoke("embed", "toy", *SMALL, "--out", tmp_path)
    assert res.exit_code == 0, res.output
    [out] = tmp_path.glob("embed-toy-quadrants-n120-*")
    for name in ("toy.png", "toy_distances.png", "toy_embeddings.npz"):
        assert (out / name).stat().st_size > 0, name
    scores = json.loads((out / "toy_scores.json").read_text())
    assert scores["n"] == 120 and [r["method"] for r in scores["methods"]] == ["tsne", "ivis"]
    rows = list(csv.DictReader((out / "toy_scores.csv").open()))
    assert [r["method"] for r in rows] == ["tsne", "ivis"]
    with np.load(out / "toy_embeddings.npz") as npz:
        xy, quadrant = npz["xy"], npz["quadrant"]
        assert npz["tsne"].shape == npz["ivis"].shape == (120, 2)
        # the scores are those of the stored embeddings, recomputed independently here
        from scipy.stats import spearmanr

        for r in scores["methods"]:
            emb = npz[r["method"]].astype(np.float64)
            iu = np.triu_indices(120, 1)
            d_xy = np.linalg.norm(xy[:, None] - xy[None], axis=-1)[iu]
            d_emb = np.linalg.norm(emb[:, None] - emb[None], axis=-1)[iu]
            assert r["global_structure"] == pytest.approx(spearmanr(d_xy, d_emb).statistic, abs=1e-6)
            cent = [emb[quadrant == q].mean(0) for q in range(4)]
            far = sorted(((np.linalg.norm(cent[a] - cent[b]), (a, b)) for a in range(4) for b in range(a + 1, 4)))
            assert r["layout_preserved"] == ({far[-1][1], far[-2][1]} == {(0, 2), (1, 3)})
    assert (xy[quadrant == 0] >= 0).all() and (xy[quadrant == 2] < 0).all()
    assert "tsne: global structure" in res.output
    again = invoke("embed", "toy", *SMALL, "--out", tmp_path)  # finished: skipped, not recomputed
    assert again.exit_code == 0 and "already done" in again.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--samples", "120", "--perplexity", "50"], "perplexity 50"),
        (["--samples", "10"], "at least 20"),
        (["--methods", "tsne,ivsi"], "ivis"),
        (["--param", "ivis.epochz=3"], "epochz"),
        (["--param", "epochs=3"], "METHOD.KEY"),
        (["--param", "umap.n_neighbors=5", "--methods", "pca"], "not among the methods"),
        (["--samples", "100", "--ivis-k", "100"], "k must be in 1..99"),
    ],
)
def test_embed_toy_bad_input_exit_2_nothing_written(tmp_path, args, message):
    res = invoke("embed", "toy", *args, "--out", tmp_path / "never", "--quiet")
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert not (tmp_path / "never").exists()


def test_embed_toy_options_have_help():
    import typer

    toy = typer.main.get_command(app).commands["embed"].commands["toy"]
    options = [p for p in toy.params if p.param_type_name == "option"]
    assert not [p.name for p in options if not (p.help or "").strip()]
    assert {"--perplexity", "--samples", "--out", "--restart", "--threads"} <= {f for p in options for f in p.opts}


def test_the_report_shows_the_toy_section(tmp_path):
    from kdlens.report.html import write_report
    from kdlens.studies.grid import load_study, run_study

    spec = {"name": "toy-only", "groups": {"toy": {"kind": "embed-toy", "params": {
        "n": 100, "perplexity": 8, "method_params": {"ivis": {"k": 8, "epochs": 5}}}}}, "scales": {"smoke": {}}}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(spec))
    study = load_study(tmp_path / "toy.yaml", "smoke", tmp_path / "study")
    summary = run_study(study, workers=1, progress=False)
    assert summary.failed == 0
    report = write_report([study.directory], out=tmp_path / "report.html")
    numbers = json.loads((tmp_path / "report.json").read_text())
    toy = numbers["sections"]["toy"]
    assert toy["missing"] is None
    rows = toy["tables"]["toy_scores"]
    assert [r["method"] for r in rows] == ["tsne", "ivis"] and all(r["points"] == 100 for r in rows)
    assert {f["files"][0].split("/")[-1] for f in toy["figures"]} == {"toy__toy.png", "toy__toy_distances.png"}
    html = report.read_text()
    assert "Fig. 1: the quadrant toy" in html and 'id="toy"' in html


def test_the_demo_study_has_the_toy_at_every_scale(tmp_path):
    from pathlib import Path

    from kdlens.studies.grid import SCALES, load_study

    examples = Path(__file__).resolve().parents[1] / "examples" / "embedding.yaml"
    for scale in SCALES:
        [task] = [t for t in load_study(examples, scale, tmp_path).tasks if t.kind == "embed-toy"]
        assert task.config["n"] == (300 if scale == "smoke" else 2000 if scale == "full" else 400)
        assert task.config["perplexity"] == (150 if scale == "full" else 30)


# ----------------------------------------------------------------------------------------------
# --density-class (Fig. 7)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "student"
    (path / "checkpoints").mkdir(parents=True)
    config = {"kind": "train", "model": {"name": "cnn_student", "kwargs": {}}, "data": {"name": "digits", "root": None}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    model = create_model("cnn_student", num_classes=10, in_channels=1, input_size=8)
    torch.save({"model": model.state_dict()}, path / "checkpoints" / "last.pt")
    return path


def test_density_class_draws_only_that_class(run_dir, tmp_path):
    res = invoke("embed", "--run", run_dir, "--points", "D,E", "--method", "pca", "--images", 200,
                 "--density-class", "7", "--out", tmp_path, "--quiet")
    assert res.exit_code == 0, res.output
    [out] = tmp_path.glob("embed-pca-student*")
    rows = list(csv.DictReader((out / "density_class.csv").open()))
    assert [r["point"] for r in rows] == ["D", "E"]
    assert {r["class"] for r in rows} == {"7"} and {r["class_name"] for r in rows} == {"7"}
    with np.load(out / "student" / "embeddings.npz") as npz:
        labels = npz["labels"]
        emb = npz["D"]
    assert all(int(r["points"]) == int((labels == 7).sum()) for r in rows)
    # the ratio is class 7's, not another class's: recomputed from the stored embedding
    from kdlens.explain.embed import class_density

    assert float(rows[0]["area_ratio"]) == pytest.approx(class_density(emb, labels, 7).ratio, rel=1e-5)
    assert float(rows[0]["area_ratio"]) != pytest.approx(class_density(emb, labels, 1).ratio, rel=1e-5)
    assert (out / "student" / "density_pca.png").stat().st_size > 0


def test_density_class_bad_name_exit_2_naming_the_valid_ones(run_dir, tmp_path):
    res = invoke("embed", "--run", run_dir, "--method", "pca", "--density-class", "seven", "--out", tmp_path / "x")
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.split())
    assert "'seven' is no class" in said and "0 '0'" in said and "9 '9'" in said
    assert not (tmp_path / "x").exists()


def test_resolve_class_by_name_index_and_case():
    names = ["T-shirt/top", "Trouser", "Pullover"]
    assert resolve_class("Trouser", names) == 1
    assert resolve_class("2", names) == 2
    assert resolve_class("pullover", names) == 2
    with pytest.raises(KdlensError, match="did you mean Trouser"):
        resolve_class("Trousers", names)
    with pytest.raises(KdlensError, match="0..2"):
        resolve_class("3", names)


def test_distance_panel_and_figure(tmp_path):
    from kdlens.explain.embed.toy import ToyResult, quadrant_toy, toy_distance_panel
    from kdlens.figures.embed import plot_toy_distances

    _, xy, q = quadrant_toy(80, seed=4)
    emb = 3.0 * xy[:, ::-1]  # a rotated, scaled copy: every distance ×3
    panel = toy_distance_panel(ToyResult("copy", emb, 1.0, 1.0, True), xy, q, sample=50, seed=1)
    assert panel["points"] == 50 and len(panel["d_plane"]) == 50 * 49 // 2
    np.testing.assert_allclose(panel["d_embedding"], 3.0 * panel["d_plane"], rtol=1e-5)
    cent = np.stack([xy[q == k].mean(0) for k in range(4)]).astype(np.float64)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    np.testing.assert_allclose(panel["c_plane"], [np.linalg.norm(cent[a] - cent[b]) for a, b in pairs], rtol=1e-5)
    np.testing.assert_allclose(panel["c_embedding"], 3.0 * panel["c_plane"], rtol=1e-5)
    plot_toy_distances({"copy": panel}, path=tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 0
