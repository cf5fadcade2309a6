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

# Disentangling paper (spec disentangle.md 2, 4): Eq. 7 / ideal-observer references,
# the OOD decoding protocol, and attractor / tuning analyses.
from gbi_jax.analysis import decoding, dynamics, theory  # noqa: E402
from gbi_jax.analysis.decoding import (CrossValidation, cross_validate,  # noqa: E402
                                       cross_validated_r2, decoder_angles, decoder_steps,
                                       fit_linear_decoder, halfspace_orthants, id_r2,
                                       median_iqr, ood_r2, orthant_index, orthant_signs,
                                       random_angle_baseline, sample_in_orthants)
from gbi_jax.analysis.dynamics import (AttractorSignature, FixedPoints,  # noqa: E402
                                       TuningGrid, active_fraction,
                                       continuous_attractor_signature, find_fixed_points,
                                       jacobian_eigenvalues, jacobians, lifetime_sparseness,
                                       pca, pca_transform, timescale_amplification,
                                       tuning_grid, unique_points)
from gbi_jax.analysis.theory import (UNIFORM_VAR, bayes_accuracy_2d,  # noqa: E402
                                     bayes_accuracy_mc, bayes_cross_entropy_2d, bce_floor,
                                     line_angles, line_normals, posterior_mean_r2,
                                     r2_ceiling)

__all__ += [
    "decoding", "dynamics", "theory",
    "CrossValidation", "cross_validate", "cross_validated_r2", "decoder_angles",
    "decoder_steps", "fit_linear_decoder", "halfspace_orthants", "id_r2", "median_iqr",
    "ood_r2", "orthant_index", "orthant_signs", "random_angle_baseline",
    "sample_in_orthants",
    "AttractorSignature", "FixedPoints", "TuningGrid", "active_fraction",
    "continuous_attractor_signature", "find_fixed_points", "jacobian_eigenvalues",
    "jacobians", "lifetime_sparseness", "pca", "pca_transform", "timescale_amplification",
    "tuning_grid", "unique_points",
    "UNIFORM_VAR", "bayes_accuracy_2d", "bayes_accuracy_mc", "bayes_cross_entropy_2d",
    "bce_floor", "line_angles", "line_normals", "posterior_mean_r2", "r2_ceiling",
]
