"""The package layout as a contract, checked on the import graph of the code itself.

- no import cycle anywhere in ``echomotion`` (imports inside functions count: a deferred
  import hides a cycle, it does not remove it; ``if TYPE_CHECKING:`` blocks do not run);
- ``tasks/`` holds one package per DVC stage, named after it, with its ``run()`` and (when
  params.yaml has a section of that name) its params section;
- tasks never import another task; library packages import no task, no CLI and not the
  whole-file params model; the CLIs import the library and the params model, no task.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from echomotion.params import Params

LIB = REPO / "lib"
STAGES = sorted(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
SCHEMA_MODULES = {"echomotion.params", "echomotion.stage"}  # whole-file params, stage start


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports at run time (``from pkg import mod`` resolved to
    the module; ``from mod import name`` to ``mod``)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                prefix = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{prefix}.{base}" if node.module else prefix
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in (LIB / "echomotion").rglob("*.py")}
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


GRAPH = import_graph()


def kind(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("tasks", "cli"):
        return parts[1]
    return "schema" if module in SCHEMA_MODULES else "library"


def task_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if kind(module) == "tasks" and len(parts) > 2 else None


def test_the_package_has_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function():
    """The former layout's cycle (config -> params -> tasks -> prepare -> config, closed by
    an import deferred into a function) is found, as is a plain two-module loop."""
    source = "def f():\n    from echomotion.config import x\n"
    tree_imports = {
        n.module for n in _runtime_nodes(ast.parse(source)) if isinstance(n, ast.ImportFrom)
    }
    graph = {
        "echomotion.config": {"echomotion.params"},
        "echomotion.params": {"echomotion.tasks.prepare"},
        "echomotion.tasks.prepare": tree_imports,
        "echomotion.video": set(),
    }
    assert cycles(graph) == [["echomotion.config", "echomotion.params", "echomotion.tasks.prepare"]]
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    guarded = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import echomotion.x\n"
    assert not [n for n in _runtime_nodes(ast.parse(guarded)) if isinstance(n, ast.Import)]


def test_tasks_never_import_another_task():
    crossing = sorted(
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        if task_of(m)
        for d in deps
        if task_of(d) and task_of(d) != task_of(m)
    )
    assert crossing == []


def test_library_imports_no_task_no_cli_and_not_the_params_model():
    leaks = sorted(
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        if kind(m) == "library"
        for d in deps
        if kind(d) != "library"
    )
    assert leaks == []


def test_the_clis_import_only_the_library_and_the_params_model():
    leaks = sorted(
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        if kind(m) == "cli"
        for d in deps
        if kind(d) in ("tasks", "cli") and not d.startswith("echomotion.cli")
    )
    assert leaks == []


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_is_a_task_package_with_its_run_and_section(stage):
    run = importlib.import_module(f"echomotion.tasks.{stage}.run")
    assert callable(run.run), f"tasks/{stage}/run.py has no run()"
    script = (REPO / "stages" / f"{stage}.py").read_text()
    assert f"from echomotion.tasks.{stage}.run import run" in script
    if stage in Params.model_fields:
        section = Params.model_fields[stage].annotation
        home = importlib.import_module(f"echomotion.tasks.{stage}.params")
        assert getattr(home, section.__name__) is section


def test_every_task_package_is_a_stage():
    packages = {p.name for p in (LIB / "echomotion" / "tasks").iterdir() if p.is_dir()}
    assert packages - {"__pycache__"} == set(STAGES)


def test_each_store_module_states_its_path_and_schema():
    stores = sorted((LIB / "echomotion" / "stores").glob("*.py"))
    names = {p.stem for p in stores} - {"__init__", "ragged"}
    assert names == {"phantom_truth", "videos", "pseudo_flow", "pseudo_reid", "features", "latents"}
    dvc = (REPO / "dvc.yaml").read_text()
    for name in names:
        module = importlib.import_module(f"echomotion.stores.{name}")
        assert module.PATH in dvc, f"stores/{name}.py: PATH {module.PATH} is not in dvc.yaml"
        schemas = [v for k, v in vars(module).items() if k.endswith("SCHEMA")]
        assert schemas and all(isinstance(s, dict) for s in schemas), name


def test_only_the_stores_name_a_store_array_or_build_a_store_writer():
    """Outside ``stores/`` no code reads a store's array by name or builds a writer (the
    per-video table columns, documented in each schema, are read through the generic
    ``RaggedStore.table``)."""
    import re

    pattern = re.compile(r"\.(array|frames)\(\s*[\"']|RaggedStoreWriter\(")
    found = [
        f"{path.relative_to(LIB)}:{n}"
        for path in sorted((LIB / "echomotion").rglob("*.py"))
        if "stores" not in path.relative_to(LIB).parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []
