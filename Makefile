# Two entry points: `make demo` (main job on offline default data) and `make test`.
# Both create and reuse a local virtual environment in .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WORKDIR ?= workdirs/gbi_toy
WORKDIRS ?= workdirs
PYTEST_ARGS ?=

# Compiled XLA programs are cached on disk between runs (tests, demo, sweeps).
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: demo test bench bench-sweep bench-projection docs clean-venv

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,experiments,slurm]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.gbi_toy.main --config=experiments/gbi_toy/config.py --workdir=$(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Rebuild the committed tables and figures under docs/ from the workdirs under
# $(WORKDIRS) (ONLY=gbi_toy,disentangle/fig2 for some); lists the missing workdirs.
docs: $(STAMP)
	$(PY) -m launch.docs --workdirs=$(WORKDIRS) $(if $(ONLY),--only=$(ONLY))

# Every benchmark (15-29 min on 2 cores, by CPU); writes
# docs/benchmarks/{inference,disentangle_train,chunk_size}.md.
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m benchmarks.inference
	$(PY) -m benchmarks.disentangle_train
	$(PY) -m benchmarks.chunk_size

# Machine time of every disentangling panel's networks, per-figure runs against packed
# programs, at a reduced step budget (1-2 h on 2 cores: 108 min on an AVX2 EPYC); writes
# docs/benchmarks/sweep_packing.md.
bench-sweep: $(STAMP)
	$(PY) -m benchmarks.sweep_packing

# The same two sweeps' training projected at the full budget from every program built,
# compiled and timed in one process (about 1 h on 2 cores, most of it the member_block
# probes); writes docs/benchmarks/sweep_projection.md.
bench-projection: $(STAMP)
	$(PY) -m benchmarks.sweep_projection

clean-venv:
	rm -rf $(VENV)
