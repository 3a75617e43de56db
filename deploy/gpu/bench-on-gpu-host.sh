#!/usr/bin/env bash
# The GPU measurement on a GPU host that has PyTorch + CUDA but no network and no Triton.
#   1. where pip's package index is reachable:  make gpu-bundle     (deploy/gpu/make-bundle.sh .gpu, ~58 MiB;
#      .gpu is git-ignored)
#   2. copy the repository with .gpu to the GPU host, and from its root:  bash deploy/gpu/bench-on-gpu-host.sh .gpu
# The steps, their time limits and what they leave behind: python3 -m loadtest.gpu_run --help (the same
# steps run on a CPU with `make gpu-rehearsal`, and in the tests). Results: $RESULTS (default
# loadtest/results/gpu-run-<date>); where $OUT names a folder, also $OUT/gpu-run.tar.gz (rewritten after
# every step, so a run cut short still leaves its results) and $OUT/summary.md.
set -uo pipefail
BUNDLE=${1:?usage: bench-on-gpu-host.sh BUNDLE_DIR [python -m loadtest.gpu_run options]}
shift
RESULTS=${RESULTS:-loadtest/results/gpu-run-$(date +%Y%m%d-%H%M%S)}
archive=()
[ -n "${OUT:-}" ] && archive=(--archive "$OUT/gpu-run.tar.gz")
python3 -m loadtest.gpu_run --bundle "$BUNDLE" --results "$RESULTS" "${archive[@]}" "$@"
code=$?
[ -n "${OUT:-}" ] && cp "$RESULTS/summary.md" "$OUT/summary.md"
exit $code
