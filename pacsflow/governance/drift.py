"""Drift of what a model sees and says, against a reference profile (its evaluation set).

Per inference the pathway records a few features of its input and output
(`inference_features`: manufacturer, kernel, slice thickness, kVp, soft-tissue mean and
spread of HU inside the body; plus the score and the inference latency). A reference
profile summarises records of the evaluation set; `compare` sets recent records against
it:

- numeric features: population stability index (PSI) over bins cut at the reference's
  quantiles, plus a bin below the reference minimum and one above its maximum, and the
  two-sample Kolmogorov-Smirnov test. A feature alerts when its PSI reaches the threshold
  AND the KS p-value is below alpha: PSI alone on a window of 100 studies and 10 bins is
  noisy (its sampling mean is about (bins - 1) * (1/n + 1/m) = 0.1), KS alone flags
  shifts too small to matter.
- categorical features (manufacturer, kernel): PSI over the categories; a vendor or kernel
  never seen in the reference weighs heavily (its reference share is floored at 1e-4).
- the rate of studies the pathway could not analyse (validation failures), against the
  reference's; and the p95 of inference latency, against a multiple of the reference's
  (with the median risen too, so a few slow outliers do not alert).

Pure functions over plain records; reading records from pathway_runs is `recent_records`.
Settings: `DriftSettings` (pacsflow.config), group `drift`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.stats import ks_2samp
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config.settings import DriftSettings
from pacsflow.db.tables import PathwayRun
from pacsflow.domain import Priority
from pacsflow.errors import InvalidInputError
from pacsflow.pathways.headers import InstanceHeader

NUMERIC_FEATURES = (
    "score",
    "slice_thickness_mm",
    "kvp",
    "image_mean_hu",
    "image_std_hu",
    "latency_s",
)
CATEGORICAL_FEATURES = ("manufacturer", "kernel")
PSI_FLOOR = 1e-4  # share given to an empty bin or an unseen category
KS_SAMPLE_MAX = 5000  # reference values kept in the profile for the KS test
PROFILE_FORMAT = 1

# "Inside the body": above this HU (air and the table's foam are below it).
BODY_MIN_HU = -500.0
# Soft tissue, the window the statistics use: bone (a tenth of a head's volume at
# 1000+ HU) would otherwise swamp the spread, and noise shows in soft tissue.
SOFT_TISSUE_HU = (-100.0, 150.0)


# --- features of one inference ----------------------------------------------------------
@dataclass(frozen=True)
class VolumeStats:
    """HU statistics of a volume inside the body, in the soft-tissue window."""

    voxels: int  # soft-tissue voxels inside the body that were read
    body_fraction: float  # share of the volume inside the body
    mean_hu: float | None
    std_hu: float | None


def body_intensity_stats(hu: np.ndarray, *, step: int = 2) -> VolumeStats:
    """Mean and standard deviation of HU over body voxels in the soft-tissue window
    (-100..150 HU). A (z, y, x) volume is read in slabs of slices at every `step`-th row
    and column (a quarter of the voxels by default: the same statistics within noise, and
    about 0.1 s for 36 slices of 512 x 512); any other shape is read whole."""
    values = np.asarray(hu)
    if values.size == 0:
        raise InvalidInputError("volume is empty: no intensity statistics")
    if values.ndim == 3:
        slabs = (values[z : z + 8, ::step, ::step] for z in range(0, values.shape[0], 8))
    else:
        slabs = iter([values])
    n = body = total = 0
    total_hu = total_sq = 0.0
    for slab in slabs:
        inside = slab > BODY_MIN_HU
        soft = inside & (slab >= SOFT_TISSUE_HU[0]) & (slab <= SOFT_TISSUE_HU[1])
        picked = slab[soft].astype(np.float64)
        n += picked.size
        total_hu += float(picked.sum())
        total_sq += float(np.dot(picked, picked))
        body += int(inside.sum())
        total += slab.size
    body_fraction = round(body / total, 4)
    if n < 2:
        return VolumeStats(voxels=n, body_fraction=body_fraction, mean_hu=None, std_hu=None)
    mean = total_hu / n
    variance = max(total_sq / n - mean * mean, 0.0)  # window-bounded HU: no cancellation
    return VolumeStats(
        voxels=n,
        body_fraction=body_fraction,
        mean_hu=round(mean, 3),
        std_hu=round(math.sqrt(variance), 3),
    )


def _median(values: Iterable[float | None]) -> float | None:
    found = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return round(float(np.median(found)), 4) if found else None


def _most_common(values: Iterable[str]) -> str | None:
    counted = Counter(v.strip() for v in values if v and v.strip())
    return counted.most_common(1)[0][0] if counted else None


def inference_features(
    headers: Sequence[InstanceHeader], volume_stats: VolumeStats | None
) -> dict[str, Any]:
    """What pathway_runs.features should hold for drift monitoring, from the headers of the
    analysed series and the statistics of its volume (`body_intensity_stats(volume.hu)`).

    Manufacturer is upper-cased (sites write "Philips" and "PHILIPS" for one vendor); the
    kernel is kept as written (kernel names are case-sensitive codes). Thickness and kVp
    are medians over the instances. JSON-ready values; None where unknown.
    """
    manufacturer = _most_common(h.manufacturer for h in headers)
    return {
        "manufacturer": manufacturer.upper() if manufacturer else None,
        "kernel": _most_common(h.kernel for h in headers),
        "slice_thickness_mm": _median(h.slice_thickness for h in headers),
        "kvp": _median(h.kvp for h in headers),
        "image_mean_hu": volume_stats.mean_hu if volume_stats else None,
        "image_std_hu": volume_stats.std_hu if volume_stats else None,
    }


# --- records ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftRecord:
    """One inference as drift monitoring sees it (identifiers and features, no PHI)."""

    study_uid: str
    manufacturer: str | None = None
    kernel: str | None = None
    slice_thickness_mm: float | None = None
    kvp: float | None = None
    image_mean_hu: float | None = None
    image_std_hu: float | None = None
    score: float | None = None
    latency_s: float | None = None
    validation_failed: bool = False
    model_version: str = ""

    def value(self, feature: str) -> Any:
        return getattr(self, feature)

    @classmethod
    def from_features(
        cls,
        study_uid: str,
        features: Mapping[str, Any],
        *,
        score: float | None,
        latency_s: float | None,
        validation_failed: bool,
        model_version: str = "",
    ) -> DriftRecord:
        def number(key: str) -> float | None:
            value = features.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            return float(value) if math.isfinite(value) else None

        def text(key: str) -> str | None:
            value = features.get(key)
            return str(value).strip() or None if value is not None else None

        return cls(
            study_uid=study_uid,
            manufacturer=text("manufacturer"),
            kernel=text("kernel"),
            slice_thickness_mm=number("slice_thickness_mm"),
            kvp=number("kvp"),
            image_mean_hu=number("image_mean_hu"),
            image_std_hu=number("image_std_hu"),
            score=score,
            latency_s=latency_s,
            validation_failed=validation_failed,
            model_version=model_version,
        )


def record_from_run(run: PathwayRun) -> DriftRecord:
    """A pathway run as a drift record. Latency is the model call's wall seconds
    (timings["inference_s"]), the quantity the evaluation measures; a run that could not be
    analysed counts as a validation failure (features["validation_passed"] is False when
    the flow records it, else outcome "not_analysed")."""
    features = run.features or {}
    timings = run.timings or {}
    latency = timings.get("inference_s")
    passed = features.get("validation_passed")
    failed = passed is False if isinstance(passed, bool) else None
    if failed is None:
        failed = run.outcome == Priority.NOT_ANALYSED.value
    return DriftRecord.from_features(
        run.study_uid,
        features,
        score=run.score,
        latency_s=float(latency) if isinstance(latency, int | float) else None,
        validation_failed=failed,
        model_version=run.model_version or "",
    )


def recent_records(
    sessions: sessionmaker[Session], pathway: str, limit: int
) -> tuple[list[DriftRecord], datetime | None, datetime | None]:
    """The `limit` most recent runs of `pathway` that ended with a result or a
    not-analysed verdict (failed runs say nothing about the data), newest first; with the
    time span they cover."""
    with sessions() as session:
        runs = session.scalars(
            select(PathwayRun)
            .where(PathwayRun.pathway == pathway, PathwayRun.outcome != "failed")
            .order_by(PathwayRun.finished_at.desc(), PathwayRun.id.desc())
            .limit(limit)
        ).all()
    if not runs:
        return [], None, None
    stamps = [
        r.finished_at.replace(tzinfo=UTC) if r.finished_at.tzinfo is None else r.finished_at
        for r in runs
    ]
    return [record_from_run(r) for r in runs], min(stamps), max(stamps)


HEAD_THICK_MM = 5.0  # the series the stroke pathway reads when the study has one
SYNTH_KVP = 120.0  # every synthetic CT is written at 120 kVp


def records_from_evaluation(report: Mapping[str, Any]) -> list[DriftRecord]:
    """Records of a held-out evaluation (the JSON models/evaluate.py writes).

    A study that recorded its features (a "features" mapping, as `inference_features`
    makes) uses them. Otherwise they follow from how the study was generated: its vendor
    gives the manufacturer and head soft-tissue kernel (pacsflow.synth.vendors), its
    protocol the thickness of the series the pathway reads (5 mm unless only the thin one
    was written), kVp is the generator's 120; image statistics stay unknown. Score is the
    study probability and latency the model call's seconds.
    """
    from pacsflow.synth.vendors import vendor_profile

    studies = report.get("studies")
    if not isinstance(studies, list) or not studies:
        raise InvalidInputError("the evaluation has no per-study records ('studies')")
    records = []
    for i, study in enumerate(studies):
        features = study.get("features")
        if not isinstance(features, Mapping):
            profile = vendor_profile(str(study.get("vendor", "")))
            thin_only = study.get("protocol") == "thin"
            features = {
                "manufacturer": profile.manufacturer.upper(),
                "kernel": profile.kernel("head", "thick"),
                "slice_thickness_mm": profile.thin_head_mm if thin_only else HEAD_THICK_MM,
                "kvp": SYNTH_KVP,
            }
        probability = study.get("study_probability")
        seconds = study.get("seconds")
        records.append(
            DriftRecord.from_features(
                f"evaluation-{study.get('seed', i)}",
                features,
                score=float(probability) if isinstance(probability, int | float) else None,
                latency_s=float(seconds) if isinstance(seconds, int | float) else None,
                validation_failed=False,
            )
        )
    return records


# --- statistics -------------------------------------------------------------------------
def psi(expected: Sequence[float], actual: Sequence[float], floor: float = PSI_FLOOR) -> float:
    """Population stability index: sum over bins of (a - e) * ln(a / e), shares floored."""
    if len(expected) != len(actual):
        raise InvalidInputError(f"PSI needs equal bins, got {len(expected)} and {len(actual)}")
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    a = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def quantile_edges(values: Sequence[float], bins: int) -> tuple[float, ...]:
    """Cut points: the reference minimum, its interior quantiles and its maximum, distinct.
    A feature with few values (kVp) gets few edges, so its bins are its values."""
    if not values:
        raise InvalidInputError("no reference values to cut into bins")
    qs = np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0.0, 1.0, bins + 1))
    return tuple(float(v) for v in np.unique(qs))


def bin_shares(edges: Sequence[float], values: Sequence[float]) -> list[float]:
    """Shares of `values` per bin: [below min], [min, e1], (e1, e2], ..., (e_k-1, max],
    [above max]; a single edge (a constant reference) gives below / equal / above."""
    x = np.asarray(values, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    inner = max(len(e) - 1, 1)
    idx = np.empty(x.shape, dtype=np.int64)
    below, above = x < e[0], x > e[-1]
    within = ~below & ~above
    if len(e) == 1:
        idx[within] = 1
    else:
        idx[within] = 1 + np.clip(np.searchsorted(e[1:], x[within], side="left"), 0, inner - 1)
    idx[below] = 0
    idx[above] = inner + 1
    counts = np.bincount(idx, minlength=inner + 2)
    return [float(c) / max(len(x), 1) for c in counts]


# --- the reference profile --------------------------------------------------------------
@dataclass(frozen=True)
class NumericReference:
    count: int
    edges: tuple[float, ...]
    shares: tuple[float, ...]
    sample: tuple[float, ...]  # sorted; all values, or an even thinning to KS_SAMPLE_MAX
    mean: float
    p50: float
    p95: float


@dataclass(frozen=True)
class CategoricalReference:
    count: int
    shares: dict[str, float]


@dataclass(frozen=True)
class ReferenceProfile:
    source: str  # what the records were (e.g. the evaluation JSON and its weights hash)
    created_at: str
    records: int
    validation_failure_rate: float
    numeric: dict[str, NumericReference] = field(default_factory=dict)
    categorical: dict[str, CategoricalReference] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": PROFILE_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        if data.get("format") != PROFILE_FORMAT:
            raise InvalidInputError(
                f"reference profile format {data.get('format')!r} is not {PROFILE_FORMAT}"
            )
        try:
            return cls(
                source=str(data["source"]),
                created_at=str(data["created_at"]),
                records=int(data["records"]),
                validation_failure_rate=float(data["validation_failure_rate"]),
                numeric={
                    k: NumericReference(
                        count=int(v["count"]),
                        edges=tuple(float(x) for x in v["edges"]),
                        shares=tuple(float(x) for x in v["shares"]),
                        sample=tuple(float(x) for x in v["sample"]),
                        mean=float(v["mean"]),
                        p50=float(v["p50"]),
                        p95=float(v["p95"]),
                    )
                    for k, v in data.get("numeric", {}).items()
                },
                categorical={
                    k: CategoricalReference(
                        count=int(v["count"]),
                        shares={str(c): float(s) for c, s in v["shares"].items()},
                    )
                    for k, v in data.get("categorical", {}).items()
                },
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"reference profile is malformed: {exc}") from exc

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise InvalidInputError(f"reference profile not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"reference profile {path} is not JSON: {exc}") from None


def _numbers(records: Iterable[DriftRecord], feature: str) -> list[float]:
    return [float(v) for r in records if (v := r.value(feature)) is not None]


def _categories(records: Iterable[DriftRecord], feature: str) -> list[str]:
    return [str(v) for r in records if (v := r.value(feature)) is not None]


def _thin(values: list[float]) -> tuple[float, ...]:
    ordered = sorted(values)
    if len(ordered) <= KS_SAMPLE_MAX:
        return tuple(ordered)
    picks = np.linspace(0, len(ordered) - 1, KS_SAMPLE_MAX).round().astype(int)
    return tuple(ordered[i] for i in picks)


def build_reference(
    records: Sequence[DriftRecord], *, source: str, bins: int = 10
) -> ReferenceProfile:
    """Summarise reference records (a feature nobody recorded is left out)."""
    if not records:
        raise InvalidInputError("a reference profile needs records")
    numeric: dict[str, NumericReference] = {}
    for name in NUMERIC_FEATURES:
        values = _numbers(records, name)
        if not values:
            continue
        edges = quantile_edges(values, bins)
        numeric[name] = NumericReference(
            count=len(values),
            edges=edges,
            shares=tuple(bin_shares(edges, values)),
            sample=_thin(values),
            mean=float(np.mean(values)),
            p50=float(np.quantile(values, 0.5)),
            p95=float(np.quantile(values, 0.95)),
        )
    categorical: dict[str, CategoricalReference] = {}
    for name in CATEGORICAL_FEATURES:
        values_c = _categories(records, name)
        if values_c:
            counted = Counter(values_c)
            categorical[name] = CategoricalReference(
                count=len(values_c),
                shares={k: c / len(values_c) for k, c in sorted(counted.items())},
            )
    return ReferenceProfile(
        source=source,
        created_at=datetime.now(UTC).isoformat(),
        records=len(records),
        validation_failure_rate=sum(r.validation_failed for r in records) / len(records),
        numeric=numeric,
        categorical=categorical,
    )


# --- comparison -------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: Literal["numeric", "categorical"]
    reference_count: int
    current_count: int
    psi: float | None
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    reference_summary: dict[str, Any] = field(default_factory=dict)
    current_summary: dict[str, Any] = field(default_factory=dict)
    alert: bool = False
    note: str = ""


@dataclass(frozen=True)
class DriftReport:
    pathway: str
    created_at: str
    reference_source: str
    studies: int
    status: Literal["ok", "alert", "insufficient_data"]
    features: tuple[FeatureDrift, ...]
    validation_failure_rate: float | None
    reference_validation_failure_rate: float
    latency_p95_s: float | None
    reference_latency_p95_s: float | None
    alerts: tuple[str, ...]
    thresholds: dict[str, float]
    model_versions: tuple[str, ...] = ()
    window_start: str | None = None
    window_end: str | None = None

    @property
    def alerted(self) -> bool:
        return self.status == "alert"

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics (for MLflow): psi.<f>, ks_stat.<f>, ks_p.<f>, and totals."""
        out: dict[str, float] = {
            "studies": float(self.studies),
            "alerts": float(len(self.alerts)),
        }
        for f in self.features:
            if f.psi is not None:
                out[f"psi.{f.name}"] = round(f.psi, 6)
            if f.ks_statistic is not None and f.ks_pvalue is not None:
                out[f"ks_stat.{f.name}"] = round(f.ks_statistic, 6)
                out[f"ks_p.{f.name}"] = f.ks_pvalue
        if self.validation_failure_rate is not None:
            out["validation_failure_rate"] = round(self.validation_failure_rate, 6)
        if self.latency_p95_s is not None:
            out["latency_p95_s"] = round(self.latency_p95_s, 6)
        return out

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = self.metrics()
        return data


def _numeric_summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(a.mean()), 4),
        "p05": round(float(np.quantile(a, 0.05)), 4),
        "p50": round(float(np.quantile(a, 0.5)), 4),
        "p95": round(float(np.quantile(a, 0.95)), 4),
    }


def _compare_numeric(
    name: str, ref: NumericReference, values: list[float], cfg: DriftSettings
) -> FeatureDrift:
    ref_summary = {"mean": round(ref.mean, 4), "p50": round(ref.p50, 4), "p95": round(ref.p95, 4)}
    if len(values) < cfg.min_studies:
        return FeatureDrift(
            name,
            "numeric",
            ref.count,
            len(values),
            None,
            reference_summary=ref_summary,
            note=f"fewer than {cfg.min_studies} values: not compared",
        )
    value = psi(ref.shares, bin_shares(ref.edges, values))
    ks = ks_2samp(np.asarray(ref.sample), np.asarray(values))
    statistic, pvalue = float(ks.statistic), float(ks.pvalue)
    alert = value >= cfg.psi_alert and pvalue < cfg.ks_alpha
    return FeatureDrift(
        name,
        "numeric",
        ref.count,
        len(values),
        value,
        ks_statistic=statistic,
        ks_pvalue=pvalue,
        reference_summary=ref_summary,
        current_summary=_numeric_summary(values),
        alert=alert,
        note=f"PSI {value:.3f}, KS D={statistic:.3f} p={pvalue:.2g}" if alert else "",
    )


def _compare_categorical(
    name: str, ref: CategoricalReference, values: list[str], cfg: DriftSettings
) -> FeatureDrift:
    counted = Counter(values)
    current = {k: c / len(values) for k, c in sorted(counted.items())} if values else {}
    if len(values) < cfg.min_studies:
        return FeatureDrift(
            name,
            "categorical",
            ref.count,
            len(values),
            None,
            reference_summary=ref.shares,
            current_summary=current,
            note=f"fewer than {cfg.min_studies} values: not compared",
        )
    categories = sorted(set(ref.shares) | set(current))
    value = psi(
        [ref.shares.get(c, 0.0) for c in categories], [current.get(c, 0.0) for c in categories]
    )
    unseen = sorted(set(current) - set(ref.shares))
    alert = value >= cfg.psi_alert
    note = ""
    if alert:
        note = f"PSI {value:.3f}" + (
            f"; not in the reference: {', '.join(unseen)}" if unseen else ""
        )
    return FeatureDrift(
        name,
        "categorical",
        ref.count,
        len(values),
        value,
        reference_summary=dict(ref.shares),
        current_summary=current,
        alert=alert,
        note=note,
    )


def _geometric_mean(values: Sequence[float]) -> float | None:
    if not values:
        return None
    return float(np.exp(np.mean(np.log(np.maximum(np.asarray(values, dtype=float), 1e-6)))))


def compare(
    profile: ReferenceProfile,
    records: Sequence[DriftRecord],
    cfg: DriftSettings,
    *,
    pathway: str = "",
    window: tuple[datetime | None, datetime | None] = (None, None),
) -> DriftReport:
    """Set `records` (a recent window) against the reference; alerts past `cfg` thresholds."""
    thresholds = {
        "psi_alert": cfg.psi_alert,
        "ks_alpha": cfg.ks_alpha,
        "validation_failure_increase": cfg.validation_failure_increase,
        "latency_p95_ratio": cfg.latency_p95_ratio,
        "min_studies": float(cfg.min_studies),
    }
    ref_latency = profile.numeric["latency_s"].p95 if "latency_s" in profile.numeric else None
    start, end = window
    common = {
        "pathway": pathway,
        "created_at": datetime.now(UTC).isoformat(),
        "reference_source": profile.source,
        "studies": len(records),
        "reference_validation_failure_rate": profile.validation_failure_rate,
        "reference_latency_p95_s": ref_latency,
        "thresholds": thresholds,
        "model_versions": tuple(sorted({r.model_version for r in records if r.model_version})),
        "window_start": start.isoformat() if start else None,
        "window_end": end.isoformat() if end else None,
    }
    if len(records) < cfg.min_studies:
        return DriftReport(
            status="insufficient_data",
            features=(),
            validation_failure_rate=None,
            latency_p95_s=None,
            alerts=(),
            **common,
        )
    features: list[FeatureDrift] = []
    analysed = [r for r in records if not r.validation_failed]
    for name, ref in profile.numeric.items():
        features.append(_compare_numeric(name, ref, _numbers(analysed, name), cfg))
    for name, cref in profile.categorical.items():
        features.append(_compare_categorical(name, cref, _categories(records, name), cfg))
    alerts = [f"{f.name}: {f.note}" for f in features if f.alert]

    failure_rate = sum(r.validation_failed for r in records) / len(records)
    rise = failure_rate - profile.validation_failure_rate
    if rise >= cfg.validation_failure_increase:
        alerts.append(
            f"validation failures: {failure_rate:.1%} of studies not analysed "
            f"(reference {profile.validation_failure_rate:.1%})"
        )
    latencies = _numbers(analysed, "latency_s")
    latency_p95 = float(np.quantile(latencies, 0.95)) if latencies else None
    # A real slowdown (CPU fallback, a busy host) moves the typical latency as well; a few
    # slow studies in a window of heavy-tailed latencies move only its p95. Both must rise.
    # Typical = geometric mean, not median: thin and 5 mm series make latencies bimodal,
    # and a window's median then sits between the two modes, wherever its mix puts it.
    ref_typical = (
        _geometric_mean(profile.numeric["latency_s"].sample)
        if "latency_s" in profile.numeric
        else None
    )
    typical_ratio = 1 + (cfg.latency_p95_ratio - 1) / 2
    if (
        latency_p95 is not None
        and ref_latency is not None
        and ref_typical is not None
        and len(latencies) >= cfg.min_studies
        and latency_p95 > ref_latency * cfg.latency_p95_ratio
        and _geometric_mean(latencies) > ref_typical * typical_ratio
    ):
        alerts.append(
            f"latency: inference p95 {latency_p95:.2f} s > {cfg.latency_p95_ratio:g} x "
            f"reference {ref_latency:.2f} s"
        )
    return DriftReport(
        status="alert" if alerts else "ok",
        features=tuple(features),
        validation_failure_rate=failure_rate,
        latency_p95_s=latency_p95,
        alerts=tuple(alerts),
        **common,
    )
