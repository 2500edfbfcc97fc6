# pacsflow: two commands do all the set-up.
#   make demo   run the stroke-triage pathway end to end on the embedded stack
#   make test   lint, layer contracts and the whole test suite
# Both bootstrap what is missing: Debian packages, the .venv, the package itself.

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
APT_PACKAGES := orthanc orthanc-dicomweb dcmtk chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: bootstrap system-packages venv test lint unit demo clean bench stack-up stack-down

bootstrap: system-packages venv

system-packages:
	@if ! command -v Orthanc >/dev/null || ! command -v storescu >/dev/null \
	    || [ ! -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || [ ! -x /usr/bin/chromium ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

unit: bootstrap
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

demo: bootstrap
	$(BIN)/pacsflow demo

bench: bootstrap
	$(BIN)/python -m bench.bench_ingest
	$(BIN)/python -m bench.bench_inference
	$(BIN)/python -m bench.bench_time_to_flag
	$(BIN)/python -m bench.bench_sweep
	$(BIN)/python -m bench.bench_scale

stack-up: bootstrap
	$(BIN)/pacsflow stack up

stack-down: bootstrap
	$(BIN)/pacsflow stack down

clean:
	-$(BIN)/pacsflow stack down
	rm -rf var .pytest_cache .ruff_cache
