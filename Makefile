# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

VENDOR  = static/vendor/.installed
# Test processes: most tests wait on Redis, sockets and child processes, so two
# share two cores well (912 tests: 14:01 in one process, 7:47 in two).
TEST_WORKERS ?= 2

.PHONY: run test check lint typecheck bench bullmq system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

# Tests run on the pinned versions of tests/constraints.txt.
$(VENV)/.dev: $(BIN)/python pyproject.toml tests/constraints.txt
	$(BIN)/pip install --quiet -c tests/constraints.txt -e '.[dev]'
	touch $@ $(VENV)/.runtime

# The peers bench.versus measures Slipstream against, never among its dependencies:
# arq and DBOS in a venv of their own (arq pins redis-py below 6, Slipstream runs on
# 8), BullMQ in bench/peers/bullmq's own node_modules. make test installs them too,
# so that the quick benchmark of the tests runs them.
PEERS   = $(VENV)/peers
BULLMQ  = bench/peers/bullmq/node_modules/.installed

$(VENV)/.bench: $(BIN)/python bench/peers/requirements.txt bench/peers/constraints.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet -c bench/peers/constraints.txt -r bench/peers/requirements.txt
	touch $@

$(BULLMQ): bench/peers/bullmq/package.json bench/peers/bullmq/package-lock.json
	cd bench/peers/bullmq && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Without npm bench.versus says BullMQ was skipped, and why.
bullmq:
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(BULLMQ); \
	else echo "npm not found: bench.versus skips BullMQ"; fi

# The chat's markdown, sanitiser and code highlighter come from npm and are
# served by the app itself: no CDN at run time. highlight.js ships its core for
# browsers only as CommonJS (its es/core.js re-exports lib/core.js), so the copy
# wraps it as an ES module; its languages are ES modules already. The languages
# here are the ones static/js/highlight.js registers.
HLJS_LANGUAGES = python javascript typescript json bash shell sql xml css go rust java c cpp yaml markdown diff
HLJS_CORE_NOTE = // highlight.js lib/core.js wrapped as an ES module by the Makefile (\$$(VENDOR)); do not edit.
$(VENDOR): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p static/vendor
	cp node_modules/marked/lib/marked.esm.js static/vendor/marked.esm.js
	cp node_modules/dompurify/dist/purify.es.mjs static/vendor/purify.es.mjs
	mkdir -p static/vendor/highlight/languages
	{ echo "$(HLJS_CORE_NOTE)"; echo "const module = { exports: {} };"; \
	  cat node_modules/highlight.js/lib/core.js; echo "export default module.exports;"; \
	} > static/vendor/highlight/core.js
	for name in $(HLJS_LANGUAGES); do \
	  cp node_modules/highlight.js/es/languages/$$name.js static/vendor/highlight/languages/$$name.js || exit 1; \
	done
	touch $@

## run: the whole system, embedded, on http://127.0.0.1:8000
run: $(VENV)/.runtime
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(VENDOR); \
	else echo "npm not found: serving the copies of marked and DOMPurify kept in static/vendor/"; fi
	$(BIN)/python -m service

## test: formatting, lint, types and the whole suite
test: $(VENV)/.dev $(VENDOR) $(VENV)/.bench $(BULLMQ) system-deps lint typecheck
	for f in static/js/*.js; do node --check "$$f" || exit 1; done
	$(BIN)/pytest -n $(TEST_WORKERS)

lint: $(VENV)/.dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

## system-deps: redis-server and Debian's chromium for the tests (apt-get, when root and missing)
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq $$missing; \
	  else \
	    echo "missing:$$missing; install them (e.g. sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

## bench: Slipstream beside arq, BullMQ and DBOS (on SLIPSTREAM_BENCH_PG) with the live latency, then one Redis against a 3-master cluster (prints tables)
bench: $(VENV)/.dev $(VENV)/.bench bullmq system-deps
	$(BIN)/python -m bench.versus
	$(BIN)/python -m bench.cluster
	$(BIN)/python -m bench.wake

clean:
	rm -rf $(VENV) .slipstream .pytest_cache .mypy_cache .ruff_cache node_modules $(VENDOR) build *.egg-info
	rm -rf bench/peers/bullmq/node_modules
