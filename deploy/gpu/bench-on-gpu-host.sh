#!/usr/bin/env bash
# The GPU issue's measurement in one command, on a lent GPU host that has torch + CUDA but no network
# and no Triton (see DEVELOPERS.md: the device tool). From the repository root:
#   here:      ../shared/gpu/make-bundle.sh .gpu && cp ../shared/gpu/setup-host.sh .gpu/   (.gpu is git-ignored)
#   GPU host:  bash deploy/gpu/bench-on-gpu-host.sh .gpu         (device tool: carry [".gpu"])
# It unpacks the offline tritonserver bundle, writes a random checkpoint in the StructBERT-large shape
# (compute identical to the real one), exports it for the python-torch runtime with the h100 profile
# (FP16, CUDA graphs), and runs the full-ensemble benchmark with its raw encoder ceiling. Results go to
# $OUT (the device tool brings them back) or loadtest/results/. PERF=1 adds the perf_analyzer cross-check.
set -euo pipefail
BUNDLE=${1:?usage: bench-on-gpu-host.sh BUNDLE_DIR}
GPU_PROFILE=${GPU_PROFILE:-h100}
MAX_LENGTH=${MAX_LENGTH:-128}
RESULTS=${OUT:-loadtest/results}
WORK=$(mktemp -d)

bash "$BUNDLE/setup-host.sh" "$BUNDLE"
# shellcheck disable=SC1091
source /tmp/triton-env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m export.random_checkpoint "$WORK/structbert-large" --shape large --layout modelscope
python3 -m export --model "$WORK/structbert-large" --repository "$WORK/repository" --gpu "$GPU_PROFILE" \
    --max-length "$MAX_LENGTH" --runtime "${RUNTIME:-python-torch}"
python3 -m loadtest.bench --repository "$WORK/repository" --out "$RESULTS" \
    --concurrency "${BENCH_CONCURRENCY:-1,5,10,32,64,128}" --duration-s "${BENCH_DURATION:-20}" \
    --note "random weights in the StructBERT-large shape"
# PERF=1: then make bench's client and perf_analyzer level by level on the same model (loadtest.perf_vs_bench);
# perf_analyzer from `make perf-tools` here (carry .tools beside .gpu)
if [ "${PERF:-0}" = 1 ]; then
    python3 -m loadtest.perf_vs_bench --repository "$WORK/repository" --out "$RESULTS" \
        --tools "${PERF_TOOLS:-.tools/perf-analyzer}" --concurrency "${BENCH_CONCURRENCY:-1,5,10,32,64,128}" \
        --duration-s "${BENCH_DURATION:-20}" --note "random weights in the StructBERT-large shape"
fi
