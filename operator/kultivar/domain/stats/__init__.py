"""The statistics Kultivar decides with. Pure functions (numpy/scipy), deterministic for a given seed.

- :mod:`.bootstrap`: paired bootstrap interval of metric(a) - metric(b) on the same held-out rows (the gate).
- :mod:`.segments`: metrics per value of categorical features and the gate's per-segment regression check.
- :mod:`.live`: live performance from feedback counters, with counter-reset-aware window deltas.
- :mod:`.canary`: two-proportion z-test and Welch's t-test for a canary against stable on live outcomes.
- :mod:`.sequential`: mSPRT always-valid p-values for A/B tests looked at every interval.
"""

from kultivar.domain.stats.bootstrap import (
    BootstrapInterval,
    bootstrap_differences,
    bootstrap_indices,
    paired_bootstrap_difference,
)
from kultivar.domain.stats.canary import (
    CanaryVerdict,
    TestResult,
    canary_error_verdict,
    canary_proportion_verdict,
    two_proportion_ztest,
    welch_ttest_from_sums,
)
from kultivar.domain.stats.live import (
    ClassificationPerformance,
    RegressionPerformance,
    RegressionSums,
    classification_performance,
    delta,
    regression_performance,
)
from kultivar.domain.stats.metrics import LOWER_IS_BETTER, higher_is_better, improvement, score
from kultivar.domain.stats.segments import SegmentMetric, SegmentRegression, segment_metrics, worst_segment_regression
from kultivar.domain.stats.sequential import ABTestLook, ABTestState, ab_test_look, always_valid_p_values

__all__ = [
    "LOWER_IS_BETTER",
    "ABTestLook",
    "ABTestState",
    "BootstrapInterval",
    "CanaryVerdict",
    "ClassificationPerformance",
    "RegressionPerformance",
    "RegressionSums",
    "SegmentMetric",
    "SegmentRegression",
    "TestResult",
    "ab_test_look",
    "always_valid_p_values",
    "bootstrap_differences",
    "bootstrap_indices",
    "canary_error_verdict",
    "canary_proportion_verdict",
    "classification_performance",
    "delta",
    "higher_is_better",
    "improvement",
    "paired_bootstrap_difference",
    "regression_performance",
    "score",
    "segment_metrics",
    "two_proportion_ztest",
    "welch_ttest_from_sums",
    "worst_segment_regression",
]
