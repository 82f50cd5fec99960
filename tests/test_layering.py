"""The layer map of DESIGN.md holds: no module imports from a layer above its own.

Every ``kdlens`` import counts, wherever it sits: at module level, inside a function, or
under ``if TYPE_CHECKING`` (a type-only import is still a dependency of the design).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "kdlens"

# top to bottom, as in DESIGN.md "Layers (dependencies point down only)"
LAYERS = ["cli", "api", "demo", "report", "studies", "explain", "train", "distill", "models", "data",
          "store", "figures", "config"]
# shared base below every layer: the package itself, its error types and the name registry
BASE = {"", "errors", "registry", "imports"}


def layer_of(module: str) -> str | None:
    """Layer of a dotted ``kdlens…`` module name (``None`` for the shared base)."""
    parts = module.split(".")
    assert parts[0] == "kdlens", module
    head = parts[1] if len(parts) > 1 else ""
    if head in BASE:
        return None
    assert head in LAYERS, f"kdlens.{head} is in no layer of DESIGN.md; add it to the map"
    return head


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def kdlens_imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) of every import of kdlens in ``source`` (the code of ``module``),
    relative imports resolved."""
    tree = ast.parse(source, filename=module)
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # `from kdlens import x` and `from . import x` import the submodule x
            found += ([(node.lineno, f"{name}.{a.name}") for a in node.names]
                      if name == "kdlens" or node.module is None else [(node.lineno, name)])
    return sorted((line, m) for line, m in found if m == "kdlens" or m.startswith("kdlens."))


def violations() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        own = layer_of(module)
        for line, target in kdlens_imports(path.read_text(), module, path.name == "__init__.py"):
            their = layer_of(target)
            if their is None or (module == "kdlens" and target == "kdlens.api"):
                continue  # the package re-exports the top-level API (kdlens.train, …) on first use
            if own is None or LAYERS.index(their) < LAYERS.index(own):
                out.append(f"{path.relative_to(SRC.parents[1])}:{line}: {own or 'base'} imports "
                           f"{target} from the layer above ({their})")
    return out


def test_every_module_is_in_a_layer():
    for path in SRC.rglob("*.py"):
        layer_of(module_name(path))


def test_no_module_imports_from_a_layer_above():
    found = violations()
    assert not found, "imports against the layer map of DESIGN.md:\n" + "\n".join(found)


def test_the_check_sees_function_level_relative_and_type_only_imports():
    code = ("from typing import TYPE_CHECKING\nfrom . import sections\nfrom ..store import rundir\n"
            "if TYPE_CHECKING:\n    from kdlens.cli import app\ndef f():\n    import kdlens.studies.grid\n"
            "from kdlens import errors\nimport numpy\n")
    got = kdlens_imports(code, "kdlens.report.probe")
    assert got == [(2, "kdlens.report.sections"), (3, "kdlens.store"), (5, "kdlens.cli"),
                   (7, "kdlens.studies.grid"), (8, "kdlens.errors")]
    assert [layer_of(m) for _, m in got] == ["report", "store", "cli", "studies", None]
