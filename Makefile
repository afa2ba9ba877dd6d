# The two commands of a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	rm -rf demo-output
	$(BIN)/scenepriv protect examples/photos -o demo-output --report demo-output/report.jsonl

test: $(VENV)/.installed
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) demo-output build src/*.egg-info
