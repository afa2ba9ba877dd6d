# The two commands of a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint clean bench

# scenepriv alone (what a user installs), then the extras for evaluation and the tests.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Protect the example photos at full size so that it holds through platform re-encoding (--strength medium;
# --seed: the same targets on every run), then check it after real JPEG re-encoding and resizing; either
# command exits non-zero if a photo is not protected or a check fails.
demo: $(VENV)/.installed
	rm -rf demo-output
	$(BIN)/scenepriv protect examples/photos -o demo-output --strength medium --seed 0 --report demo-output/report.jsonl
	$(BIN)/scenepriv verify demo-output --original examples/photos --jpeg 50,75 --scale 0.5,1

test: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

# Speed and quality of the fast paths (README, "Speed"). torchattacks is installed without its
# dependencies: 3.5.1 pins requests~=2.25.1, which would downgrade the environment.
bench: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet --no-deps torchattacks==3.5.1
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/run.py --quality

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo-output build src/*.egg-info
