"""The package's import graph: no circles, and no import running back up the layers of design.md.

Layers, from the bottom: shared foundations (errors, validation, file writing, metrics, reports,
checkpoints) -> data -> backbones -> features -> probes -> evaluation -> analysis / training / tasks
-> cli. A module may import from its own layer or a lower one, never a higher one; imports inside
functions count as much as those at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "deepfeat"

#: first component below ``deepfeat`` -> layer (a higher number is further from the input)
LAYERS = {
    "_version": 0,
    "_runtime": 0,
    "errors": 0,
    "validation": 0,
    "fileio": 0,
    "metrics": 0,
    "checkpoint": 0,
    "report": 0,
    "data": 1,
    "backbones": 2,
    "features": 3,
    "kernels": 3,
    "probes": 4,
    "evaluation": 5,
    "analysis": 6,
    "training": 6,
    "tasks": 6,
    "distributed": 6,
    "cli": 7,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """deepfeat modules imported anywhere in the file (resolved to the deepest known module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            if not t.startswith("deepfeat"):
                continue
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for target in imports_of(name, path, known):
            # importing a.b.c runs the __init__ of a.b first, unless we are inside a.b ourselves
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                ancestor = ".".join(parts[:i])
                if ancestor in known and not (name + ".").startswith(ancestor + "."):
                    deps.add(ancestor)
        deps.discard(name)
        edges[name] = deps
    return edges


def layer(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_module_has_a_layer():
    unknown = sorted(n for n in modules() if n != "deepfeat" and layer(n) is None)
    assert not unknown, f"modules outside the known layers (add them to LAYERS and design.md): {unknown}"


def test_no_import_runs_back_up_a_layer():
    bad = []
    for name, deps in graph().items():
        if name == "deepfeat":
            continue
        for dep in deps:
            if dep == "deepfeat":
                bad.append(f"{name} imports the top-level package (import the submodule instead)")
            elif layer(dep) is not None and layer(dep) > layer(name):
                bad.append(f"{name} (layer {layer(name)}) imports {dep} (layer {layer(dep)})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_circles():
    edges = graph()
    seen: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if seen.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in seen:
                visit(dep, stack)
        stack.pop()
        seen[node] = 2

    for node in sorted(edges):
        if node not in seen:
            visit(node, [])
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("folder", ["experiments", "benchmarks"])
def test_scripts_use_the_library_not_the_cli(folder):
    root = SRC.parent / folder
    offenders = [
        str(p.relative_to(SRC.parent))
        for p in root.rglob("*.py")
        if "deepfeat.cli" in p.read_text(encoding="utf-8")
    ]
    assert not offenders, f"scripts importing deepfeat.cli (use the library API): {offenders}"


def test_no_source_file_over_400_lines():
    long = {
        str(p.relative_to(SRC)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420
    }
    assert not long, f"files to split along their seams: {long}"
