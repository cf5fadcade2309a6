"""Shared pytest configuration.

Tests marked ``@pytest.mark.slow`` (paper-scale or long runs; the marker is
declared in setup.cfg) are skipped unless ``--runslow`` is given.
"""

import pytest


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
