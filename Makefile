# The two commands of a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test docs lint clean bench

# scenepriv alone (what a user installs), then the extras for evaluation and the tests.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Protect the example photos with the defaults (the medium strength: it holds through a site's JPEG re-encoding
# and resizing; --seed: the same targets on every run), then check what medium promises; either command exits
# non-zero if a photo is not protected or a check fails.
demo: $(VENV)/.installed
	rm -rf demo-output
	$(BIN)/scenepriv protect examples/photos -o demo-output --seed 0 --report demo-output/report.jsonl
	$(BIN)/scenepriv verify demo-output --original examples/photos

# The docs site is built strictly (a broken link or anchor fails) before the tests, which also check its tables.
test: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/mkdocs build --strict --site-dir build/site
	$(BIN)/python -m pytest

# Rewrite the tables that come from files (tools/doc_tables.py), then build the site into build/site.
docs: $(VENV)/.installed-test
	$(BIN)/python tools/doc_tables.py
	$(BIN)/mkdocs build --strict --site-dir build/site

# Speed and quality of the fast paths (docs/speed.md). torchattacks is installed without its
# dependencies: 3.5.1 pins requests~=2.25.1, which would downgrade the environment.
bench: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet --no-deps torchattacks==3.5.1
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/run.py --quality

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks tools

clean:
	rm -rf $(VENV) demo-output build src/*.egg-info
