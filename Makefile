# The README's commands. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test test-unit test-long security fuzz soak lint bench-train bench-serve bench-capacity validate-deploy clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)  ## run the API on the shipped models at http://127.0.0.1:8000
	$(BIN)/gunicorn -c gunicorn.conf.py 'service.wsgi:app'

test: $(STAMP)   ## run the whole test suite
	$(BIN)/python -m pytest

test-unit: $(STAMP)  ## the unit tests alone, in ~20 s: all but tests/integration/ (marked integration)
	$(BIN)/python -m pytest -q -m "not integration"

test-long: $(STAMP)  ## property tests with 10x the examples from a random seed (~2 min)
	HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q tests/training/test_idx_properties.py \
	    tests/training/test_export_properties.py tests/service/test_images_properties.py \
	    tests/service/test_requests_properties.py

security: $(STAMP)   ## bandit: exits non-zero on any medium or high finding
	$(BIN)/bandit -r training service -q -ll

fuzz: $(STAMP)  ## schemathesis vs a live gunicorn: 200 cases per operation and phase (6,500-7,700), random seed
	FUZZ_MAX_EXAMPLES=200 $(BIN)/python -m pytest -q -s tests/integration/reliability/test_fuzz_openapi.py

soak: $(STAMP)  ## 5 min at 32 clients, model drops, worker SIGKILL and master SIGTERM under load
	$(BIN)/python bench/soak.py --check

DATA_DIR ?= data/mnist
bench-train: $(STAMP)  ## training speed vs PyTorch, scikit-learn and the GEMM bound
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/train_speed.py --data-dir $(DATA_DIR)

bench-serve: $(STAMP)  ## requests/s of predict vs a no-op floor under gunicorn (needs wrk)
	$(BIN)/python bench/serve_load.py --duration 10 --rounds 2

validate-deploy: $(STAMP)  ## every kustomization under deploy/, rendered and validated strictly (custom resources: a warning)
	@for dir in $$(find deploy -name kustomization.yaml -printf '%h\n' | sort); do \
	    echo "== $$dir"; kubectl kustomize "$$dir" | $(BIN)/kubernetes-validate --strict --quiet - || exit 1; done

COMPOSE ?= docker compose
bench-capacity: $(STAMP)  ## req/s through the compose proxy with 1, 2 and 3 API replicas (wrk; images built)
	$(BIN)/python bench/compose_capacity.py --compose '$(COMPOSE)'

lint: $(STAMP)  ## ruff (lint and format check) + mypy, as CI runs them
	$(BIN)/ruff check training service tests bench examples
	$(BIN)/ruff format --check training service tests bench examples
	$(BIN)/mypy training service

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
