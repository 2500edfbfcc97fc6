"""From candidate lesions to the study-level call of the ICH model, and the choice of that
operating point on validation studies.

A candidate is one connected component of the thresholded voxel probability map,
summarised by its volume (mL), its score (the 95th percentile of the voxel probabilities
inside it) and its median HU. A candidate is a finding when it looks like acute blood
(median HU at most `max_median_hu`: calcification, bone and dura in partial volume are
denser), is large enough and confident enough. The study probability is the highest
lesion probability, on the operating scale of models.scoring (0.5 at the operating point).

Diagnosis that shaped this (validation seeds 20000.., the shipped weights): the old study
probability took the highest *voxel* probability outside the components as evidence, so
nearly every normal head carried 0.35-0.5 from a single voxel and sat in the triage
review band; false positives were mostly dense components (median 90-180 HU) in 5 mm
slabs averaged from thin slices, which a tighter HU limit removes; false negatives were
thin (< 3.5 mm) subdural collections blurred into the inner table, which no choice of
aggregation recovers (the network gives them no component at all).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from models.scoring import FLOOR, operating_probability
from pacsflow.errors import InvalidInputError

REVIEW_LOW = 0.35  # triage's default lower edge of the human-review band


@dataclass(frozen=True)
class Candidate:
    """One connected component of the thresholded probability map."""

    volume_ml: float
    score: float  # 95th percentile of the voxel probabilities inside it
    median_hu: float


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float = 0.5  # voxel probability that makes a component
    min_probability: float = 0.5  # minimum score of a finding (raw, before the scale)
    min_volume_ml: float = 0.3
    max_median_hu: float | None = 100.0  # acute blood measures about 40-100 HU

    @property
    def min_score(self) -> float:
        return max(self.threshold, self.min_probability)

    def is_blood(self, c: Candidate) -> bool:
        return self.max_median_hu is None or c.median_hu <= self.max_median_hu

    def is_finding(self, c: Candidate) -> bool:
        return self.is_blood(c) and c.volume_ml >= self.min_volume_ml and c.score >= self.min_score

    @classmethod
    def from_extra(cls, threshold: float, extra: Mapping[str, float | None]) -> OperatingPoint:
        """From a segmenter config's threshold and its `extra` post-processing values."""
        max_hu = extra.get("max_median_hu")
        return cls(
            threshold=threshold,
            min_probability=float(extra.get("min_probability") or 0.0),
            min_volume_ml=float(extra.get("min_volume_ml") or 0.0),
            max_median_hu=None if max_hu is None else float(max_hu),
        )

    def as_extra(self) -> dict[str, float]:
        """The post-processing values a segmenter config keeps in `extra`."""
        extra = {"min_volume_ml": self.min_volume_ml, "min_probability": self.min_probability}
        if self.max_median_hu is not None:
            extra["max_median_hu"] = self.max_median_hu
        return extra


def lesion_probability(c: Candidate, op: OperatingPoint) -> float:
    """A candidate's probability on the operating scale: >= 0.5 exactly when it is a
    finding. A dense candidate is not blood and carries no evidence (0). One under the
    minimum volume is scaled by the square of its volume ratio (a 0.1 mL speck against a
    0.3 mL minimum keeps a ninth), so that specks do not push a normal study into the
    review band while near misses still land just under 0.5."""
    if not op.is_blood(c):
        return 0.0
    p = operating_probability(c.score, min_score=op.min_score)
    if c.volume_ml < op.min_volume_ml:
        ratio = max(0.0, c.volume_ml) / op.min_volume_ml
        p = min(FLOOR, p * ratio * ratio)
    return round(p, 4)


def study_probability(candidates: Iterable[Candidate], op: OperatingPoint) -> float:
    """The highest lesion probability; 0 without candidates. Voxels under the threshold
    are not evidence: a single voxel has no volume."""
    return max((lesion_probability(c, op) for c in candidates), default=0.0)


# ---- choosing the operating point on validation studies -----------------------------------


@dataclass(frozen=True)
class Grid:
    thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
    min_probabilities: tuple[float, ...] = (0.5, 0.7, 0.9, 0.95, 0.99)
    min_volumes_ml: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)
    max_median_hu: tuple[float, ...] = (80.0, 85.0, 90.0, 95.0, 100.0)

    def points(self) -> Iterable[OperatingPoint]:
        for t, p, v, hu in itertools.product(
            self.thresholds, self.min_probabilities, self.min_volumes_ml, self.max_median_hu
        ):
            if p >= t or p == min(self.min_probabilities):  # p under t is the same as t
                yield OperatingPoint(t, p, v, hu)


@dataclass(frozen=True)
class ValidationStudy:
    """Ground truth of one validation study and its candidates at each grid threshold."""

    positive: bool
    candidates: Mapping[float, Sequence[Candidate]]


@dataclass(frozen=True)
class Outcome:
    point: OperatingPoint
    sensitivity: float
    specificity: float
    negatives_in_review_band: float

    def key(self) -> tuple[float, ...]:
        """Best: the worse of sensitivity and specificity, then their sum, then fewer
        normal studies in the review band, then the most permissive setting."""
        p = self.point
        return (
            round(min(self.sensitivity, self.specificity), 6),
            round(self.sensitivity + self.specificity, 6),
            -round(self.negatives_in_review_band, 6),
            -p.min_volume_ml,
            -p.min_score,
            p.max_median_hu or 0.0,
        )


def outcome(studies: Sequence[ValidationStudy], op: OperatingPoint) -> Outcome:
    pos = neg = tp = tn = band = 0
    for s in studies:
        candidates = s.candidates[op.threshold]
        called = any(op.is_finding(c) for c in candidates)
        if s.positive:
            pos += 1
            tp += called
        else:
            neg += 1
            tn += not called
            band += study_probability(candidates, op) >= REVIEW_LOW
    return Outcome(
        op,
        sensitivity=tp / pos if pos else 0.0,
        specificity=tn / neg if neg else 0.0,
        negatives_in_review_band=band / neg if neg else 0.0,
    )


def choose_operating_point(
    studies: Sequence[ValidationStudy], grid: Grid = Grid()
) -> tuple[Outcome, list[Outcome]]:
    """The best point of the grid on these studies, and every point's outcome."""
    if not studies:
        raise InvalidInputError("choosing an operating point needs at least one validation study")
    outcomes = [outcome(studies, op) for op in grid.points()]
    return max(outcomes, key=Outcome.key), outcomes
