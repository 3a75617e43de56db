#!/usr/bin/env bash
# Compare encoder settings on one GPU in one run. For each variant: export the same random checkpoint
# with that variant's export flags, serve it, run the full-ensemble bench, stop. Same card, checkpoint,
# workload and client in one run, so the variants' figures compare with each other (a figure from
# another run, even on the same kind of card, does not).
#   bash deploy/gpu/compare-on-gpu-host.sh BUNDLE_DIR RESULTS_DIR 'NAME:EXPORT FLAGS' ...
#   e.g.  ... .gpu /tmp/cmp 'padded:' 'packed:--torch-layout packed' \
#         'fp8:--torch-layout packed --precision fp8 --accuracy-gate report --gate-requests 48'  (random weights)
# The bundle as for bench-on-gpu-host.sh; '-' for none: this machine's python3 and tritonserver (a rehearsal
# on a CPU: PATH=.venv/bin:$PATH SHAPE=tiny, and '--gpu h100 --torch-device cpu' in each variant). First
# `pytest -m gpu` (the CUDA-graph tests), so that a variant's speed is only read where its answers are right.
# Environment: CONCURRENCY (1,32,128,256), DURATION_S (6), SHAPE (large), MAX_LENGTH (128), PORTS (the
# server's HTTP, gRPC and metrics ports: 18000,18001,18002). Leaves per variant its export/serve/bench logs
# and the bench's results.md/json in RESULTS_DIR, and prints one line per variant and level last; where
# $OUT names a folder, RESULTS_DIR is also archived there (compare.tar.gz), after every step.
set -uo pipefail
BUNDLE=${1:?usage: compare-on-gpu-host.sh BUNDLE_DIR RESULTS_DIR 'NAME:EXPORT FLAGS' ...}
RESULTS=${2:?usage: compare-on-gpu-host.sh BUNDLE_DIR RESULTS_DIR 'NAME:EXPORT FLAGS' ...}
shift 2
[ $# -gt 0 ] || { echo "name at least one variant, e.g. 'default:'" >&2; exit 2; }
CONCURRENCY=${CONCURRENCY:-1,32,128,256} DURATION_S=${DURATION_S:-6}
IFS=, read -r HTTP GRPC METRICS <<< "${PORTS:-18000,18001,18002}"
ARCHIVE=${OUT:+$OUT/compare.tar.gz}
mkdir -p "$RESULTS" && RESULTS=$(cd "$RESULTS" && pwd)
# shellcheck source=deploy/gpu/steps.sh
source deploy/gpu/steps.sh
work=$(mktemp -d)
trap 'serve_stop; rm -rf "$work"' EXIT
export PYTHONPATH=$PWD:$PWD/client PYTHONUNBUFFERED=1

if [ "$BUNDLE" = - ]; then  # a rehearsal: this machine's python3 (first on PATH) and its tritonserver
    MODEL_PYTHON=python3
    STATUS[setup]=ok
else
    step setup 120 '' bash deploy/gpu/setup-host.sh "$BUNDLE" && source /tmp/triton-env.sh || exit 1
fi
snapshot_gpus "$RESULTS/nvidia-smi-before.txt"
step checkpoint 180 setup "$MODEL_PYTHON" -m export.random_checkpoint "$work/checkpoint" --shape "${SHAPE:-large}" \
    --layout modelscope || exit 1
step gpu-tests 150 setup "$MODEL_PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests/unit

for variant in "$@"; do
    name=${variant%%:*}
    read -r -a flags <<< "${variant#*:}"
    step "$name-export" 180 checkpoint "$MODEL_PYTHON" -m export --model "$work/checkpoint" \
        --repository "$work/$name" --runtime python-torch --max-length "${MAX_LENGTH:-128}" "${flags[@]}" || continue
    # --front off: tritonserver itself, as every earlier run measured it (the fronts' cost is measured apart)
    serve_step "$name-serve" 120 "$name-export" python3 -m zsc_server.serve --repository "$work/$name" --http-port "$HTTP" \
        --grpc-port "$GRPC" --metrics-port "$METRICS" --front off
    step "$name-bench" 240 "$name-serve" python3 -m loadtest.bench --grpc-url "127.0.0.1:$GRPC" --http-url "127.0.0.1:$HTTP" \
        --metrics-url "http://127.0.0.1:$METRICS/metrics" --concurrency "$CONCURRENCY" --duration-s "$DURATION_S" \
        --warmup-s 1 --ceiling-s 4 --out "$RESULTS/$name" --note "variant $name: export flags '${flags[*]}'"
    serve_stop
done
snapshot_gpus "$RESULTS/nvidia-smi-after.txt"

python3 -m deploy.gpu_summary --levels "$RESULTS"
archive
! grep -qv $'\tok\t' "$RESULTS/steps.tsv"
