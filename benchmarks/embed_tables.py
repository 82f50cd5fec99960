"""Tables of `kdlens embed` analyses over folds: Ivis loss, class-area ratio and superclass r²
(Lee & Wallraven 2021, Table 2, Figs. 7–8 and Fig. 5), mean ± sample std over the folds.

Each ``--group LABEL=DIR[,DIR…]`` is one row group (e.g. a label budget) whose directories
are `kdlens embed --run UD --run D` analyses of the same two roles, one per fold. The roles
are the ``run`` column of each directory's ``metrics.csv`` in the order written (the order of
``--run``), renamed by ``--roles`` (default ``UD,D``).

    python benchmarks/embed_tables.py --group 100=runs/x/embed-a,runs/x/embed-b \\
        --group 1000=runs/x/embed-c,runs/x/embed-d
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from kdlens.studies.summary import mean_std


def fmt_mean_std(values: list[float]) -> str:
    """``"0.123 ± 0.004"`` (three decimals: these quantities live in [0, 1])."""
    m, sd = mean_std(values)
    return f"{m:.3f} ± {sd:.3f}" if len(values) > 1 else f"{m:.3f} (n = 1)"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _role_names(metrics: list[dict[str, str]], roles: list[str]) -> dict[str, str]:
    runs = list(dict.fromkeys(r["run"] for r in metrics))
    if len(runs) != len(roles):
        raise SystemExit(f"expected {len(roles)} models ({', '.join(roles)}), found {len(runs)}: {runs}")
    return dict(zip(runs, roles, strict=True))


def point_table(groups: dict[str, list[Path]], roles: list[str], column: str) -> str:
    """One row per (group, role), one column per extraction point: mean ± std over the group's folds."""
    values: dict[tuple[str, str, str], list[float]] = {}
    points: list[str] = []
    for label, dirs in groups.items():
        for d in dirs:
            metrics = _rows(d / "metrics.csv")
            names = _role_names(metrics, roles)
            for r in metrics:
                points += [r["point"]] if r["point"] not in points else []
                if r[column] not in ("", "None"):
                    values.setdefault((label, names[r["run"]], r["point"]), []).append(float(r[column]))
    lines = ["| group | model | " + " | ".join(points) + " |", "|---|---|" + "---|" * len(points)]
    for label in groups:
        for role in roles:
            cells = [fmt_mean_std(values[(label, role, p)]) if (label, role, p) in values else "—" for p in points]
            lines.append(f"| {label} | {role} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def superclass_table(groups: dict[str, list[Path]], roles: list[str]) -> str:
    """Within- and between-superclass r² of the logits (point E), mean ± std over folds."""
    lines = ["| group | model | within r² | between r² | within − between |", "|---|---|---|---|---|"]
    for label, dirs in groups.items():
        per_role: dict[str, dict[str, list[float]]] = {}
        for d in dirs:
            names = _role_names(_rows(d / "metrics.csv"), roles)
            for r in _rows(d / "superclass.csv"):
                v = per_role.setdefault(names[r["run"]], {"w": [], "b": [], "gap": []})
                w, b = float(r["within_r2"]), float(r["between_r2"])
                v["w"].append(w)
                v["b"].append(b)
                v["gap"].append(w - b)
        for role in roles:
            v = per_role[role]
            lines.append(f"| {label} | {role} | {fmt_mean_std(v['w'])} | {fmt_mean_std(v['b'])} | "
                         f"{fmt_mean_std(v['gap'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", action="append", required=True, help="LABEL=DIR[,DIR…]: one embed analysis per fold")
    ap.add_argument("--roles", default="UD,D", help="names of the models in --run order")
    args = ap.parse_args()
    groups = {}
    for item in args.group:
        label, _, dirs = item.partition("=")
        groups[label] = [Path(p) for p in dirs.split(",") if p]
    roles = args.roles.split(",")
    print("Ivis converged loss (Table 2)\n" + point_table(groups, roles, "ivis_loss"))
    print("\nClass-area ratio (90 % mass; Figs. 7–8)\n" + point_table(groups, roles, "class_area_ratio"))
    print("\nTrustworthiness (k = 10)\n" + point_table(groups, roles, "trustworthiness"))
    if all((d / "superclass.csv").exists() for dirs in groups.values() for d in dirs):
        print("\nSuperclass correlation of the logits (Fig. 5)\n" + superclass_table(groups, roles))
    else:
        print("\n(no superclass.csv: the dataset has no superclass groups)")


if __name__ == "__main__":
    main()
