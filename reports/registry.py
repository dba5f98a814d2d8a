"""Every report, in the order of the briefs (the index lists them in this order)."""

from __future__ import annotations

from reports import (
    attention_patterns,
    cross_run,
    eviction_patterns,
    head_specialization,
    keep_mass_vs_kl,
    kv_cache_layers,
    kv_cache_statistics,
    kv_caching,
    kv_pca_by_position,
    kv_quantization_error,
    kv_value_distribution,
    low_importance_tokens,
    needle_grid,
    strategy_comparison,
    token_importance_comparison,
    token_key_value_scatter,
    token_magnitude_distributions,
    token_magnitudes,
)

REPORTS = [
    kv_cache_layers.REPORT,
    kv_cache_statistics.REPORT,
    kv_value_distribution.REPORT,
    kv_pca_by_position.REPORT,
    head_specialization.REPORT,
    kv_quantization_error.REPORT,
    low_importance_tokens.REPORT,
    token_importance_comparison.REPORT,
    token_magnitude_distributions.REPORT,
    token_magnitudes.REPORT,
    token_key_value_scatter.REPORT,
    eviction_patterns.REPORT,
    strategy_comparison.REPORT,
    keep_mass_vs_kl.REPORT,
    attention_patterns.REPORT,
    kv_caching.REPORT,
    cross_run.REPORT,
    needle_grid.REPORT,
]
