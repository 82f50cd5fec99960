"""PURSUhInT (Keser et al. 2022) as study steps.

``hint-search`` (needs one ``teacher`` run): the hint-point search of
:func:`kdlens.explain.hint_search.find_hint_points` on the teacher's training examples —
layer similarity (linear CKA by default), k-means over the layers, the cluster centres as
hint points next to the conventional ones.  Writes ``hints.json``, ``hints.png`` (similarity
heatmap with cluster boundaries, proposed points as red circles, conventional as white
crosses) and ``clusters.csv``.  The search is also saved under
``STUDY/cache/hint-search/`` where ``hints: auto`` students of the same study find it
(:func:`kdlens.explain.hint_search.auto_hint_layers` reuses a search for the same teacher
weights, dataset, k, metric, rule and form), so the students use exactly these points.

``hints: auto`` searches with linear CKA, the centre rule, post-activation taps and k = the
number of conventional points; keep the step at these settings (its defaults) so the students
reuse it — with other settings they would run (and save) a search of their own.

The baseline-vs-proposed accuracy table (Table 4 shape) is built by the report from the
``distill`` students' runs (``hints: conventional`` vs ``hints: auto``).
"""

from __future__ import annotations

from typing import Any

from kdlens.studies.papers import StepContext, load_run_model, register_step, run_dataset

PARAMS = ("k", "metric", "rule", "form", "n", "seed", "teacher")


@register_step("hint-search")
def hint_search_step(ctx: StepContext) -> dict[str, Any]:
    """PURSUhInT search on a teacher: layer similarity, k-means clusters, hint points vs conventional; needs teacher."""
    from kdlens.explain.hint_search import (
        DEFAULT_N,
        conventional_indices,
        dataset_key,
        dataset_prepare,
        find_hint_points,
    )
    from kdlens.explain.representations import candidate_layers
    from kdlens.store import RunDir, atomic_write_text

    ctx.check_params(PARAMS)
    teacher = ctx.need(ctx.param("teacher", "teacher"))
    train = run_dataset(teacher, "train")
    model = load_run_model(teacher, train)
    form = ctx.param("form", "post")
    k = ctx.param("k")
    if k is None:  # the same rule as `hints: auto`: one point per conventional point
        k = len(conventional_indices(model, candidate_layers(model, form))) or 3
    split = teacher.path / "splits" / "train.npy"
    pool = RunDir(teacher.path).load_split("train") if split.exists() else None
    result = find_hint_points(
        model, train.images, dataset_prepare(train), k=int(k), metric=ctx.param("metric", "cka"),
        rule=ctx.param("rule", "centre"), form=form, n=int(ctx.param("n", DEFAULT_N)), seed=int(ctx.param("seed", 0)),
        cache_dir=ctx.study_dir / "cache" / "hint-search" / "reps", pool=pool, data_key=dataset_key(train),
    )
    name = teacher.config()["model"]["name"]
    result.extra["teacher"] = {"run": str(teacher.path), "model": name}
    result.save(ctx.out_dir, title=f"{name} on {train.name}: {result.metric}, k={result.k}, {result.rule}")
    # where `hints: auto` students of this study look for a saved search
    atomic_write_text(ctx.study_dir / "cache" / "hint-search" / f"search-{ctx.task_id}.json", result.to_json())
    rows = result.table_rows()
    ctx.write_csv("clusters.csv", rows)
    return {
        "teacher_model": name,
        "layers": len(result.layer_names),
        "k": result.k,
        "metric": result.metric,
        "hint_points": list(result.selection.indices_1based),
        "hint_layers": result.names,
        "conventional_points": [i + 1 for i in result.conventional],
        "conventional_layers": result.conventional_names,
        "n": result.n,
        "seconds_step1": round(result.timings["step1_representations"], 3),
        "seconds_step2": round(result.timings["step2"], 3),
    }
