"""`dvc status` on the default pipeline with nothing changed (goal: <= 3 s).

Run after `make repro`:  python benchmarks/dvc_status.py
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import REPO


def main() -> None:
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    times, out = [], ""
    for _ in range(3):
        t = time.perf_counter()
        out = subprocess.run([dvc, "status"], cwd=REPO, capture_output=True, text=True).stdout
        times.append(time.perf_counter() - t)
    files = (
        sum(1 for p in (REPO / "data").rglob("*") if p.is_file()) if (REPO / "data").exists() else 0
    )
    print(f"dvc status: {out.strip()!r}")
    print(f"tracked files under data/: {files}")
    print(f"dvc status median {statistics.median(times):.2f} s over 3 runs (goal <= 3 s)")


if __name__ == "__main__":
    main()
