# Two entry points: `make demo` (main job on offline default data) and `make test`.
# Both create and reuse a local virtual environment in .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WORKDIR ?= workdirs/gbi_toy
PYTEST_ARGS ?=

# Compiled XLA programs are cached on disk between runs (tests, demo, sweeps).
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: demo test bench docs clean-venv

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,experiments]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.gbi_toy.main --config=experiments/gbi_toy/config.py --workdir=$(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

docs: $(STAMP)
	@test -f $(WORKDIR)/results.md || { echo "run 'make demo' first"; exit 1; }
	mkdir -p docs/gbi_toy
	cp $(WORKDIR)/results.md $(WORKDIR)/figures/summary.png docs/gbi_toy/

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m benchmarks.inference

clean-venv:
	rm -rf $(VENV)
