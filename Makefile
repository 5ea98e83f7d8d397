# Set-up and everyday commands. `make demo` and `make test` each install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed
DEMO_STAMP = $(VENV)/.installed-demo

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

# The demo needs only what running needs, not the test toolchain.
$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e '.[demo]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/ucwa-bridge demo

test: $(STAMP)
	$(BIN)/pytest

# Figures, not tests: each program prints ratios measured side by side and which targets were
# met (15-20 minutes in all on two busy cores; BENCH_ARGS=--quick: about 10 s each).
bench: $(STAMP)
	$(BIN)/python -m bench.send_path $(BENCH_ARGS)
	$(BIN)/python -m bench.intake $(BENCH_ARGS)
	$(BIN)/python -m bench.slow_clients $(BENCH_ARGS)
	$(BIN)/python -m bench.inbound $(BENCH_ARGS)
	$(BIN)/python -m bench.webhooks $(BENCH_ARGS)
	$(BIN)/python -m bench.memory $(BENCH_ARGS)
	$(BIN)/python -m bench.list_messages $(BENCH_ARGS)
	$(BIN)/python -m bench.broadcast $(BENCH_ARGS)
	$(BIN)/python -m bench.person_burst $(BENCH_ARGS)
	$(BIN)/python -m bench.curves $(BENCH_ARGS)
	$(BIN)/python -m bench.floor $(BENCH_ARGS)
	$(BIN)/python -m bench.accounts $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
