"""The stages that never run a network start without importing torch (about a second of
start-up each, and a multi-GB import on a GPU machine's first run)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _top_level_imports(stage: str) -> str:
    tree = ast.parse((REPO / "stages" / f"{stage}.py").read_text())
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return ast.unparse(ast.Module(imports, type_ignores=[]))


@pytest.mark.parametrize("stage", ["phantom", "prepare", "edes_eval"])
def test_stage_without_a_network_does_not_import_torch(stage: str) -> None:
    script = _top_level_imports(stage) + "\nimport sys\nprint('torch' in sys.modules)\n"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False", f"stages/{stage}.py imports torch"
