"""The benchmark scripts' profiling path runs and attributes time to real ops.

Benchmarks are not timed in tests; this checks only that ``--profile`` works end to
end on a tiny program (a subprocess: the XLA flag must be set before JAX starts).
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_disentangle_train_profile_lists_the_step_ops():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.disentangle_train", "--profile", "--members", "2",
         "--devices", "1", "--steps", "3"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "2 networks (2 per device on 1 device(s), blocks of 2), 3 steps traced" in text
    rows = [line.split() for line in text.splitlines()[3:] if line.strip()]
    assert len(rows) >= 10, text
    # Each row is one HLO op (a single name, not the runtime's "end: <op>" completion markers
    # or its "ThunkExecutor::..." events) with a positive time; the encoder's 100-wide hidden
    # layer over the 2 x 16 x 20 stimulus samples is among the profiled ops.
    for r in rows:
        assert re.fullmatch(r"[\w.\-]+", r[0]), text
        assert float(r[1]) > 0, text
    assert any(r[4].startswith("f32[2,320,100]") for r in rows), text
