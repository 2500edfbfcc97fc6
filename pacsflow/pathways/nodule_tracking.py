"""Lung nodules across a patient's CTs: align the exams, match nodules, measure growth.

Patients lie differently from one scan to the next and scanners place the origin of the
patient coordinate system (LPS) differently, so the same nodule sits at other coordinates
in each exam. The translation between two exams is estimated from the nodule centroids
themselves: every plausible pairing proposes an offset, the offset under which most nodules
coincide wins (ties: the smaller residual, then the smaller shift), and the mean offset of
its matched pairs refines it. Nodules are then matched by distance after alignment
(Hungarian assignment, scipy's linear_sum_assignment) within a gate of `tolerance_mm` plus
half the larger diameter, never across the midline, never between sizes more than
`max_size_ratio` apart.

With a single nodule in common the centroids cannot tell a shift from a different nodule:
pass `offset_mm` (from image registration) when it is known.

A nodule keeps the tracking identifier and tracking UID (DICOM TID 1500 "Tracking
Identifier" / "Tracking Unique Identifier") of the first exam that showed it; a new one gets
"N<k>" and a UID derived from (patient ID, study UID, finding index), so a re-run gives the
same UID.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import linear_sum_assignment

from pacsflow.domain import Finding
from pacsflow.errors import InvalidInputError
from pacsflow.pathways.lungrads import (
    LUNG_RADS_GROWTH_MM,
    NoduleState,
    NoduleType,
    lungrads_mean_diameter,
    nodule_type,
)

__all__ = [
    "VOLUME_NOISE_FRACTION",
    "Alignment",
    "Exam",
    "Growth",
    "Match",
    "NoduleObservation",
    "TrackedNodule",
    "estimate_offset",
    "growth_between",
    "label_findings",
    "match_nodules",
    "track_history",
    "tracking_uid",
    "volume_doubling_time",
]

# Semi-automated volumetry of the same nodule on two CTs differs by up to about 25 %
# (NELSON: a volume change < 25 % is not growth). A smaller change gives no doubling time.
VOLUME_NOISE_FRACTION = 0.25
DEFAULT_TOLERANCE_MM = 10.0
DEFAULT_MAX_SHIFT_MM = 150.0
DEFAULT_MAX_SIZE_RATIO = 3.0
# Fixed namespace of the name-based UUIDs behind tracking UIDs (2.25.<UUID>, PS3.5 B.2).
_TRACKING_NAMESPACE = uuid.UUID("6f1d4c3e-2b8a-5e7f-9c1d-70616373666c")
_FORBIDDEN = 1e9
# Among offsets that make as many nodules coincide, a shift of 10 cm weighs like 1 cm of
# residual distance: with one nodule in common, the nearer pairing is the likelier one.
_SHIFT_COST_PER_MM = 0.1

Vector = tuple[float, float, float]


def tracking_uid(patient_id: str, study_uid: str, index: int) -> str:
    """Tracking Unique Identifier of finding `index` (0-based) of the study where a nodule
    was first seen: 2.25.<name-based UUID> of the three, stable across re-runs."""
    name = "\x1f".join(("pacsflow-nodule", patient_id, study_uid, str(index)))
    return f"2.25.{uuid.uuid5(_TRACKING_NAMESPACE, name).int}"


# ---- alignment and matching --------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """prior + offset_mm lands in the current exam's coordinates."""

    offset_mm: Vector
    n_coincident: int
    residual_mm: float  # mean distance of the coinciding pairs after alignment


@dataclass(frozen=True)
class Match:
    current_index: int
    prior_index: int
    distance_mm: float  # after alignment
    offset_mm: Vector


def _size_mm(f: Finding) -> float:
    if f.mean_diameter_mm is not None:
        return f.mean_diameter_mm
    if f.diameter_mm is not None:
        return f.diameter_mm
    if f.volume_ml is not None:  # equivalent sphere
        return 2.0 * (3.0 * f.volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    return 0.0


def _centroids(findings: Sequence[Finding], which: str) -> np.ndarray:
    out = np.zeros((len(findings), 3))
    for i, f in enumerate(findings):
        if f.centroid_mm is None:
            raise InvalidInputError(f"{which} finding {i} has no centroid_mm: it cannot be tracked")
        out[i] = f.centroid_mm
    return out


def _allowed(current: Sequence[Finding], prior: Sequence[Finding], max_ratio: float) -> np.ndarray:
    """Pairs that may be the same nodule whatever the offset: same side, plausible sizes."""
    ok = np.ones((len(current), len(prior)), dtype=bool)
    for i, c in enumerate(current):
        for j, p in enumerate(prior):
            sc, sp = _size_mm(c), _size_mm(p)
            if sc > 0 and sp > 0 and max(sc, sp) / min(sc, sp) > max_ratio:
                ok[i, j] = False
            if c.location.side and p.location.side and c.location.side != p.location.side:
                ok[i, j] = False
    return ok


def _gates(current: Sequence[Finding], prior: Sequence[Finding], tolerance: float) -> np.ndarray:
    sc = np.array([_size_mm(f) for f in current])
    sp = np.array([_size_mm(f) for f in prior])
    return tolerance + np.maximum(sc[:, None], sp[None, :]) / 2.0


def _assign(
    cur: np.ndarray,
    pri: np.ndarray,
    offset: np.ndarray,
    allowed: np.ndarray,
    gates: np.ndarray,
    size_cost: np.ndarray,
) -> list[tuple[int, int, float]]:
    dist = np.linalg.norm(cur[:, None, :] - (pri[None, :, :] + offset), axis=2)
    ok = allowed & (dist <= gates)
    cost = np.where(ok, dist + size_cost, _FORBIDDEN)
    rows, cols = linear_sum_assignment(cost)
    return [
        (int(i), int(j), float(dist[i, j])) for i, j in zip(rows, cols, strict=True) if ok[i, j]
    ]


def _size_cost(current: Sequence[Finding], prior: Sequence[Finding]) -> np.ndarray:
    # A few millimetres per e-fold of size difference: breaks ties between close nodules
    # in favour of the pairing that keeps sizes alike.
    sc = np.array([max(_size_mm(f), 0.5) for f in current])
    sp = np.array([max(_size_mm(f), 0.5) for f in prior])
    return 2.0 * np.abs(np.log(sc[:, None] / sp[None, :]))


def _align(
    current: Sequence[Finding],
    prior: Sequence[Finding],
    *,
    tolerance_mm: float,
    max_shift_mm: float,
    max_size_ratio: float,
) -> Alignment:
    if not current or not prior:
        return Alignment((0.0, 0.0, 0.0), 0, 0.0)
    cur, pri = _centroids(current, "current"), _centroids(prior, "prior")
    allowed = _allowed(current, prior, max_size_ratio)
    gates = _gates(current, prior, tolerance_mm)
    sizes = _size_cost(current, prior)
    candidates = [np.zeros(3)]
    for i, j in zip(*np.nonzero(allowed), strict=True):
        shift = cur[i] - pri[j]
        if np.linalg.norm(shift) <= max_shift_mm:
            candidates.append(shift)

    def score(offset: np.ndarray) -> tuple[int, float, list[tuple[int, int, float]]]:
        pairs = _assign(cur, pri, offset, allowed, gates, sizes)
        cost = sum(d + sizes[i, j] for i, j, d in pairs)
        return len(pairs), cost + _SHIFT_COST_PER_MM * float(np.linalg.norm(offset)), pairs

    # Most coinciding nodules first; among equals, the least residual + size + shift cost.
    n, _, pairs, offset = min(
        ((*score(t), t) for t in candidates), key=lambda s: (-s[0], round(s[1], 6))
    )
    for _ in range(3):  # refine: the mean offset of the pairs that coincide
        if not pairs:
            break
        refined = np.mean([cur[i] - pri[j] for i, j, _ in pairs], axis=0)
        if np.linalg.norm(refined) > max_shift_mm:
            break
        n2, _, pairs2 = score(refined)
        if n2 < n or np.allclose(refined, offset):
            break
        n, pairs, offset = n2, pairs2, refined
    residual = float(np.mean([d for _, _, d in pairs])) if pairs else 0.0
    return Alignment((float(offset[0]), float(offset[1]), float(offset[2])), n, residual)


def estimate_offset(
    current: Sequence[Finding],
    prior: Sequence[Finding],
    *,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    max_shift_mm: float = DEFAULT_MAX_SHIFT_MM,
    max_size_ratio: float = DEFAULT_MAX_SIZE_RATIO,
) -> Alignment:
    """The translation from the prior exam's patient coordinates to the current one's."""
    return _align(
        current,
        prior,
        tolerance_mm=tolerance_mm,
        max_shift_mm=max_shift_mm,
        max_size_ratio=max_size_ratio,
    )


def match_nodules(
    current: Sequence[Finding],
    prior: Sequence[Finding],
    *,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    max_shift_mm: float = DEFAULT_MAX_SHIFT_MM,
    max_size_ratio: float = DEFAULT_MAX_SIZE_RATIO,
    offset_mm: Vector | None = None,
) -> list[Match]:
    """Pairs (current, prior) that are the same nodule, by current index. Unpaired current
    nodules are new; unpaired prior nodules are gone (or missed)."""
    if not current or not prior:
        return []
    if offset_mm is None:
        offset_mm = _align(
            current,
            prior,
            tolerance_mm=tolerance_mm,
            max_shift_mm=max_shift_mm,
            max_size_ratio=max_size_ratio,
        ).offset_mm
    pairs = _assign(
        _centroids(current, "current"),
        _centroids(prior, "prior"),
        np.asarray(offset_mm, dtype=float),
        _allowed(current, prior, max_size_ratio),
        _gates(current, prior, tolerance_mm),
        _size_cost(current, prior),
    )
    return sorted(
        (Match(i, j, round(d, 3), offset_mm) for i, j, d in pairs),
        key=lambda m: m.current_index,
    )


# ---- growth ------------------------------------------------------------------------------


def volume_doubling_time(
    v1_mm3: float, v2_mm3: float, interval_days: float, *, noise: float = VOLUME_NOISE_FRACTION
) -> float | None:
    """VDT = dt * ln 2 / ln(V2 / V1), in days. None when the nodule did not grow beyond the
    measurement noise (V2 <= V1 * (1 + noise)) or no time passed."""
    if v1_mm3 <= 0 or v2_mm3 <= 0 or interval_days <= 0:
        return None
    if v2_mm3 <= v1_mm3 * (1.0 + noise):
        return None
    return interval_days * math.log(2.0) / math.log(v2_mm3 / v1_mm3)


class NoduleObservation(BaseModel):
    """One nodule on one exam, in that exam's own patient coordinates."""

    model_config = ConfigDict(frozen=True)

    study_uid: str
    study_date: date
    finding_index: int = Field(description="index in the exam's findings")
    nodule_type: NoduleType
    mean_diameter_mm: float
    diameter_mm: float | None = None
    volume_mm3: float | None = None
    solid_component_mm: float | None = None
    centroid_mm: Vector
    finding: Finding | None = Field(None, description="the finding as the model reported it")


class Growth(BaseModel):
    model_config = ConfigDict(frozen=True)

    from_study_uid: str
    to_study_uid: str
    interval_days: int
    mean_diameter_change_mm: float
    volume_change_mm3: float | None = None
    volume_change_pct: float | None = None
    vdt_days: float | None = Field(
        None, description="volume doubling time; None: not growing beyond measurement noise"
    )
    volume_stable: bool | None = Field(
        None, description="volume change within the +/-25 % measurement noise"
    )


def growth_between(
    before: NoduleObservation, after: NoduleObservation, *, noise: float = VOLUME_NOISE_FRACTION
) -> Growth:
    days = (after.study_date - before.study_date).days
    change = lungrads_mean_diameter(after.mean_diameter_mm) - lungrads_mean_diameter(
        before.mean_diameter_mm
    )
    v1, v2 = before.volume_mm3, after.volume_mm3
    volume_change = pct = vdt = stable = None
    if v1 is not None and v2 is not None and v1 > 0:
        volume_change = round(v2 - v1, 3)
        pct = round(100.0 * (v2 - v1) / v1, 2)
        stable = abs(v2 - v1) <= noise * v1
        vdt = volume_doubling_time(v1, v2, days, noise=noise)
    return Growth(
        from_study_uid=before.study_uid,
        to_study_uid=after.study_uid,
        interval_days=days,
        mean_diameter_change_mm=round(change, 1),
        volume_change_mm3=volume_change,
        volume_change_pct=pct,
        vdt_days=None if vdt is None else round(vdt, 1),
        volume_stable=stable,
    )


# ---- history -----------------------------------------------------------------------------


class Exam(BaseModel):
    """One CT of the patient with the nodules found on it."""

    model_config = ConfigDict(frozen=True)

    study_uid: str
    study_date: date
    findings: list[Finding] = Field(default_factory=list)


class TrackedNodule(BaseModel):
    model_config = ConfigDict(frozen=True)

    tracking_id: str
    tracking_uid: str
    observations: list[NoduleObservation] = Field(description="oldest first")
    in_latest: bool = Field(description="seen on the newest exam; False: resolved or missed")
    has_priors: bool = Field(description="the history holds exams before the newest")
    growth_vs_previous: Growth | None = None
    growth_vs_first: Growth | None = None
    vdt_days: float | None = Field(None, description="from the first to the last observation")
    state: NoduleState | None = Field(None, description="for the guidelines, newest exam only")

    @property
    def first_seen(self) -> NoduleObservation:
        return self.observations[0]

    @property
    def last_seen(self) -> NoduleObservation:
        return self.observations[-1]

    @property
    def current(self) -> NoduleObservation | None:
        """The observation on the newest exam; None when the nodule is not on it."""
        return self.observations[-1] if self.in_latest else None

    @property
    def previous(self) -> NoduleObservation | None:
        """The last observation before the newest exam's; None for a nodule seen only now
        (new, or the baseline) and for one not on the newest exam."""
        return self.observations[-2] if self.in_latest and len(self.observations) > 1 else None

    @property
    def diameter_change_mm(self) -> float | None:
        """Mean diameter change since the previous observation."""
        g = self.growth_vs_previous
        return None if g is None else g.mean_diameter_change_mm

    @property
    def volume_change_pct(self) -> float | None:
        """Volume change since the first observation, in percent."""
        g = self.growth_vs_first
        return None if g is None else g.volume_change_pct

    @property
    def doubling_time_days(self) -> float | None:
        return self.vdt_days


@dataclass
class _Track:
    observations: list[NoduleObservation]
    findings: list[Finding]
    frame_offsets: list[np.ndarray]  # reference frame -> exam frame, per observation


def _observe(exam: Exam, index: int, finding: Finding) -> NoduleObservation:
    if finding.mean_diameter_mm is None and finding.diameter_mm is None:
        raise InvalidInputError(f"exam {exam.study_uid} finding {index} has no diameter")
    return NoduleObservation(
        study_uid=exam.study_uid,
        study_date=exam.study_date,
        finding_index=index,
        nodule_type=nodule_type(finding.subtype),
        mean_diameter_mm=_size_mm(finding),
        diameter_mm=finding.diameter_mm,
        volume_mm3=None if finding.volume_ml is None else finding.volume_ml * 1000.0,
        solid_component_mm=finding.solid_diameter_mm,
        centroid_mm=_centroids([finding], f"exam {exam.study_uid}")[0].tolist(),
        finding=finding,
    )


def _grew(a: float, b: float) -> bool:
    return lungrads_mean_diameter(b) - lungrads_mean_diameter(a) > LUNG_RADS_GROWTH_MM + 1e-9


def _state(tracking_id: str, obs: list[NoduleObservation], n_exams: int) -> NoduleState:
    last = obs[-1]
    prev = obs[-2] if len(obs) > 1 else None
    stable_from: NoduleObservation | None = None
    for earlier in reversed(obs[:-1]):  # back in time while the nodule has not grown since
        if _grew(earlier.mean_diameter_mm, last.mean_diameter_mm):
            break
        stable_from = earlier
    growing_now = prev is not None and _grew(prev.mean_diameter_mm, last.mean_diameter_mm)
    slow = (
        len(obs) >= 3 and not growing_now and _grew(obs[0].mean_diameter_mm, last.mean_diameter_mm)
    )
    prior_solid = None
    if prev is not None:
        prior_solid = 0.0 if prev.nodule_type == "ground-glass" else prev.solid_component_mm
    solid = last.solid_component_mm if last.nodule_type == "part-solid" else None
    return NoduleState(
        tracking_id=tracking_id,
        nodule_type=last.nodule_type,
        mean_diameter_mm=last.mean_diameter_mm,
        solid_component_mm=None if solid is None else min(solid, last.mean_diameter_mm),
        volume_mm3=last.volume_mm3,
        is_new=prev is None and n_exams > 1,
        prior_mean_diameter_mm=None if prev is None else prev.mean_diameter_mm,
        prior_solid_component_mm=prior_solid if last.nodule_type == "part-solid" else None,
        interval_days=None if prev is None else (last.study_date - prev.study_date).days,
        stable_days=(
            None
            if prev is None
            else (last.study_date - stable_from.study_date).days
            if stable_from is not None
            else 0
        ),
        days_since_first_seen=(last.study_date - obs[0].study_date).days,
        slow_growing=slow,
    )


def track_history(
    exams: Sequence[Exam],
    *,
    patient_id: str,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    max_shift_mm: float = DEFAULT_MAX_SHIFT_MM,
    max_size_ratio: float = DEFAULT_MAX_SIZE_RATIO,
) -> list[TrackedNodule]:
    """Follow every nodule through the exams (oldest first, the newest is the one assessed).

    Each exam is aligned to and matched against the last position of every nodule seen so
    far (in the first exam's frame), so a nodule missed on one exam is picked up again on
    the next. Nodule findings only; other kinds are ignored. Returns the nodules in the
    order they were first seen, with the guideline state for those on the newest exam.
    """
    if not exams:
        return []
    ordered = list(exams)
    for a, b in itertools.pairwise(ordered):
        if b.study_date < a.study_date:
            raise InvalidInputError(
                f"exams must be oldest first: {b.study_uid} ({b.study_date}) follows "
                f"{a.study_uid} ({a.study_date})"
            )
    if len({e.study_uid for e in ordered}) != len(ordered):
        raise InvalidInputError("the same study appears twice in the history")

    tracks: list[_Track] = []
    for exam in ordered:
        indexed = [(i, f) for i, f in enumerate(exam.findings) if f.kind == "nodule"]
        current = [f for _, f in indexed]
        # Every track's latest sighting, moved into the reference (first exam's) frame.
        known = [
            t.findings[-1].model_copy(
                update={
                    "centroid_mm": tuple(
                        (np.asarray(t.observations[-1].centroid_mm) - t.frame_offsets[-1]).tolist()
                    )
                }
            )
            for t in tracks
        ]
        alignment = _align(
            current,
            known,
            tolerance_mm=tolerance_mm,
            max_shift_mm=max_shift_mm,
            max_size_ratio=max_size_ratio,
        )
        offset = np.asarray(alignment.offset_mm)
        matches = match_nodules(
            current,
            known,
            tolerance_mm=tolerance_mm,
            max_size_ratio=max_size_ratio,
            offset_mm=alignment.offset_mm,
        )
        by_current = {m.current_index: m.prior_index for m in matches}
        for k, (index, finding) in enumerate(indexed):
            obs = _observe(exam, index, finding)
            if k in by_current:
                track = tracks[by_current[k]]
                track.observations.append(obs)
                track.findings.append(finding)
                track.frame_offsets.append(offset)
            else:
                tracks.append(_Track([obs], [finding], [offset]))

    newest = ordered[-1].study_uid
    # Identifiers given on an earlier run (e.g. read back from a prior SR) are kept: the
    # earliest sighting that carries both wins.
    kept = [
        next(
            (
                (f.tracking_id, f.tracking_uid)
                for f in t.findings
                if f.tracking_id and f.tracking_uid
            ),
            None,
        )
        for t in tracks
    ]
    used = {ids[0] for ids in kept if ids is not None}
    next_number = 1
    out: list[TrackedNodule] = []
    for t, ids in zip(tracks, kept, strict=True):
        if ids is not None:
            tid, tuid = ids
        else:
            while f"N{next_number}" in used:
                next_number += 1
            tid = f"N{next_number}"
            used.add(tid)
            first = t.observations[0]
            tuid = tracking_uid(patient_id, first.study_uid, first.finding_index)
        obs = t.observations
        in_latest = obs[-1].study_uid == newest
        vs_first = growth_between(obs[0], obs[-1]) if len(obs) > 1 else None
        out.append(
            TrackedNodule(
                tracking_id=tid,
                tracking_uid=tuid,
                observations=obs,
                in_latest=in_latest,
                has_priors=len(ordered) > 1,
                growth_vs_previous=growth_between(obs[-2], obs[-1]) if len(obs) > 1 else None,
                growth_vs_first=vs_first,
                vdt_days=None if vs_first is None else vs_first.vdt_days,
                state=_state(tid, obs, len(ordered)) if in_latest else None,
            )
        )
    return out


def label_findings(exam: Exam, tracked: Sequence[TrackedNodule]) -> list[Finding]:
    """The exam's findings with the tracking identifier and UID of their nodule filled in
    (for the SR and SEG, which reuse a finding's tracking UID)."""
    ids = {
        o.finding_index: (t.tracking_id, t.tracking_uid)
        for t in tracked
        for o in t.observations
        if o.study_uid == exam.study_uid
    }
    return [
        f.model_copy(update={"tracking_id": ids[i][0], "tracking_uid": ids[i][1]})
        if i in ids
        else f
        for i, f in enumerate(exam.findings)
    ]
