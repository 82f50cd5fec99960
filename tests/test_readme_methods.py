"""The README's method table says what the registry does (name, kind, default weights,
hyper-parameters), so the documentation cannot drift from the code."""

import re
from pathlib import Path

from kdlens.distill import describe_methods

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_rows() -> dict[str, list[str]]:
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `([a-z_]+)` \| (logit|hint|relation|[a-z]+) \|", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in line.strip("|").split("|")]
    return rows


def test_readme_method_table_matches_the_registry():
    rows = _readme_rows()
    described = {row["name"]: row for row in describe_methods()}
    assert set(rows) == set(described), f"README lacks {set(described) - set(rows)}, has extra {set(rows) - set(described)}"
    for name, row in described.items():
        cells = rows[name]
        assert cells[1] == row["kind"], name
        assert cells[2] == f"{row['gamma']:g} / {row['alpha']:g} / {row['beta']:g}", name
        hyper = ", ".join(f"{k}={v}" for k, v in row["hyper"].items() if v is not None)
        assert cells[3] == hyper, f"{name}: README {cells[3]!r} vs registry {hyper!r}"
