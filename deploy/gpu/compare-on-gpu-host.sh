#!/usr/bin/env bash
# Compare encoder settings on one GPU in one run. For each variant: export the same random checkpoint
# with that variant's export flags, serve it, run the full-ensemble bench, stop. Same card, checkpoint,
# workload and client in one run, so the variants' figures compare with each other (a figure from
# another run, even on the same kind of card, does not).
#   bash deploy/gpu/compare-on-gpu-host.sh BUNDLE_DIR RESULTS_DIR 'NAME:EXPORT FLAGS' ...
#   e.g.  ... .gpu /tmp/cmp 'pad:--replay-overhead-tokens 1000000000' 'split:' 'split100:--queue-delay-us 100'
# The bundle as for bench-on-gpu-host.sh; '-' for none: this machine's python3 and tritonserver (a rehearsal
# on a CPU: PATH=.venv/bin:$PATH SHAPE=tiny, and '--gpu h100 --torch-device cpu' in each variant). First
# `pytest -m gpu` (the CUDA-graph tests), so that a variant's speed is only read where its answers are right.
# Environment: CONCURRENCY (1,32,128,256), DURATION_S (6), SHAPE (large), MAX_LENGTH (128), PORTS (the
# server's HTTP, gRPC and metrics ports: 18000,18001,18002). Leaves per variant its export/serve/bench logs
# and the bench's results.md/json in RESULTS_DIR, and prints one line per variant and level last; where
# $OUT names a folder, RESULTS_DIR is also archived there (compare.tar.gz), after every variant.
set -uo pipefail
BUNDLE=${1:?usage: compare-on-gpu-host.sh BUNDLE_DIR RESULTS_DIR 'NAME:EXPORT FLAGS' ...}
RESULTS=${2:?usage: compare-on-gpu-host.sh BUNDLE_DIR RESULTS_DIR 'NAME:EXPORT FLAGS' ...}
shift 2
[ $# -gt 0 ] || { echo "name at least one variant, e.g. 'default:'" >&2; exit 2; }
CONCURRENCY=${CONCURRENCY:-1,32,128,256} DURATION_S=${DURATION_S:-6}
IFS=, read -r HTTP GRPC METRICS <<< "${PORTS:-18000,18001,18002}"
mkdir -p "$RESULTS" && RESULTS=$(cd "$RESULTS" && pwd)
work=$(mktemp -d) failed=0
trap 'rm -rf "$work"' EXIT

archive() { [ -n "${OUT:-}" ] && tar czf "$OUT/compare.tar.gz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"; }
step() {  # step NAME LIMIT_S COMMAND...: its log in RESULTS, its outcome in summary.txt
    local name=$1 limit=$2
    shift 2
    timeout "$limit" "$@" > "$RESULTS/$name.log" 2>&1
    local code=$?
    echo "$name: exit $code" | tee -a "$RESULTS/summary.txt"
    [ $code -eq 0 ] || failed=1
    return $code
}

if [ "$BUNDLE" = - ]; then  # a rehearsal: this machine's python3 (first on PATH) and its tritonserver
    MODEL_PYTHON=python3
else
    step setup 120 bash deploy/gpu/setup-host.sh "$BUNDLE" || exit 1
    # shellcheck disable=SC1091
    source /tmp/triton-env.sh
fi
export PYTHONPATH=$PWD:$PWD/client PYTHONUNBUFFERED=1
nvidia-smi > "$RESULTS/nvidia-smi-before.txt" 2>&1
step checkpoint 180 "$MODEL_PYTHON" -m export.random_checkpoint "$work/checkpoint" --shape "${SHAPE:-large}" \
    --layout modelscope || exit 1
step gpu-tests 150 "$MODEL_PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests/unit

for variant in "$@"; do
    name=${variant%%:*}
    read -r -a flags <<< "${variant#*:}"
    step "$name-export" 180 "$MODEL_PYTHON" -m export --model "$work/checkpoint" --repository "$work/$name" \
        --runtime python-torch --max-length "${MAX_LENGTH:-128}" "${flags[@]}" || continue
    # --front off: tritonserver itself, as every earlier run measured it (the fronts' cost is measured apart)
    python3 -m zsc_server.serve --repository "$work/$name" --http-port "$HTTP" --grpc-port "$GRPC" \
        --metrics-port "$METRICS" --front off > "$RESULTS/$name-serve.log" 2>&1 &
    server=$!
    for _ in $(seq 120); do
        grep -q "\[serve\] ready:" "$RESULTS/$name-serve.log" && break
        kill -0 $server 2>/dev/null || break
        sleep 1
    done
    step "$name-bench" 240 python3 -m loadtest.bench --grpc-url "127.0.0.1:$GRPC" --http-url "127.0.0.1:$HTTP" \
        --metrics-url "http://127.0.0.1:$METRICS/metrics" --concurrency "$CONCURRENCY" --duration-s "$DURATION_S" \
        --warmup-s 1 --ceiling-s 4 --out "$RESULTS/$name" --note "variant $name: export flags '${flags[*]}'"
    kill -TERM $server 2>/dev/null
    wait $server
    archive
done
nvidia-smi > "$RESULTS/nvidia-smi-after.txt" 2>&1

python3 - "$RESULTS" <<'PY'
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("*/bench-*/results.json")):
    data = json.loads(path.read_text())
    ceiling = data.get("encoder_ceiling") or {}
    for level in data["levels"]:
        print(f"{path.parts[-3]:>12} c{level['concurrency']:<4} p50 {level['p50_ms']:6.1f} ms  p99 {level['p99_ms']:6.1f} ms"
              f"  {level['pairs_per_s']:7.0f} pairs/s  batch {level['encoder_avg_batch']:5.1f}"
              f"  wrong {level['wrong']}  errors {sum(level['errors'].values())}")
    print(f"{path.parts[-3]:>12} raw encoder {ceiling.get('pairs_per_s', 0):.0f} pairs/s")
PY
archive
exit $failed
