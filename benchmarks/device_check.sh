#!/usr/bin/env bash
# The prepared accelerator check: the deviceless vs on-device compile's memory, correctness against the CPU
# backend, bf16 step speed of DeCLIP and CLIP ViT-B/32 and DeCLIP ViT-B/16 (benchmarks/device_check.py). Under
# 8 minutes on one H100/H200.
#
#   bash benchmarks/device_check.sh [--dry-run] OUTDIR      # writes OUTDIR/device_check.{json,md}
#
# Runs $PYTHON (default: `python3` from PATH) with that environment's JAX, flax, optax and orbax-checkpoint: on a
# machine of yours, the GPU install (PYTHON=.venv/bin/python after pip install -r requirements-gpu.txt, which
# also brings XLA's GPU compiler for the deviceless compile); on a lent machine, its own JAX stack. What it lacks
# (benchmarks/device_wheels.txt: ml_collections) comes from the wheels in ./device_wheels (or $DEVICE_WHEELS),
# fetched beforehand with
#   pip download --no-deps --only-binary=:all: -d device_wheels -r benchmarks/device_wheels.txt
# Pure-Python wheels are imported straight from the .whl files (no pip, no network needed there).
# --dry-run: every line on the CPU with tiny shapes, in seconds (CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
dry_run=()
if [ "${1:-}" = "--dry-run" ]; then dry_run=(--dry_run); shift; fi
out="${1:?usage: bash benchmarks/device_check.sh [--dry-run] OUTDIR}"
mkdir -p "$out"

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import ml_collections" 2>/dev/null; then
  wheels="${DEVICE_WHEELS:-device_wheels}"
  for wheel in "$wheels"/*.whl; do
    [ -e "$wheel" ] || { echo "ml_collections is not installed and $wheels/ has no wheels: see benchmarks/device_wheels.txt" >&2; exit 1; }
    export PYTHONPATH="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")${PYTHONPATH:+:$PYTHONPATH}"
  done
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"  # JAX's default is 0.75.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
if [ ${#dry_run[@]} -gt 0 ]; then export JAX_PLATFORMS=cpu; fi
exec "$PYTHON" benchmarks/device_check.py --out="$out" "${dry_run[@]}"
