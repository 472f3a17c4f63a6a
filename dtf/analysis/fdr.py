"""Benjamini-Hochberg false-discovery control over a family of p-values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dtf.analysis.series import FloatArray


def benjamini_hochberg(p_values: Sequence[float] | FloatArray) -> FloatArray:
    """BH-adjusted p-values (q-values), in the input order.

    Rejecting every hypothesis whose q-value is at most ``q`` keeps the expected
    share of false discoveries among the rejections at most ``q``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p.copy()
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted_sorted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    adjusted = np.empty_like(p)
    adjusted[order] = adjusted_sorted
    return adjusted
