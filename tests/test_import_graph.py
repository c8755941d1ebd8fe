"""The package's import graph: stages import only down the pipeline, and modules form no cycle.

Read from the source with `ast` (every import, at module level or inside a function, and
those under TYPE_CHECKING too): a lazy import up the pipeline is still a dependency up it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lookalike

PACKAGE = Path(lookalike.__file__).parent
# Imported by every stage: errors, the registries, atomic files, the settings, how to type
# the command, the version, vector maths.
FOUNDATION = {"errors", "registry", "fileio", "config", "invocation", "version", "vectors"}
# The stages, in pipeline order: a module may import its own stage and those before it.
STAGES = [
    "load", "render", "detect", "embed", "index", "fuse", "store", "train", "indexing",
    "engines", "search", "evaluate", "groups", "demo", "web", "cli", "__main__", "",
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, modules: set[str]) -> set[str]:
    """The lookalike modules `path` imports (a name imported from a package counts as its
    submodule when it is one)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "lookalike")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*head, *([base] if base else [])])
            if base.split(".")[0] != "lookalike":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return found - {name}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported(p, modules) for p in paths}


def stage_of(module: str) -> str | None:
    """The stage of `module`, None for a foundation module."""
    parts = module.split(".")[1:]
    if not parts:
        return ""
    if len(parts) == 1 and parts[0] in FOUNDATION:
        return None
    return parts[0]


def test_every_module_belongs_to_a_stage_or_the_foundation():
    unknown = {m for m in graph() if stage_of(m) not in (None, *STAGES)}
    assert not unknown, f"modules outside the stages {STAGES} and {sorted(FOUNDATION)}: {unknown}"


def upward_imports() -> list[str]:
    wrong = []
    for module, targets in graph().items():
        here = stage_of(module)
        for target in sorted(targets):
            there = stage_of(target)
            if there is None or there == here:
                continue
            if here is None or STAGES.index(there) > STAGES.index(here):
                wrong.append(f"{module} -> {target}")
    return wrong


def test_imports_point_down_the_pipeline():
    wrong = upward_imports()
    assert not wrong, "imports up the pipeline:\n" + "\n".join(wrong)


def test_no_import_cycle():
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
