# gpurent - `make dev` runs the whole system locally; `make test` runs every test tier.
# Both install what they need from nothing: .venv (the app and dev tools), .sam-venv
# (aws-sam-cli pins its own boto3, so it lives apart) and node_modules (DynamoDB Local).

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

.PHONY: all dev test lint unit integration conformance e2e template deps fmt clean bench fuzz web web-deploy browser \
	screenshots

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 2>/dev/null
	set -o pipefail; $(PY) -m pip install --quiet -e ".[dev]" 2>&1 | { grep -v "is ignored: it is neither" || true; }
	touch $@

$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip 2>/dev/null
	set -o pipefail; $(SAM_VENV)/bin/pip install --quiet aws-sam-cli==1.170.0 2>&1 | { grep -v "is ignored: it is neither" || true; }
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

deps: $(VENV)/.installed $(SAM_VENV)/.installed node_modules/.installed

# The dashboard (web/): rebuilt when its sources, its lock or the API contract change.
# `npm run build` = types from docs/openapi.json, tsc --noEmit, vite build, bundle size.
WEB_SOURCES := $(shell find web/src web/public web/scripts -type f ! -name '*.gen.ts' 2>/dev/null) \
	web/index.html web/vite.config.ts web/tsconfig.json web/package.json docs/openapi.json

web/node_modules/.installed: web/package.json web/package-lock.json
	@echo "== web: npm ci (the dashboard's build tools)"
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

web/dist/.built: web/node_modules/.installed $(WEB_SOURCES)
	@echo "== web: building the dashboard (types from docs/openapi.json, tsc, vite)"
	cd web && npm run --silent build
	touch $@

web: web/dist/.built

# The browser the dashboard's tests drive: Debian's Chromium (Playwright's own download needs a CDN).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "== browser: installing Debian's chromium (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "The browser tests need Chromium at $(CHROMIUM): run 'sudo apt-get install -y chromium'" \
	         "(or set CHROMIUM=/path/to/chromium)."; exit 1; \
	  fi; \
	fi
	@"$(CHROMIUM)" --version

# Retake the dashboard's screenshots in docs/screenshots (the browser tests, at both widths).
screenshots: $(VENV)/.installed web/dist/.built browser
	UPDATE_SCREENSHOTS=1 $(call run_pytest,tests/e2e/browser/test_pages.py)

# Upload the built dashboard to a deployed stack's bucket and invalidate the distribution:
#   make web-deploy STACK=gpurent-prod [AWS_PROFILE=…]
web-deploy: web/dist/.built
	@test -n "$(STACK)" || { echo "usage: make web-deploy STACK=<stack name>"; exit 2; }
	$(PY) -m infra.web_deploy --stack $(STACK) --dist web/dist

dev: $(VENV)/.installed web/dist/.built
	$(PY) -m infra.local.dev

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy layers/gpurent/gpurent functions infra cli

# pytest's exit 5 ("no tests collected") is not a failure of the suite.
define run_pytest
	SAM_CLI=$(abspath $(SAM)) SAM_PYTHON_BIN=$(PY313_BIN) $(PY) -m pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc
endef

test: deps lint web/dist/.built browser
	$(call run_pytest,tests)

unit: $(VENV)/.installed
	$(call run_pytest,tests/unit)

integration: $(VENV)/.installed
	$(call run_pytest,tests/integration)

conformance: $(VENV)/.installed node_modules/.installed
	$(call run_pytest,tests/conformance)

e2e: $(VENV)/.installed web/dist/.built browser
	$(call run_pytest,tests/e2e)

template: $(VENV)/.installed $(SAM_VENV)/.installed
	$(call run_pytest,tests/template)

bench: $(VENV)/.installed
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

fmt: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(SAM_VENV) node_modules web/node_modules web/dist .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis

# A longer contract fuzz run against the local stack (make test runs a bounded one).
fuzz: $(VENV)/.installed node_modules/.installed
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} $(call run_pytest,tests/e2e/test_contract_fuzz.py)
