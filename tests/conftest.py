"""Shared pytest configuration.

Tests marked ``@pytest.mark.slow`` (paper-scale or long runs; the marker is
declared in setup.cfg) are skipped unless ``--runslow`` is given.
"""

import os

import pytest

# Persistent XLA compilation cache shared by the test process and the CLI
# subprocesses it starts (same programs compile once per machine). Set before
# JAX is imported by any test module.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_ROOT, ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked 'slow' (paper-scale, minutes)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
