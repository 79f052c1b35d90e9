"""The project modules each stage script imports, found from the code itself.

A static walk over every ``import`` statement (top level and inside functions) from
``stages/<stage>.py`` through ``lib/echomotion``: a superset of what the import system
loads at run time, so a deferred import inside a function is seen too. Package
``__init__`` files hold only a docstring (a test enforces it), so importing a module
loads its own file and what it imports, nothing more.

``python tests/stage_imports.py [stage ...]`` prints the ``deps`` each stage needs, with a
folder wherever the stage imports every module in it.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "lib"
PACKAGE = LIB / "echomotion"


def module_file(name: str) -> Path | None:
    """The file of project module ``name`` (a dotted path under lib/), or None."""
    base = LIB.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(path: Path) -> set[str]:
    """Dotted names of every module an import statement in ``path`` may load."""
    tree = ast.parse(path.read_text(), str(path))
    here = _module_name(path) if path.is_relative_to(LIB) else ""
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)  # `from pkg import mod`
    return names


@cache
def project_imports(script: Path) -> frozenset[Path]:
    """Every project file ``script`` loads, transitively, itself excluded."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in _imported_names(todo.pop()):
            parts = name.split(".")
            if parts[0] != PACKAGE.name:
                continue
            for i in range(1, len(parts) + 1):  # a module loads its parent packages
                path = module_file(".".join(parts[:i]))
                if path is not None and path not in seen:
                    seen.add(path)
                    todo.append(path)
    return frozenset(seen)


def code_files(path: Path) -> set[Path]:
    """The Python files a dependency path covers."""
    if path.is_file():
        return {path} if path.suffix == ".py" else set()
    return {p for p in path.rglob("*.py") if "__pycache__" not in p.parts}


def is_docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def needed(stage: str, dvc_yaml: Path = REPO / "dvc.yaml") -> set[Path]:
    """Project files stage ``stage`` runs: its script and every module it imports, less
    the docstring-only package ``__init__`` files."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    words = stages[stage]["cmd"].split()
    script = REPO / words[-1]
    files = {script, *project_imports(script)}
    if "-m" in words:  # a launcher module (python -m echomotion.cli.launch ... SCRIPT) runs too
        launcher = module_file(words[words.index("-m") + 1])
        if launcher is not None:
            files |= {launcher, *project_imports(launcher)}
    return {f for f in files if not (f.name == "__init__.py" and is_docstring_only(f))}


def stage_deps(stage: str, dvc_yaml: Path = REPO / "dvc.yaml") -> list[str]:
    """The ``deps`` of ``stage`` as written in ``dvc_yaml``."""
    return list(yaml.safe_load(dvc_yaml.read_text())["stages"][stage].get("deps", []))


def uncovered(stage: str, deps: list[str]) -> list[str]:
    """Files ``stage`` runs that no entry of ``deps`` covers."""
    covered: set[Path] = set()
    for dep in deps:
        covered |= code_files(REPO / dep)
    return sorted(f.relative_to(REPO).as_posix() for f in needed(stage) - covered)


def unused(stage: str, deps: list[str]) -> list[str]:
    """Code entries of ``deps`` (under lib/ or stages/) holding a file ``stage`` never runs."""
    files = needed(stage)
    stale = []
    for dep in deps:
        if dep.split("/")[0] not in ("lib", "stages"):
            continue
        inside = {
            p
            for p in code_files(REPO / dep)
            if not (p.name == "__init__.py" and is_docstring_only(p))
        }
        if not inside or not inside <= files:
            stale.append(dep)
    return stale


def suggested_deps(stage: str) -> list[str]:
    """``needed(stage)`` as dvc.yaml deps: a folder wherever every module in it is needed."""
    files = needed(stage)
    deps: set[Path] = set()
    for f in files:
        top = f
        for parent in f.parents:
            if parent == PACKAGE or not parent.is_relative_to(PACKAGE):
                break
            inside = {p for p in code_files(parent) if p.name != "__init__.py"}
            if inside <= files:
                top = parent
        deps.add(top)
    return sorted(d.relative_to(REPO).as_posix() for d in deps)


if __name__ == "__main__":
    all_stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in sys.argv[1:] or all_stages:
        print(f"{name}:")
        for dep in suggested_deps(name):
            print(f"  - {dep}")
