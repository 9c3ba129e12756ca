# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# `make demo` installs funcopt's runtime dependencies only (jax, jaxlib, optax, chex,
# matplotlib, rich); `make test` and the other developer targets add the dev extras
# (pytest, ruff, mypy, the torch and flax test oracles, mkdocs) into the same .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.runtime-stamp
DEV_STAMP := $(VENV)/.dev-stamp

.PHONY: demo test compat lint typecheck docs bench figures clean

$(RUNTIME_STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing funcopt with its runtime dependencies"
	@echo "    (jax, jaxlib, optax, chex, matplotlib, rich: about 170 MB of wheels)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e .
	@echo "==> runtime dependencies installed"
	@touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) pyproject.toml
	@echo "==> installing the dev extras into $(VENV): pytest, hypothesis, ruff, mypy, the test"
	@echo "    oracles torch==2.13.0 (CPU), flax, orbax, scikit-learn, and mkdocs (1.3 GB more)"
	$(PY) -m pip install -e '.[dev]'
	@echo "==> dev extras installed"
	@touch $@

demo: $(RUNTIME_STAMP)
	$(PY) -m funcopt demo

figures: $(RUNTIME_STAMP)
	$(PY) -m funcopt figures --out figures

bench: $(DEV_STAMP)
	$(PY) -m funcopt bench

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check funcopt tests examples
	$(VENV)/bin/ruff format --check funcopt tests examples

typecheck: $(DEV_STAMP)
	$(VENV)/bin/mypy funcopt

docs: $(DEV_STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

# optax's own test files run against funcopt (tests/optax_compat): fails below the floor
# in tests/optax_compat/FLOOR. `$(PY) tests/optax_compat/run.py --all --baseline` runs
# the slow tests too, and the same tests against optax itself.
compat: $(DEV_STAMP)
	$(PY) tests/optax_compat/run.py --check -n 2

test: lint typecheck compat
	$(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache .hypothesis
