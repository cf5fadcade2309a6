"""Shared pytest configuration.

Tests marked ``@pytest.mark.slow`` (paper-scale or long runs; the marker is
declared in setup.cfg) are skipped unless ``--runslow`` is given. Tests marked
``@pytest.mark.float64`` (they switch on ``jax.enable_x64``) run on CPU and GPU only,
and every test computes its float32 matmuls at full precision (GPUs and TPUs default to
faster reduced-precision passes), so the suite checks the same numbers on any machine.
Multi-device checks start their own processes on CPU host devices
(``JAX_PLATFORMS=cpu``, ``--xla_force_host_platform_device_count``).
"""

import os
import sys

import pytest

# Persistent XLA compilation cache shared by the test process and the CLI
# subprocesses it starts (same programs compile once per machine). Set before
# JAX is imported by any test module.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_ROOT, ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
# Machine-adaptive settings (gbi_jax.autotune) are cached next to the compiled programs,
# not in the user's home.
os.environ.setdefault("GBI_JAX_AUTOTUNE_CACHE", os.path.join(_ROOT, ".jax_cache",
                                                             "autotune.json"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked 'slow' (paper-scale, minutes)")


def pytest_collection_modifyitems(config, items):
    if any("float64" in item.keywords for item in items):
        import jax

        if jax.default_backend() not in ("cpu", "gpu"):
            skip64 = pytest.mark.skip(
                reason=f"float64 test: {jax.default_backend()} has no float64 arithmetic")
            for item in items:
                if "float64" in item.keywords:
                    item.add_marker(skip64)
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def _full_precision_matmuls(request):
    """Full float32 matmul precision inside every JAX test (a no-op on CPU)."""
    if "jax" not in sys.modules:
        yield
        return
    import jax

    with jax.default_matmul_precision("highest"):
        yield
