#!/usr/bin/env bash
# The GPU check, in one go, on one GPU machine (written for H100/H200-class cards:
# under 8 minutes there), with no network access:
#
#   * bf16 pretraining of phi-1-small for 300 steps of 8 x 2048 tokens through phi1's
#     training loop: SDPA (FlashAttention kernels), fused AdamW, torch.compile per layer;
#     tokens/s and MFU against the device's datasheet peak (phi1.train.metrics.PEAK_FLOPS);
#   * the same under FSDP2 in one torchrun process, with a sharded checkpoint;
#   * embedding documents/s (the quality filter's all-MiniLM-L6-v2, bf16, batched);
#   * generation new tokens/s from the trained model (bf16, batched greedy).
#
# Writes one Markdown block to paste into bench/RESULTS.md (and a .json beside it):
#
#   bash bench/gpu_check.sh [RESULTS.md]          # default: bench/gpu_check_results.md
#
# Needs the project's Python dependencies with a CUDA build of torch (PYTHON=... to
# choose the interpreter; the repository's .venv is used when it exists). Every section
# runs even when another fails; the exit status says whether all passed.
# PHI1_GPU_CHECK_SMOKE=1 runs the same code at toy sizes on any device (CI does, on CPU);
# PHI1_GPU_CHECK_COMPILE=0|1 forces torch.compile off or on.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=${1:-bench/gpu_check_results.md}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ARGS=(all --out "$OUT")
if [ "${PHI1_GPU_CHECK_SMOKE:-0}" = "1" ]; then ARGS+=(--smoke); fi
if [ "${PHI1_GPU_CHECK_SMOKE:-0}" != "1" ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1)); set PYTHON to a CUDA build" >&2
    exit 2
fi
exec "$PY" bench/gpu_check.py "${ARGS[@]}"
