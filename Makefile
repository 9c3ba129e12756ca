# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck docs bench figures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m funcopt demo

figures: $(STAMP)
	$(PY) -m funcopt figures --out figures

bench: $(STAMP)
	$(PY) -m funcopt bench

lint: $(STAMP)
	$(VENV)/bin/ruff check funcopt tests examples
	$(VENV)/bin/ruff format --check funcopt tests examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy funcopt

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

test: lint typecheck
	$(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache .hypothesis
