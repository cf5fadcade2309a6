"""Disentangling representations through multi-task learning (spec disentangle.md).

See ``docs/disentangle/README.md`` for each figure's command and the measured numbers.
"""
