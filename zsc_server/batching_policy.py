"""Every batching and queueing default, in one place: what the export writes into the configs unless told
otherwise (export.options.ExportOptions, export.repository.ServingSettings and export.gpu_profiles read
them from here), and what the server-side models fall back to.
"""

from __future__ import annotations

# ---------------------------------------------------------------- sequence buckets (preprocess padding)

# Padded sequence lengths for GPU runtimes: few shapes, each a CUDA graph or TensorRT profile.
DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)
# On CPU every padded token costs compute and the batcher merges little, so shapes follow the real
# lengths closely (measured: BERT-base on 2 cores, loadtest/results/compare-*).
CPU_BUCKETS = (16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 192, 256, 384, 512)

# ---------------------------------------------------------------- the encoder's dynamic batcher

# How long the batcher waits to fill a batch on the CPU; GPU profiles scale GPU_QUEUE_DELAY_US by the card.
CPU_QUEUE_DELAY_US = 2000
GPU_QUEUE_DELAY_US = 100  # on the H100/H200; slower cards longer (export.gpu_profiles.gpu_profile)
GPU_MAX_BATCH = 512  # pairs per execution on a GPU profile
ENCODER_INSTANCES = 1
PREPROCESS_INSTANCES = 2

# The encoder queue's wait budget (--queue-timeout-ms auto): under overload, stale requests are turned away
# instead of answered late; a closed loop (clients that each wait for their answer, whose requests fit in a
# batch) should never be refused: it cannot overload anything. A request may wait for the batch in flight and
# then for its own, so the budget is 2x the encoder's time for a full batch (its time per row on a sample
# request x the most rows one execution takes), within 600 ms-10 s. Never under 600 ms: Triton 2.51's
# dynamic batcher, once its queue has a policy, sometimes sleeps its full 500 ms while requests wait and the
# instance is free, until another request arrives. The count is not bounded by default (max_queue_size 0):
# a full queue turns arrivals away without waking the batcher, and those sleeps then idle the encoder
# (docs/limits-failures-security.md, "Overload").
QUEUE_BUDGET_BATCHES = 2
QUEUE_BUDGET_MS = (600, 10_000)
GPU_QUEUE_BUDGET_MS = QUEUE_BUDGET_MS[0]
MAX_QUEUE_SIZE = 0

# ---------------------------------------------------------------- admission control (zsc_server/admission.py)

# --admission-budget-ms auto: the longest estimated wait for the encoder a request is admitted to is the time
# of this many sample requests (measured at export), within these bounds (ms) and at most half the encoder
# queue's budget (which would otherwise refuse first, after tokenizing). Under overload an accepted answer waits
# about the budget plus an execution: with 24, within 3x the p95 of a closed loop of 16 clients (the soak's
# capacity point; 32 missed it narrowly, loadtest/results/overload-trials-20261206-minilm-int8-1-core), and a
# closed loop of up to about 24 clients, each waiting for its answer, is never refused.
ADMISSION_CLOSED_LOOP_REQUESTS = 24
ADMISSION_BUDGET_MS = (150, 5_000)
# Over the budget, the preprocess holds a request up to this share of the budget (at most ADMISSION_HOLD_MS ms)
# for room, while Triton's queue in front of it, of this many requests per instance, turns the excess away in
# C++: a refusal by the Python model costs a round trip to its stub, CPU the encoder needs. The queue takes a
# closed loop's burst (a batch's answers come back together, and their clients send again at once): with 2 per
# instance, 16 clients on one core saw 'exceeds maximum queue size' while the budget had room.
ADMISSION_HOLD_SHARE = 0.25
ADMISSION_HOLD_MS = 50
PREPROCESS_QUEUE_PER_INSTANCE = 16
# The launcher's fronts also bound the inference requests they have forwarded and not yet seen answered (some of
# them wait in front of the preprocess, where the ledger cannot see them): at most what they answered correctly
# in the last ADMISSION_ANSWER_WINDOW_S, scaled to the budget (Little's law: that many in flight wait about the
# budget), and never fewer than ADMISSION_CLOSED_LOOP_REQUESTS, so that an idle or lightly loaded server still
# takes a closed loop's burst. Measured on one core at twice capacity with tritonserver below the fronts'
# priority: without the bound, accepted answers p95 916 ms; with it, 166 ms (10 minutes; loadtest/results/
# overload-trials-20261206-minilm-int8-1-core, t16 and t25).
ADMISSION_ANSWER_WINDOW_S = 1.0
# In front of the fronts, where haproxy is installed (zsc_server.edge), an edge proxy in C refuses the excess at
# about 0.1 ms of CPU per call against the Python fronts' 0.3 ms: at most this share of the fronts' bound on the
# calls in flight goes on to the fronts (those wait about half the budget, so the fronts' ledger, which refuses
# at the whole budget, seldom refuses behind it: each refusal there costs the Python CPU the edge saves), never
# fewer than EDGE_MIN_IN_FLIGHT; EDGE_QUEUE more wait in the edge for a slot (together a closed loop of
# ADMISSION_CLOSED_LOOP_REQUESTS), each up to the admission budget (the wait the fronts would admit: a closed loop
# is never refused for a slow batch); the rest are refused at once. Measured on one core at 5x
# MiniLM's capacity: the fronts alone answered 66-76% of the capacity during the burst; behind a fixed edge of
# 16 + 8, 91-99.5%; behind this one, 93-112% (loadtest/results/overload-trials-20261206-minilm-int8-1-core,
# t29-t45).
EDGE_BUDGET_SHARE = 0.5
EDGE_MIN_IN_FLIGHT = 16
EDGE_QUEUE = ADMISSION_CLOSED_LOOP_REQUESTS - EDGE_MIN_IN_FLIGHT

# ---------------------------------------------------------------- the CPU encoders' inference calls

# The most rows one inference call takes on the CPU runtimes (python-ort, python-ov): a request of 256 labels
# runs as four calls of 64 rows, so activation memory stays bounded whatever the labels per request. Rows are
# independent (padding is masked), so answers do not change; on a CPU a call of 64 rows keeps the matrix
# products as busy as a larger one. 0: a whole batch per call.
CPU_ROWS_PER_CALL = 64

# ---------------------------------------------------------------- python-torch on a GPU (CUDA graphs)

# batch sizes a CUDA graph is captured for; a batch is replayed as the sizes that cost least
GRAPH_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
# one CUDA-graph replay's fixed cost (launch, copies, synchronisation) in units of its work, rows x tokens
# (zsc_server.torch_encoder). Measured on an H200, StructBERT-large FP16
# (loadtest/results/bench-20261126-h200/memory.md): a replay takes ~0.8 ms plus ~1.4 us per row-token from 16
# to 128 tokens, so ~0.8 ms is the work of ~550 row-tokens.
REPLAY_OVERHEAD_TOKENS = 512
# python-torch's layouts (zsc_server.torch_encoder): padded until the GPU measurements say packed is faster
TORCH_LAYOUTS = ("padded", "packed")
DEFAULT_TORCH_LAYOUT = TORCH_LAYOUTS[0]
# python-torch's packed layout (zsc_server.torch_packed): the most tokens one replay packs (a bigger batch runs
# as several), and the smallest captured token bucket. 65,536 = 512 pairs of 128 tokens, the GPU profiles'
# largest batch at their default length.
PACKED_TOKEN_LIMIT = 65_536
SMALLEST_TOKEN_BUCKET = 64

# ---------------------------------------------------------------- embedding mode's label cache

LABEL_CACHE_MIB = 32.0  # per preprocess instance
