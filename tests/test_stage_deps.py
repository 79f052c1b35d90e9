"""Each stage's code deps in dvc.yaml are derived from what its script imports: every
project module it runs is covered (so a change to it re-runs the stage and discards its
checkpoints), and no code dep is listed that it does not run (so it is not re-run for
nothing). ``python tests/stage_imports.py`` prints the deps to write."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from stage_imports import (
    PACKAGE,
    is_docstring_only,
    needed,
    stage_deps,
    suggested_deps,
    uncovered,
    unused,
)

from conftest import REPO

STAGES = sorted(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])


@pytest.mark.parametrize("stage", STAGES)
def test_deps_cover_every_module_the_stage_imports(stage):
    missing = uncovered(stage, stage_deps(stage))
    assert not missing, (
        f"dvc.yaml: stage {stage!r} runs code its deps miss: {missing}; "
        f"write `python tests/stage_imports.py {stage}`"
    )


@pytest.mark.parametrize("stage", STAGES)
def test_deps_list_no_code_the_stage_does_not_run(stage):
    stale = unused(stage, stage_deps(stage))
    assert not stale, f"dvc.yaml: stage {stage!r} depends on code it never imports: {stale}"


def test_the_check_fails_on_the_hand_written_mcdm_deps_it_replaced():
    """The deps mcdm_train had before they were derived, in today's layout: `video_motion`
    (the features store's reader, stores/features.py) runs in the stage but was not among
    them."""
    old = [
        "stages/mcdm_train.py",
        "lib/echomotion/tasks/mcdm_train",
        "lib/echomotion/diffusion",
        "lib/echomotion/training",
        "lib/echomotion/stores/ragged.py",
    ]
    assert "lib/echomotion/stores/features.py" in uncovered("mcdm_train", old)
    assert not uncovered("mcdm_train", suggested_deps("mcdm_train"))


def test_package_inits_hold_only_a_docstring():
    """An eager `__init__` would make every importer depend on the whole package."""
    busy = [p for p in PACKAGE.rglob("__init__.py") if not is_docstring_only(p)]
    assert not busy, f"package __init__ files with code: {busy}"


_RUNTIME = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("stage_under_test", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(m.__file__ for m in list(sys.modules.values())
                        if getattr(m, "__file__", None) and "/lib/echomotion/" in m.__file__)))
"""


@pytest.mark.parametrize("stage", ["phantom", "mcdm_train", "evaluate"])
def test_static_analysis_sees_everything_the_import_system_loads(stage):
    script = REPO / "stages" / f"{stage}.py"
    out = subprocess.run(
        [sys.executable, "-c", _RUNTIME, str(script)], capture_output=True, text=True, check=True
    )
    loaded = {REPO / "lib" / f.split("/lib/", 1)[1] for f in json.loads(out.stdout)}
    loaded = {f for f in loaded if not (f.name == "__init__.py" and is_docstring_only(f))}
    assert loaded, "the stage script loaded no project module"
    assert loaded <= needed(stage), sorted(str(f) for f in loaded - needed(stage))
