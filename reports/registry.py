"""Every report, in the order of the briefs (the index lists them in this order)."""

from __future__ import annotations

from reports import (
    head_specialization,
    kv_cache_layers,
    kv_cache_statistics,
    kv_pca_by_position,
    kv_quantization_error,
    kv_value_distribution,
)

REPORTS = [
    kv_cache_layers.REPORT,
    kv_cache_statistics.REPORT,
    kv_value_distribution.REPORT,
    kv_pca_by_position.REPORT,
    head_specialization.REPORT,
    kv_quantization_error.REPORT,
]
