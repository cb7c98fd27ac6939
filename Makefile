# The two commands: `make demo` runs every scenario; `make test` runs the whole suite.
# Both create the virtualenv and install everything on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.keel-installed
# The browser tests (tests/test_ui_browser.py) drive Debian's chromium through playwright;
# playwright's own browser download is not used (and cannot reach the internet here).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test browser dev lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/keel demo

browser:
	@test -x $(CHROMIUM) || { \
		command -v apt-get >/dev/null || { echo "install chromium at $(CHROMIUM)" >&2; exit 1; }; \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test: $(STAMP) browser
	$(BIN)/ruff check keel tests benchmarks
	$(BIN)/mypy keel
	$(BIN)/python -m pytest

dev: $(STAMP)
	$(BIN)/keel dev

lint: $(STAMP)
	$(BIN)/ruff check keel tests benchmarks
	$(BIN)/ruff format --check keel tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy keel

bench: $(STAMP)  # about 12 minutes on 2 cores; each writes its table to benchmarks/results/
	$(BIN)/python benchmarks/agent_node_overhead.py
	$(BIN)/python benchmarks/plan_fanout.py
	$(BIN)/python benchmarks/support_throughput.py
	$(BIN)/python benchmarks/effect_record_cost.py

clean:
	rm -rf $(VENV) .keel .pytest_cache .mypy_cache .ruff_cache
