"""Disentangling representations through multi-task learning (Vafidis et al. 2025, arXiv 2407.11249).

See ``docs/disentangle/README.md`` for each figure's command and the measured numbers.
"""
