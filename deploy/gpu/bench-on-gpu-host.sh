#!/usr/bin/env bash
# The GPU measurement in one command, on a GPU host that has PyTorch + CUDA but no network and no Triton:
#   1. where pip's package index is reachable:  make gpu-bundle   (deploy/gpu/make-bundle.sh .gpu, ~58 MiB;
#      .gpu is git-ignored)
#   2. copy the repository with .gpu to the GPU host, and from its root:  bash deploy/gpu/bench-on-gpu-host.sh .gpu
# With '-' for the bundle it is its own rehearsal (make gpu-rehearsal): the same steps and commands on this
# machine's CPU, python3 (first on PATH) and tritonserver, with a tiny model and short durations.
# Steps, each with its time limit and log (deploy/gpu/steps.sh; one that fails is recorded and the run goes
# on with every step that does not need it):
#   setup            unpack the bundle (tritonserver, numpy 1.26, clients: setup-host.sh)
#   imports          the model side's imports (export, memory probe, GPU tests: the host's numpy 2) are there,
#                    at versions that fit (rehearsal: and on the GPU host or in the bundle)
#   imports-serving  likewise for the serving side (stubs, launcher, bench, Locust: numpy 1.26)
#   checkpoint       random weights in the StructBERT-large shape (rehearsal: tiny)
#   export           python-torch with the card's profile (FP16, CUDA graphs); rehearsal: h100's, on the CPU
#   gpu-tests        pytest -m gpu (skipped without CUDA)
#   memory           GPU memory and CUDA-graph time per (batch, sequence bucket), padded and packed layouts,
#                    FP16 and FP8 (where the card has FP8 tensor cores) (python -m export.gpu_memory)
#   serve            the launcher on the export, in the background
#   bench            full-ensemble concurrency sweep, every answer checked, raw encoder ceiling
#   loadtest         Locust at 1, 5, 10 users on the same server
#   stop             the server, cleanly
# Environment: RESULTS (loadtest/results/gpu-run-<date>), BUDGET_S (480: the whole run), GPU (the export's
# --gpu: auto), PORTS (HTTP,gRPC,metrics: 18000,18001,18002), OUT (a folder: gpu-run.tar.gz there, rewritten
# after every step, and summary.md at the end). Prints a one-line summary last; exit 1 when a step was not ok.
set -uo pipefail
BUNDLE=${1:?usage: bench-on-gpu-host.sh BUNDLE_DIR (or - for the rehearsal on this CPU)}
HERE=deploy/gpu
RESULTS=${RESULTS:-loadtest/results/gpu-run-$(date +%Y%m%d-%H%M%S)}
BUDGET_S=${BUDGET_S:-480}
ARCHIVE=${OUT:+$OUT/gpu-run.tar.gz}
IFS=, read -r HTTP GRPC METRICS <<< "${PORTS:-18000,18001,18002}"
mkdir -p "$RESULTS" && RESULTS=$(cd "$RESULTS" && pwd)
# shellcheck source=deploy/gpu/steps.sh
source "$HERE/steps.sh"
work=$(mktemp -d)
trap 'serve_stop; rm -rf "$work"' EXIT
export PYTHONPATH=$PWD:$PWD/client PYTHONUNBUFFERED=1

if [ "$BUNDLE" = - ]; then  # the rehearsal: what differs is sizes, the device and where tritonserver comes from
    SHAPE=tiny MAX_LENGTH=64 BATCHES=1,4 SEQUENCES=16,32 CONCURRENCY=1,4 DURATION_S=2 WARMUP_S=0.5 CEILING_S=1
    USERS=2 LOCUST_DURATION=3s MEMORY_DEVICE=cpu MODEL_PYTHON=python3
    device=(--gpu "${GPU:-h100}" --torch-device cpu)
    imports=(--host-packages "$HERE/host-packages.txt" --bundle-requirements "$HERE/bundle-requirements.txt")
    step setup 120 '' python3 -c "from zsc_server.triton_install import triton_binary
print('rehearsal: the local tritonserver', triton_binary())"
else
    # bench + Locust: 6 × 14 s + 8 s and 3 × 25 s, within the 8 minutes with setup, export and memory (~4 min)
    SHAPE=large MAX_LENGTH=128 BATCHES=1,8,32,128,256,512 SEQUENCES=16,32,64,128 CONCURRENCY=1,5,10,32,64,128
    DURATION_S=12 WARMUP_S=2 CEILING_S=8 USERS=1,5,10 LOCUST_DURATION=15s MEMORY_DEVICE=cuda
    device=(--gpu "${GPU:-auto}")
    imports=()
    # the serving side (python3) gets numpy 1.26 for tritonserver's stub; $MODEL_PYTHON keeps the host's numpy 2,
    # which its transformers needs (through scipy)
    step setup 120 '' bash "$HERE/setup-host.sh" "$BUNDLE" && source /tmp/triton-env.sh
fi
snapshot_gpus "$RESULTS/nvidia-smi-before.txt"
served=(--grpc-url "127.0.0.1:$GRPC" --metrics-url "http://127.0.0.1:$METRICS/metrics")

step imports 90 setup "$MODEL_PYTHON" -m deploy.gpu_imports --side model "${imports[@]}"
step imports-serving 90 setup python3 -m deploy.gpu_imports --side serving "${imports[@]}"
step checkpoint 180 setup "$MODEL_PYTHON" -m export.random_checkpoint "$work/checkpoint" --shape "$SHAPE" \
    --layout modelscope
step export 300 checkpoint "$MODEL_PYTHON" -m export --model "$work/checkpoint" --repository "$work/repository" \
    --runtime python-torch --max-length "$MAX_LENGTH" "${device[@]}"
step gpu-tests 150 setup "$MODEL_PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests/unit
step memory 150 export "$MODEL_PYTHON" -m export.gpu_memory --model "$work/repository/encoder/1/model.pt" \
    --out "$RESULTS" --batches "$BATCHES" --sequences "$SEQUENCES" --device "$MEMORY_DEVICE" --precisions fp16,fp8
# --front off: tritonserver itself, as the earlier runs measured it; GPU memory: nvidia-smi samples (bench)
serve_step serve 240 export python3 -m zsc_server.serve --repository "$work/repository" --http-port "$HTTP" \
    --grpc-port "$GRPC" --metrics-port "$METRICS" --front off
step bench 240 serve python3 -m loadtest.bench "${served[@]}" --http-url "127.0.0.1:$HTTP" \
    --concurrency "$CONCURRENCY" --duration-s "$DURATION_S" --warmup-s "$WARMUP_S" --ceiling-s "$CEILING_S" \
    --out "$RESULTS" --note "random weights in the StructBERT-$SHAPE shape"
step loadtest 150 serve python3 -m loadtest.run --host "http://127.0.0.1:$HTTP" "${served[@]}" --users "$USERS" \
    --duration "$LOCUST_DURATION" --out "$RESULTS" --name locust --report
stop_step stop
snapshot_gpus "$RESULTS/nvidia-smi-after.txt"

python3 -m deploy.gpu_summary "$RESULTS"
code=$?
archive
[ -n "${OUT:-}" ] && cp "$RESULTS/summary.md" "$OUT/summary.md"
exit $code
