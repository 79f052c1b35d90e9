"""The GPU check script runs on the CPU at tiny shapes and reports every stage."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

from conftest import REPO

STAGES = ("flow", "reid", "mafe", "vae", "mcdm", "ef", "lv", "latents", "features", "sample")


def gpu_check(*args: str) -> str:
    """stdout of ``benchmarks/gpu_check.py --device cpu --tiny ARGS`` (which must succeed)."""
    run = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--tiny", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # tiny models: one thread is fastest
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def table_rows(out: str) -> dict[tuple[str, str], list[str]]:
    """{(stage, precision): cells} of the printed table."""
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ")]
    return {(r[0].strip(), r[2].strip()): [c.strip() for c in r] for r in rows[1:]}


def finite(text: str, pattern: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    value = float(match.group(1))
    assert math.isfinite(value) and value > 0, match.group(0)
    return value


def test_tiny_cpu_run_reports_every_stage_throughput_and_sampling():
    out = gpu_check()
    rows = table_rows(out)
    for stage in STAGES:
        cells = rows[(stage, "bf16")]
        assert math.isfinite(float(cells[4])) and float(cells[4]) > 0, cells
        assert cells[5] == "-" and cells[6] == "", cells  # no CUDA memory counter on the CPU
        assert "fp16 autocast is off on the CPU" in rows[(stage, "fp16")][6]
    finite(out, r"mcdm training bf16: 2 x 4 frames .*?: ([\d.]+) samples/s")
    assert "MFU unknown" in out  # no known peak for a CPU
    finite(out, r"sampling bf16 ddpm 4 steps: ([\d.]+) s/video")
    finite(out, r"sampling bf16 dpmsolver\+\+ 2 steps: ([\d.]+) s/video")
    assert "sampling fp16 ddpm 4 steps: skipped" in out


def test_spent_budget_skips_the_rest_and_says_so():
    out = gpu_check("--budget-s", "0", "--precisions", "bf16")
    assert all("--budget-s 0 spent" in table_rows(out)[(s, "bf16")][6] for s in STAGES)
    assert "budget spent; skipped: mcdm bf16, ddpm bf16" in out
