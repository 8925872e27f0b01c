#!/usr/bin/env bash
# The GPU goals in one prepared run: bench/bench_gpu.py with the project's venv (scripts/setup) if it is here,
# else the machine's python3 with torch, numpy and safetensors (a GPU machine's image); installs nothing.
#   bench/gpu_check.sh [bench_gpu.py options]      exit 0: every goal met, 1: a goal missed, 2: no CUDA device
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
PYTHONUNBUFFERED=1 exec "$PYTHON" bench/bench_gpu.py "$@"
