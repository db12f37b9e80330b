#!/usr/bin/env bash
# One shot for a session with a lent GPU: exactness cross-checks on CUDA, the CUDA benchmark
# table (compile and bf16 rows included), and a timed paper-scale CIFAR-10 epoch (the Table 2
# recipe: FGSM-random training with solver smoothing) on synthetic data of the real shape, in
# float32 and bf16.  Run from anywhere:
#
#     bash benchmarks/gpu_smoke.sh                   # every step; results in benchmarks/results/
#     STEPS="check epoch" bash benchmarks/gpu_smoke.sh   # some steps (one device call is <= 10 min:
#     STEPS=bench bash benchmarks/gpu_smoke.sh           #  about 5 + 8 + 2×4 min here)
#     OUT=/some/dir bash benchmarks/gpu_smoke.sh
#
# Needs python with torch (CUDA build), torchdiffeq, numpy and pluggy for check and bench;
# odezoo itself is taken from this checkout.  The epoch step needs the `recipes` extra: on a
# machine without network, run `bash benchmarks/gpu_wheels.sh` here first and carry `.whl`;
# this script installs those wheels into /tmp/site.  Extra arguments go to benchmarks/run.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-benchmarks/results}"
STEPS="${STEPS:-check bench epoch}"
mkdir -p "$OUT"
if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" -c 'import sys, torch, torchdiffeq; print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda, "| torchdiffeq", torchdiffeq.__version__, "| cuda available:", torch.cuda.is_available())'

if [[ " $STEPS " == *" check "* ]]; then
    echo "== cross-checks on CUDA (float64, tolerance 1e-12)"
    timeout 300 "$PY" benchmarks/cuda_crosscheck.py --device cuda 2>&1 | tee "$OUT/cuda_crosscheck.txt"
fi

if [[ " $STEPS " == *" bench "* ]]; then
    echo "== benchmark on CUDA"
    timeout 480 "$PY" benchmarks/run.py --device cuda --budget 2 --out "$OUT/cuda.json" "$@" 2>&1 | tee "$OUT/cuda.txt"
fi

if [[ " $STEPS " == *" epoch "* ]]; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
        export PYTHONPATH="$PYTHONPATH:/tmp/site"
    fi
    for precision in fp32 bf16; do
        echo "== one paper-scale CIFAR-10 epoch, Table 2 recipe, synthetic data of the real shape, $precision"
        timeout 240 "$PY" recipes/train.py --config recipes/configs/cifar10_rk2_fgsm_random_smoothing.yaml \
            --set dataset=synthetic-cifar10 --set num_workers=4 --epochs 1 --precision "$precision" --device cuda \
            --out "/tmp/paper_epoch_$precision" --quiet 2>&1 | tee "$OUT/paper_epoch_$precision.txt"
        cp "/tmp/paper_epoch_$precision/metrics.jsonl" "$OUT/paper_epoch_$precision.jsonl"  # seconds per epoch
    done
fi
