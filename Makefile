# Zero-shot classification on NVIDIA Triton. `make` lists the targets.
SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REPOSITORY ?= model_repository

# Export settings (see `python -m export --help`).
MODEL ?= offline-minilm
# empty: the export's defaults: where nvidia-smi lists a GPU, that card's profile with python-torch (FP16);
# without one, OpenVINO (python-ov) INT8 where its accuracy gate passes, else OpenVINO FP32 (the fastest CPU setup
# measured). GPU=h100 (or t4, a10g, ...) picks a card; GPU=none: python-ort FP32 on the CPU (exact, no gate).
PRECISION ?=
RUNTIME ?=
GPU ?=
# python-torch: padded (default) or packed tokens (docs/gpu-and-deployment.md, "Packed tokens and FP8")
TORCH_LAYOUT ?=
MAX_LENGTH ?= auto
# Embedding mode's label cache: MiB per preprocess instance (empty: the export's default, 32; 0: off)
LABEL_CACHE_MB ?=

# Local server ports; HOST is where it binds (loopback by default).
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
HOST ?= 127.0.0.1
# More launcher flags for `make serve` (python -m zsc_server.serve --help), e.g. --no-revive
SERVE_ARGS ?=
# Embedding mode: label sets (JSON) every preprocess instance encodes into its label cache at start
WARM_LABELS ?=

.DEFAULT_GOAL := help
.PHONY: help setup setup-modelscope setup-gliclass export serve demo test lint clean up down compose-smoke wheelhouse base-image loadtest loadtest-compare webui bench soak \
	bench-overhead bench-label-cache bench-gliclass gpu-bundle gpu-rehearsal gpu-run

# `make help` lists the targets in these groups (tests/unit/test_docs.py: every documented target in one)
HELP_EVERYDAY := demo setup export serve webui test lint clean help
HELP_MEASURE := bench bench-overhead bench-label-cache bench-gliclass loadtest loadtest-compare soak perf perf-tools \
	setup-modelscope setup-gliclass setup-model-analyzer analyze
HELP_GPU_DEPLOY := gpu-bundle gpu-rehearsal gpu-run up down compose-smoke wheelhouse base-image

help: ## list the targets
	@echo "Defaults (set any as VAR=value): MODEL=$(MODEL) REPOSITORY=$(REPOSITORY) HOST=$(HOST)" \
		"HTTP_PORT=$(HTTP_PORT) GRPC_PORT=$(GRPC_PORT) METRICS_PORT=$(METRICS_PORT) MAX_LENGTH=$(MAX_LENGTH)" \
		"COMPOSE='$(COMPOSE)' (make up/down/export; compose's ports: TRITON_BIND, METRICS_BIND in .env)"
	@for group in "Everyday:$(HELP_EVERYDAY)" "Benchmarks and load tests:$(HELP_MEASURE)" \
			"GPU hosts and deployment:$(HELP_GPU_DEPLOY)"; do \
		echo; echo "$${group%%:*}"; \
		for target in $${group#*:}; do \
			grep -E "^$$target:.*## " $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-21s %s\n", $$1, $$2}'; \
		done; \
	done

$(VENV)/.installed: requirements.txt pyproject.toml client/pyproject.toml
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e . -e ./client
	touch $@

setup: $(VENV)/.installed ## create .venv with the server, export, client and test dependencies

# the venvs of their own (test references, tools): DIR/.installed from one requirements file
define venv_from_requirements
$(PYTHON_BOOT) -m venv $(@D)
$(@D)/bin/python -m pip install --quiet --upgrade pip
$(@D)/bin/python -m pip install --quiet -r $<
touch $@
endef

MS_VENV ?= .venv-modelscope
$(MS_VENV)/.installed: requirements-modelscope.txt
	$(venv_from_requirements)

setup-modelscope: $(MS_VENV)/.installed ## create .venv-modelscope with ModelScope's pipeline (test reference)

GLC_VENV ?= .venv-gliclass
$(GLC_VENV)/.installed: requirements-gliclass.txt
	$(venv_from_requirements)

setup-gliclass: $(GLC_VENV)/.installed ## create .venv-gliclass with Knowledgator's gliclass pipeline (test reference)

EXPORT_ARGS = --model $(MODEL) $(if $(PRECISION),--precision $(PRECISION)) $(if $(RUNTIME),--runtime $(RUNTIME)) \
	$(if $(GPU),--gpu $(GPU)) $(if $(LABEL_CACHE_MB),--label-cache-mb $(LABEL_CACHE_MB)) --max-length $(MAX_LENGTH) \
	$(if $(TORCH_LAYOUT),--torch-layout $(TORCH_LAYOUT)) --repository $(REPOSITORY)
COMPOSE ?= docker compose
COMPOSE_GPU = $(COMPOSE) -f docker-compose.yml -f deploy/compose.gpu.yml

# A TensorRT engine must be built by the TensorRT that serves it: without TensorRT here, the export
# runs in the compose `export` container (NGC 25.07, the Triton image's TensorRT), then hands the
# files back to the calling user.
export: setup ## export MODEL (dir or hub id) into model_repository/, and pick the compose stack that serves it in .env [PRECISION RUNTIME GPU MAX_LENGTH LABEL_CACHE_MB TORCH_LAYOUT]
	@if [ "$(RUNTIME)" = tensorrt ] && ! $(PY) -c 'import tensorrt' 2>/dev/null; then \
		echo "TensorRT is not installed here: exporting in the compose 'export' container (GPU stack)"; \
		$(COMPOSE_GPU) --profile export run --rm export $(EXPORT_ARGS) && \
		$(COMPOSE_GPU) --profile export run --rm --entrypoint chown export -R $$(id -u):$$(id -g) $(REPOSITORY); \
	else \
		$(PY) -m export $(EXPORT_ARGS); \
	fi
	@$(PY) -m export.compose_env --repository $(REPOSITORY)

serve: setup ## run tritonserver on model_repository/ in the foreground [HTTP_PORT GRPC_PORT METRICS_PORT HOST WARM_LABELS SERVE_ARGS]
	$(PY) -m zsc_server.serve --repository $(REPOSITORY) --host $(HOST) \
		--http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT) \
		$(if $(WARM_LABELS),--warm-labels $(WARM_LABELS)) $(SERVE_ARGS)

WEBUI_PORT ?= 7860

webui: setup ## browser UI + JSON API for the server at HOST:GRPC_PORT (make serve), on http://127.0.0.1:WEBUI_PORT/ [WEBUI_PORT]
	$(VENV)/bin/zsc webui --triton $(HOST):$(GRPC_PORT) --port $(WEBUI_PORT)

demo: setup ## export MODEL (offline MiniLM by default), serve it, classify sample texts, stop
	$(PY) -m deploy.demo --model $(MODEL) --repository $(REPOSITORY) --max-length $(MAX_LENGTH)

test: setup setup-modelscope setup-gliclass perf-tools ## lint, then the test suite (unit + real tritonserver integration tests)
	$(VENV)/bin/ruff check .
	ZSC_MODELSCOPE_PYTHON=$(MS_VENV)/bin/python ZSC_GLICLASS_PYTHON=$(GLC_VENV)/bin/python $(PY) -m pytest -q

# Load tests (Locust, headless) against a running server (`make serve` or `make up`) at HOST.
USERS ?= 1,5,10
DURATION ?= 60s
PROTOCOL ?= grpc
LABEL_MODE ?= sets
# 1: distinct requests (a unique whitespace tag per text, dropped by the tokenizers): the response cache
# answers none; 0: the workload's repeats, which the cache may answer. Reports count cache hits either way.
DISTINCT ?= 1
DISTINCT_ARG = $(if $(filter 0 no false,$(DISTINCT)),--no-distinct,--distinct)

loadtest: setup ## Locust run per user count against HOST, results + report in loadtest/results/ [USERS DURATION PROTOCOL LABEL_MODE DISTINCT]
	$(PY) -m loadtest.run --host http://$(HOST):$(HTTP_PORT) --grpc-url $(HOST):$(GRPC_PORT) \
		--metrics-url http://$(HOST):$(METRICS_PORT)/metrics --users $(USERS) --duration $(DURATION) \
		--protocol $(PROTOCOL) --label-mode $(LABEL_MODE) $(DISTINCT_ARG) --report

SOAK_DURATION ?= 600
SOAK_LOAD ?= 2.0
# more soak flags (python -m loadtest.soak --help), e.g. --burst-load 5 --burst-s 60 --client-cpus 1
SOAK_ARGS ?=

soak: setup ## open-loop overload (SOAK_LOAD x measured capacity) on the server at HOST for SOAK_DURATION s: every answer checked, nothing lost, memory flat [SOAK_DURATION SOAK_LOAD SOAK_ARGS]
	$(PY) -m loadtest.soak --grpc-url $(HOST):$(GRPC_PORT) --http-url $(HOST):$(HTTP_PORT) \
		--metrics-url http://$(HOST):$(METRICS_PORT)/metrics --duration-s $(SOAK_DURATION) --load $(SOAK_LOAD) \
		$(SOAK_ARGS)

BENCH_CONCURRENCY ?= 1,5,10,32,64,128
BENCH_DURATION ?= 20

bench: setup ## serve REPOSITORY and sweep concurrency through the full ensemble (async gRPC), with the raw encoder ceiling [BENCH_CONCURRENCY BENCH_DURATION]
	$(PY) -m loadtest.bench --repository $(REPOSITORY) --concurrency $(BENCH_CONCURRENCY) --duration-s $(BENCH_DURATION)

# The GPU measurement (deploy/gpu/bench-on-gpu-host.sh says its steps): the bundle is built where pip's index is
# reachable, the run happens on a GPU host without network; the rehearsal runs the same steps on this CPU.
GPU_BUNDLE ?= .gpu

gpu-bundle: ## offline bundle for a GPU host without network or Triton (tritonserver + wheels) in GPU_BUNDLE
	bash deploy/gpu/make-bundle.sh $(GPU_BUNDLE)

gpu-rehearsal: setup ## the GPU run's steps on this CPU with a tiny model and short durations (a few minutes)
	PATH=$(abspath $(VENV))/bin:$$PATH bash deploy/gpu/bench-on-gpu-host.sh -

gpu-run: ## on a GPU host: export StructBERT-large (random weights), measure memory, bench, Locust; ≤ 8 min
	bash deploy/gpu/bench-on-gpu-host.sh $(GPU_BUNDLE)

bench-label-cache: setup ## embedding mode (offline MiniLM): req/s and p50 with the label cache off vs on, 5 and 10 fixed labels, and half the requests with a fresh label [BENCH_DURATION]
	$(PY) -m loadtest.bench --preset label-cache --duration-s $(BENCH_DURATION)

bench-gliclass: setup ## GLiClass vs an NLI cross-encoder of the same backbone (BERT-base shape, random weights): req/s and p50 at 5, 20 and 50 labels [BENCH_DURATION]
	$(PY) -m loadtest.bench --preset gliclass --duration-s $(BENCH_DURATION)

bench-overhead: setup ## the ensemble's own cost on a tiny model: p50 floor at one request, requests/s ceiling and CPU per request [BENCH_DURATION]
	$(PY) -m loadtest.bench --preset overhead --duration-s $(BENCH_DURATION)

# loadtest-compare: the random checkpoint's shape (base, or large: the reference deployment's model), our setups
# (fp32, int8: ONNX Runtime; ov-fp32, ov-int8: OpenVINO),
# label-count weights (e.g. 3:1,4:1,5:1), which baselines ('' for none), more flags (--cached-run ...)
SHAPE ?= base
SETUPS ?= fp32,int8,ov-int8
LABEL_MIX ?=
BASELINES ?= reference-modelscope,reference-huggingface
COMPARE_ARGS ?=

loadtest-compare: setup setup-modelscope ## ours (fp32, int8, OpenVINO int8) vs the reference deployment (ModelScope / HF pipelines behind Flask), same model and inputs, distinct requests [USERS DURATION SHAPE SETUPS LABEL_MIX BASELINES DISTINCT COMPARE_ARGS]
	$(PY) -m loadtest.compare --users $(USERS) --duration $(DURATION) --shape $(SHAPE) --setups $(SETUPS) \
		$(if $(LABEL_MIX),--label-mix $(LABEL_MIX)) --baselines "$(BASELINES)" $(DISTINCT_ARG) \
		--baseline-python $(MS_VENV)/bin/python $(COMPARE_ARGS)

# perf_analyzer, Triton's own benchmark client: the binary of the tritonclient 2.51 wheel and its two
# libraries, in a git-ignored folder of their own (loadtest/perf_tools.py says where each comes from).
PERF_TOOLS ?= .tools/perf-analyzer
CONCURRENCY ?= $(BENCH_CONCURRENCY)
PERF_INTERVAL_MS ?= 5000
PERF_STABILITY ?= 10
# gRPC host:port of a running server; empty: serve REPOSITORY for the run
PERF_URL ?=
PERF_ARGS = --repository $(REPOSITORY) --tools $(PERF_TOOLS) --concurrency $(CONCURRENCY) \
	--interval-ms $(PERF_INTERVAL_MS) --stability-pct $(PERF_STABILITY) $(if $(PERF_URL),--grpc-url $(PERF_URL))
.PHONY: perf-tools perf

$(PERF_TOOLS)/.installed: loadtest/perf_tools.py | $(VENV)/.installed
	$(PY) -m loadtest.perf_tools install --dest $(PERF_TOOLS)
	touch $@

perf-tools: $(PERF_TOOLS)/.installed ## perf_analyzer 2.51 and its libraries into PERF_TOOLS (self-contained: copy it to an offline host)

perf: setup perf-tools ## perf_analyzer sweep on zero_shot with distinct requests, CSV + report in loadtest/results/perf-*/ [CONCURRENCY PERF_URL PROTOCOL PERF_INTERVAL_MS PERF_STABILITY]
	$(PY) -m loadtest.perf $(PERF_ARGS) --protocol $(PROTOCOL)

# Triton Model Analyzer in a venv of its own (it pins many packages), on the local tritonserver.
MA_VENV ?= .venv-model-analyzer
ANALYZE_MAX_CONCURRENCY ?= 16
ANALYZE_MAX_INSTANCES ?= 2
# p99 constraint in ms for the ranking; empty: none
ANALYZE_LATENCY_BUDGET_MS ?=
.PHONY: setup-model-analyzer analyze

$(MA_VENV)/.installed: requirements-model-analyzer.txt
	$(venv_from_requirements)

setup-model-analyzer: $(MA_VENV)/.installed ## create .venv-model-analyzer with triton-model-analyzer

analyze: setup perf-tools setup-model-analyzer ## Model Analyzer quick search on REPOSITORY's ensemble with the local tritonserver, report in loadtest/results/analyze-*/ [ANALYZE_MAX_CONCURRENCY ANALYZE_MAX_INSTANCES ANALYZE_LATENCY_BUDGET_MS]
	$(PY) -m loadtest.analyze --repository $(REPOSITORY) --tools $(PERF_TOOLS) --model-analyzer $(MA_VENV)/bin/model-analyzer \
		--max-concurrency $(ANALYZE_MAX_CONCURRENCY) --max-instances $(ANALYZE_MAX_INSTANCES) \
		$(if $(ANALYZE_LATENCY_BUDGET_MS),--latency-budget-ms $(ANALYZE_LATENCY_BUDGET_MS))

up: ## start the compose stack that .env names (make export writes it: CPU or GPU) on the exported repository
	@test -f $(REPOSITORY)/zero_shot/config.pbtxt || { echo "No exported model in $(REPOSITORY)/: run 'make export' first"; exit 1; }
	$(COMPOSE) up -d --build --wait triton

down: ## stop the compose stack (every profile), keeping its volumes
	$(COMPOSE) --profile export --profile monitoring --profile loadtest --profile webui down

# Offline image builds (python -m deploy.images --help): a Debian base made with debootstrap, the wheels
# downloaded on this host; `make compose-smoke` builds every image from them with no network in the build.
base-image: setup ## the Debian base image for offline builds (debootstrap from apt's mirror, docker import; needs root)
	$(PY) -m deploy.images base

wheelhouse: setup ## download every wheel the CPU images install into deploy/wheelhouse/ (offline builds)
	$(PY) -m deploy.images wheelhouse

compose-smoke: setup ## build the CPU stack offline, make export, docker compose up, check it through its ports, down -v; prints a table
	$(PY) -m deploy.smoke

lint: setup ## ruff
	$(VENV)/bin/ruff check .

clean: ## remove generated model files (keeps .venv)
	rm -rf $(REPOSITORY)/encoder $(REPOSITORY)/*/config.pbtxt $(REPOSITORY)/preprocess/1/tokenizer.json
