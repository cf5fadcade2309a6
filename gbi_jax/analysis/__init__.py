"""Analysis: Bayesian ideal observers and evaluation metrics.

ideal_observer  exact forward filter of the switching-Gaussian toy task and the
                likelihood traces one-step GBI scores should track.
metrics         Pearson, accuracy, AUROC (higher score = more OOD), calibration.
"""

from gbi_jax.analysis import ideal_observer, metrics
from gbi_jax.analysis.ideal_observer import (FilterResult, forward_filter,
                                             gaussian_log_likelihoods,
                                             hazard_from_block_lengths, mean_block_length,
                                             switching_gaussian_filter,
                                             switching_transition_matrix,
                                             window_log_likelihood, window_sum)
from gbi_jax.analysis.metrics import (ReliabilityBins, accuracy, auroc, centered,
                                      expected_calibration_error, pearson, reliability_bins)

__all__ = [
    "ideal_observer",
    "metrics",
    "FilterResult",
    "forward_filter",
    "gaussian_log_likelihoods",
    "hazard_from_block_lengths",
    "mean_block_length",
    "switching_gaussian_filter",
    "switching_transition_matrix",
    "window_log_likelihood",
    "window_sum",
    "ReliabilityBins",
    "accuracy",
    "auroc",
    "centered",
    "expected_calibration_error",
    "pearson",
    "reliability_bins",
]
