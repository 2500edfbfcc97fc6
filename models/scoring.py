"""Lesion and study probabilities on one scale whose 0.5 is the model's operating point.

A component of the thresholded probability map becomes a finding only when its score (the
95th percentile of the voxel probabilities inside it) reaches the calibrated minimum and
it is large enough. Reporting the raw score would let a rejected speck carry 0.9 and push
a normal study into the worklist's uncertain band; mapping scores piecewise-linearly so
that the operating point sits at 0.5 keeps three statements consistent: a study with a
finding has probability >= 0.5, one without has < 0.5, and near misses land just under
0.5, where the triage rules send them to human review.
"""

from __future__ import annotations

FLOOR = 0.499  # the highest probability a rejected component may carry


def operating_probability(
    score: float, *, min_score: float, size: float = 1.0, min_size: float = 0.0
) -> float:
    """Map a raw score in [0, 1] so that `min_score` maps to 0.5; a component under
    `min_size` (any unit) is scaled down by size / min_size and stays under 0.5."""
    score = min(1.0, max(0.0, score))
    m = min(0.999, max(1e-6, min_score))
    if score >= m:
        p = 0.5 + 0.5 * (score - m) / (1.0 - m)
    else:
        p = 0.5 * score / m
    if min_size > 0 and size < min_size:
        p = min(FLOOR, p * max(0.0, size) / min_size)
    return round(min(1.0, max(0.0, p)), 4)
