"""Disentangling experiments entry point (one command per figure).

    python -m experiments.disentangle.main --config=experiments/disentangle/config.py:fig1 \
        --workdir=workdirs/disentangle/fig1 [--config.train.steps=20000 ...]

Variants ``fig1`` .. ``fig8_curved`` reproduce the paper's panels; append ``_smoke``
(or use ``smoke``) for a run of seconds. Rerunning with the same workdir resumes.

Both CPU cores: before JAX is imported this module asks XLA for
``$DISENTANGLE_HOST_DEVICES`` host devices (default: the number of usable cores),
and ``training.fit`` splits the vmapped networks over them. Set
``DISENTANGLE_HOST_DEVICES=1`` to keep one device; an ``XLA_FLAGS`` that already sets
``--xla_force_host_platform_device_count`` wins.
"""

import os


def _request_host_devices() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    try:
        default = len(os.sched_getaffinity(0))
    except AttributeError:
        default = os.cpu_count() or 1
    n = int(os.environ.get("DISENTANGLE_HOST_DEVICES", default))
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


_request_host_devices()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments.disentangle import experiment  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to the config file with a variant, e.g. config.py:fig1.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for this run's outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    experiment.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
