# Every target sets itself up: a fresh machine needs only python3 >= 3.11 and make.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo tour crash-demo test soak bench nexmark lint fmt docs clean chromium wasm-example

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(VENV)/.bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(VENV)/.bench

# The demos need only the base dependencies (no dev tools, no browser): a
# first `make demo` installs those alone, showing pip's progress, and says how
# long it took. With uv on the PATH (pip install uv) it is used instead of pip.
DEMO_STAMP := $(VENV)/.demo

$(DEMO_STAMP): pyproject.toml
	@start=$$(date +%s); \
	if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then \
		echo "demo set-up: the dev environment has everything"; \
	elif command -v uv >/dev/null 2>&1; then \
		echo "demo set-up: uv, base dependencies only"; \
		(test -x $(BIN)/python || uv venv --python $(PY) $(VENV)) && \
		uv pip install --python $(BIN)/python -e . || exit 1; \
	else \
		echo "demo set-up: pip, base dependencies only"; \
		(test -x $(BIN)/python || $(PY) -m venv $(VENV)) && \
		$(BIN)/python -m pip install --disable-pip-version-check -e . || exit 1; \
	fi; \
	echo "demo set-up took $$(( $$(date +%s) - start )) s"
	@touch $@

demo: $(DEMO_STAMP)
	$(BIN)/python -m examples.ingest_demo

tour: $(DEMO_STAMP)
	$(BIN)/python -m examples.demo

crash-demo: $(DEMO_STAMP)
	$(BIN)/python -m examples.crash_demo

test: $(STAMP)
	$(BIN)/python -m pytest

# At most about 10 minutes: kill -9 at 60 instants and every fault point,
# resume copies taken mid-run, flood ws.source with bad frames (tests/soak).
soak: $(STAMP)
	$(BIN)/python -m tests.soak --seed 1 --kills 60 --duration 240

bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks

# Nexmark: 1M events, every query in each form, checked against the reference;
# the table goes to docs/benchmarks.md (CEL is compiled: both forms on 1M).
NEXMARK_EVENTS ?= 1000000
NEXMARK_CEL_EVENTS ?= 1000000
nexmark: $(STAMP)
	$(BIN)/python -m benchmarks.nexmark bench --events $(NEXMARK_EVENTS) --cel-events $(NEXMARK_CEL_EVENTS)

# The browser test of the web UI uses Debian's chromium; CI runs as root.
chromium:
	test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Rebuild the AssemblyScript example module (its .wasm is committed, so tests
# need no toolchain): node and npm, with the compiler from the npm registry.
wasm-example:
	cd examples/wasm/assemblyscript && npm install --no-audit --no-fund && npm run build

$(VENV)/.docs: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,docs]'
	touch $(VENV)/.docs

# The site, into site/: any warning or unresolved reference fails the build
# (-W --keep-going -n); -E rereads every page so no warning hides in a cache.
docs: $(VENV)/.docs
	$(BIN)/flowstream nodes --markdown > docs/nodes.md
	$(BIN)/sphinx-build -b html -W --keep-going -n -E -q docs site
	@echo "site/index.html"

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
