"""What decides the floating-point bits of a run on this machine, as JSON: the CPU (model,
instruction-set flags, cache sizes, cores), the thread count, and the numeric libraries.

`make repro` reproduces dvc.lock byte for byte only where these match the machine that
wrote it (BLAS and oneDNN pick their kernels and blocking by instruction set, cache size and
threads). `python .ci/machine.py > .ci/machine.json` records it beside a new dvc.lock;
`python .ci/machine.py --diff .ci/machine.json` names what differs on a failing CI run.
"""

import hashlib
import json
import os
import platform
import sys
from pathlib import Path


def cpu() -> dict:
    info: dict = {"model": platform.processor() or platform.machine(), "flags_sha256": ""}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                info["model"] = value.strip()
            elif key.strip() == "flags":
                flags = " ".join(sorted(value.split()))
                info["flags_sha256"] = hashlib.sha256(flags.encode()).hexdigest()[:16]
                info["avx512"] = sorted(f for f in value.split() if f.startswith("avx512"))
                break
    caches = Path("/sys/devices/system/cpu/cpu0/cache")
    info["caches"] = sorted(
        f"L{(d / 'level').read_text().strip()} {(d / 'type').read_text().strip()} "
        f"{(d / 'size').read_text().strip()}"
        for d in caches.glob("index*")
        if (d / "size").exists()
    )
    info["cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return info


def libraries() -> dict:
    import numpy
    import torch

    config = torch.__config__.show()
    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "mkl": next((line.strip() for line in config.splitlines() if "Math Kernel" in line), None),
        "onednn": next((line.strip() for line in config.splitlines() if "MKL-DNN" in line), None),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def fingerprint() -> dict:
    return {"cpu": cpu(), "libraries": libraries()}


def main(argv: list[str]) -> int:
    now = fingerprint()
    if argv[:1] == ["--diff"]:
        then = json.loads(Path(argv[1]).read_text())
        differ = [
            f"  {group}.{key}: {then.get(group, {}).get(key)!r} -> {value!r}"
            for group, values in now.items()
            for key, value in values.items()
            if then.get(group, {}).get(key) != value
        ]
        if differ:
            print("this machine differs from the one that wrote dvc.lock (.ci/machine.json):")
            print("\n".join(differ))
        else:
            print("this machine matches the one that wrote dvc.lock (.ci/machine.json)")
        return 0
    print(json.dumps(now, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
