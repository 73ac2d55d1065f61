# The README's commands. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
BOOT_STAMP  := $(VENV)/.installed-bootstrap
SERVE_STAMP := $(VENV)/.installed-serve
STAMP       := $(VENV)/.installed-dev
# uv checks every file against its sha256 in the lock (and refuses a line without one); wheels
# only, so nothing is compiled. `uv pip install` takes ~1 s on a warm cache where pip takes ~35 s.
# the system's certificate store, as pip uses it (uv's own bundle lacks a proxy's or a company's CA)
export UV_SYSTEM_CERTS := 1
UV_INSTALL  := $(UV) pip install --quiet --python $(BIN)/python --require-hashes --only-binary :all:

.PHONY: serve test test-unit test-long security fuzz soak lint lock lock-check sbom audit bench-train bench-serve bench-capacity validate-deploy clean

# Installs come from the lock files (requirements/*.txt, written by `make lock`: every package
# pinned with the sha256 of each file PyPI serves for it). `make serve` gets the serving set
# alone; every other target the dev set. The venv starts without pip (ensurepip took 8-19 s of a
# fresh clone's 30 s): this Python's own pip installs the bootstrap lock into it (uv and the build
# backend, hash-checked; a pip older than 22.3 has no --python, so then ensurepip after all); uv
# installs the rest; for the dev set, the project itself goes in editable, without dependencies,
# since the lock has them all. The dev set brings pip into the venv.
BOOT_PIP := --quiet --disable-pip-version-check --no-compile --require-hashes --only-binary :all: \
	    -r requirements/bootstrap.txt
$(BOOT_STAMP): requirements/bootstrap.txt
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(BIN)/python install $(BOOT_PIP) 2>/dev/null \
	    || { $(BIN)/python -m ensurepip --default-pip >/dev/null && $(BIN)/python -m pip install $(BOOT_PIP); }
	touch $@

# (serve runs gunicorn from here, which puts this directory on sys.path: no need to install the project)
$(SERVE_STAMP): $(BOOT_STAMP) requirements/serve.txt pyproject.toml
	$(UV_INSTALL) -r requirements/serve.txt
	touch $@

$(STAMP): $(BOOT_STAMP) requirements/dev.txt pyproject.toml
	$(UV_INSTALL) -r requirements/dev.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $@ $(SERVE_STAMP)

lock: $(BOOT_STAMP)  ## rewrite requirements/*.txt from pyproject.toml (UPGRADE=1 or UPGRADE=PKG,...: newer versions)
	UV=$(UV) bash requirements/lock.sh

lock-check: $(BOOT_STAMP)  ## fail if requirements/*.txt are not what `make lock` would write (CI)
	UV=$(UV) bash requirements/lock.sh --check

sbom: $(STAMP)  ## CycloneDX SBOMs of the images' Python packages: sbom/api.cdx.json, sbom/train.cdx.json
	$(BIN)/python deploy/sbom.py write sbom

audit: $(STAMP)  ## pip-audit of the images' locks; says NOT AUDITED where no vulnerability database answers
	$(BIN)/python requirements/audit.py

serve: $(SERVE_STAMP)  ## run the API on the shipped models at http://127.0.0.1:8000
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
	$(BIN)/python -m pip install --quiet -e '.[bench]'   # not locked (README, "Dependencies")
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
	$(BIN)/ruff check training service tests bench examples deploy requirements
	$(BIN)/ruff format --check training service tests bench examples deploy requirements
	$(BIN)/mypy training service

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache sbom
