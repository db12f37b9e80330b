#!/usr/bin/env bash
# Wheels for the lent GPU machine (Python 3.12, no network there): the packages of odezoo's
# `recipes` extra that its image lacks (see the device tool's KINDS.md), fetched here into
# .whl/ (git-ignored), carried with the call, installed there by gpu_smoke.sh.
#
#     bash benchmarks/gpu_wheels.sh        # once, on this machine
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
# versions as in this project's environment.  pydantic_core is compiled: its CPython 3.12
# manylinux wheel; the others are pure Python: built or fetched as py3 wheels.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl pydantic_core==2.50.5
"$PY" -m pip wheel -q --no-deps -w .whl advertorch==0.2.3 mlxtend==0.25.0 pydantic==2.14.4 annotated-types==0.8.0 \
    typing-inspection==0.4.5 torchattacks==3.5.1 submitit==1.5.4
ls -la .whl
