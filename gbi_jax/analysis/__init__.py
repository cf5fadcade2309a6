"""Analysis: ideal observers, theory references and evaluation metrics.

GBI paper (Hummos et al. 2024):

ideal_observer  exact forward filter of the switching-Gaussian toy task and the
                likelihood traces one-step GBI scores should track.
metrics         Pearson, accuracy, AUROC (higher score = more OOD), calibration
                (reliability bins, ECE, temperature fit).

Disentangling paper (Vafidis et al. 2025):

theory          Eq. 7 ceiling, Bayes posterior-mean r^2, Bayes-optimal accuracy.
decoding        the OOD linear-decoding protocol and decoder angles.
dynamics        PCA, fixed points, Jacobian spectra, tuning and sparsity of RNNs.

Task geometry (orthant numbering, decision-line angles) lives with the task in
:mod:`gbi_jax.tasks.evidence`; the block statistics of the toy stream in
:mod:`gbi_jax.tasks.switching_gaussian`.
"""

from gbi_jax.analysis import ideal_observer, metrics
from gbi_jax.analysis.ideal_observer import (FilterResult, forward_filter,
                                             gaussian_log_likelihoods,
                                             hazard_from_block_lengths,
                                             switching_gaussian_filter,
                                             switching_transition_matrix,
                                             window_log_likelihood, window_sum)
from gbi_jax.analysis.metrics import (ReliabilityBins, accuracy, auroc, centered,
                                      expected_calibration_error, fit_temperature, pearson,
                                      reliability_bins)

__all__ = [
    "ideal_observer",
    "metrics",
    "FilterResult",
    "forward_filter",
    "gaussian_log_likelihoods",
    "hazard_from_block_lengths",
    "switching_gaussian_filter",
    "switching_transition_matrix",
    "window_log_likelihood",
    "window_sum",
    "ReliabilityBins",
    "accuracy",
    "auroc",
    "centered",
    "expected_calibration_error",
    "fit_temperature",
    "pearson",
    "reliability_bins",
]

from gbi_jax.analysis import decoding, dynamics, theory  # noqa: E402
from gbi_jax.analysis.decoding import (DECODER_STEPS, CrossValidation,  # noqa: E402
                                       cross_validate, cross_validated_r2, decoder_angles,
                                       decoder_steps, fit_linear_decoder, halfspace_orthants,
                                       id_r2, median_iqr, ood_r2, random_angle_baseline,
                                       sample_in_orthants)
from gbi_jax.analysis.dynamics import (AttractorSignature, FixedPoints,  # noqa: E402
                                       TuningGrid, active_fraction,
                                       continuous_attractor_signature, find_fixed_points,
                                       jacobian_eigenvalues, jacobians, lifetime_sparseness,
                                       pca, pca_transform, timescale_amplification,
                                       tuning_grid, unique_points)
from gbi_jax.analysis.theory import (UNIFORM_VAR, bayes_accuracy_2d,  # noqa: E402
                                     bayes_accuracy_mc, bayes_cross_entropy_2d, bce_floor,
                                     line_normals, posterior_mean_r2, r2_ceiling)

__all__ += [
    "decoding", "dynamics", "theory",
    "DECODER_STEPS", "CrossValidation", "cross_validate", "cross_validated_r2",
    "decoder_angles", "decoder_steps", "fit_linear_decoder", "halfspace_orthants", "id_r2",
    "median_iqr", "ood_r2", "random_angle_baseline", "sample_in_orthants",
    "AttractorSignature", "FixedPoints", "TuningGrid", "active_fraction",
    "continuous_attractor_signature", "find_fixed_points", "jacobian_eigenvalues",
    "jacobians", "lifetime_sparseness", "pca", "pca_transform", "timescale_amplification",
    "tuning_grid", "unique_points",
    "UNIFORM_VAR", "bayes_accuracy_2d", "bayes_accuracy_mc", "bayes_cross_entropy_2d",
    "bce_floor", "line_normals", "posterior_mean_r2", "r2_ceiling",
]
