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

.PHONY: demo test test-fast browser dev lint typecheck bench lock clean

# Versions come from requirements-dev.lock (constraints), so every machine tests the same set.
$(STAMP): pyproject.toml requirements-dev.lock examples/expense-approval/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements-dev.lock -e '.[dev]'
	$(BIN)/pip install --quiet -c requirements-dev.lock -e examples/expense-approval
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/keel demo

browser:
	@test -x $(CHROMIUM) || { \
		command -v apt-get >/dev/null || { echo "install chromium at $(CHROMIUM)" >&2; exit 1; }; \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test: $(STAMP) browser lint typecheck
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest $(EXAMPLE)/tests

# The inner loop: unit and time-skipping tests, no dev server, browser or subprocess.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

dev: $(STAMP)
	$(BIN)/keel dev

EXAMPLE := examples/expense-approval

lint: $(STAMP)
	$(BIN)/ruff check keel tests benchmarks $(EXAMPLE)
	$(BIN)/ruff format --check keel tests benchmarks $(EXAMPLE)

# The example is checked as its own project would be; MYPYPATH lets mypy read Keel's source
# (the editable install's import hook is invisible to it).
typecheck: $(STAMP)
	$(BIN)/mypy keel tests
	cd $(EXAMPLE) && MYPYPATH=$(CURDIR) $(CURDIR)/$(BIN)/mypy --strict expense_approval tests

bench: $(STAMP)  # about 20 minutes on 2 cores; each writes its table to benchmarks/results/
	$(BIN)/pip install --quiet -c requirements-dev.lock -e '.[bench]'
	$(BIN)/python benchmarks/agent_node_overhead.py
	$(BIN)/python benchmarks/peers.py
	$(BIN)/python benchmarks/dev_server_speed.py
	$(BIN)/python benchmarks/worker_memory.py
	$(BIN)/python benchmarks/plan_fanout.py
	$(BIN)/python benchmarks/support_throughput.py
	$(BIN)/python benchmarks/effect_record_cost.py
	$(BIN)/python benchmarks/guardrail_eval.py
	$(BIN)/python benchmarks/codec_cost.py
	$(BIN)/python benchmarks/ledger_signing_cost.py

# Re-pin after changing dependencies in pyproject.toml (needs network to the package index).
lock:
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --extra inbox --generate-hashes -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --extra dev --extra bench -o requirements-dev.lock

clean:
	rm -rf $(VENV) .keel .pytest_cache .mypy_cache .ruff_cache
