#!/usr/bin/env bash
# The GPU check on one CUDA device at the paper's shapes (presets/paper.yaml), bf16 and fp16,
# in under 8 minutes. Options pass through, e.g. --batch 8 --peak-tflops 989; see --help.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python benchmarks/gpu_check.py --device cuda "$@"
