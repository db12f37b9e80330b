#!/usr/bin/env bash
# One shot for a session with a lent GPU: exactness cross-checks on CUDA, then the CUDA
# benchmark table.  Run from anywhere:
#
#     bash benchmarks/gpu_smoke.sh            # results in benchmarks/results/
#     OUT=/some/dir bash benchmarks/gpu_smoke.sh
#
# Needs python with torch (CUDA build), torchdiffeq, numpy and pluggy; odezoo itself is
# taken from this checkout.  Extra arguments go to benchmarks/run.py (e.g. --reps 10).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" -c 'import sys, torch, torchdiffeq; print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda, "| torchdiffeq", torchdiffeq.__version__, "| cuda available:", torch.cuda.is_available())'

echo "== cross-checks on CUDA (float64, tolerance 1e-12)"
timeout 300 "$PY" benchmarks/cuda_crosscheck.py --device cuda 2>&1 | tee "$OUT/cuda_crosscheck.txt"

echo "== benchmark on CUDA"
timeout 480 "$PY" benchmarks/run.py --device cuda --budget 2 --out "$OUT/cuda.json" "$@" 2>&1 | tee "$OUT/cuda.txt"
