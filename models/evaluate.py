"""Held-out evaluation through the real inference path.

Each case is a synthetic study written as DICOM by pacsflow.synth.studies (its own seed
range, every vendor's header conventions, noise levels beyond those training emphasised),
read back with pydicom, and analysed exactly as a pathway would: load_volume ->
Segmenter.probability -> findings. Results are compared with the study's ground truth.

    python -m models.evaluate ich --studies 120 --matrix 256
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from models.bootstrap import sha256
from models.catalogue import MODELS, WEIGHTS_DIR
from models.ich.aggregate import Grid as AggregationGrid
from models.ich.aggregate import ValidationStudy, choose_operating_point
from models.scoring import operating_probability
from models.segmenter import Segmenter, SegmenterConfig
from models.volume import Volume
from pacsflow.domain import Finding, InferenceResult, ModelRef
from pacsflow.errors import InvalidInputError
from pacsflow.synth.specs import HEMORRHAGE_SUBTYPES, NODULE_TYPES, SIDES, Hemorrhage, Nodule
from pacsflow.synth.studies import write_chest_ct_study, write_head_ct_study
from pacsflow.synth.truth import LesionTruth, StudyTruth
from pacsflow.synth.vendors import VENDORS

log = logging.getLogger(__name__)

HELD_OUT_SEED = 10_000  # training draws from numpy streams of seeds < 1000


@dataclass(frozen=True)
class Case:
    seed: int
    vendor: str
    noise_hu: float
    protocol: str  # head: thick | thin | both; chest: slice thickness as text
    hemorrhages: tuple[Hemorrhage, ...] = ()
    nodules: tuple[Nodule, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)


# ---- case mixes -------------------------------------------------------------------------------


def ich_cases(n: int, seed: int = HELD_OUT_SEED) -> list[Case]:
    """Half normal; the rest one hemorrhage of each subtype in turn, 0.5-60 mL (log),
    either side; vendors in turn; thick, thin and both protocols; noise 3-12 HU (of a
    5 mm image; thin images are noisier by sqrt(5 / thickness))."""
    rng = np.random.default_rng([seed, 1])
    cases = []
    for i in range(n):
        hemorrhages: tuple[Hemorrhage, ...] = ()
        if i % 2 == 1:
            hemorrhages = (
                Hemorrhage(
                    subtype=HEMORRHAGE_SUBTYPES[(i // 2) % len(HEMORRHAGE_SUBTYPES)],
                    volume_ml=round(math.exp(rng.uniform(math.log(0.5), math.log(60.0))), 2),
                    side=SIDES[int(rng.integers(2))],
                ),
            )
        protocol = ("thick", "thick", "thin", "both")[int(rng.integers(4))]
        cases.append(
            Case(
                seed=seed + i,
                # Pairs (normal, hemorrhage) share a vendor: every vendor sees both.
                vendor=VENDORS[(i // 2) % len(VENDORS)],
                noise_hu=round(float(rng.uniform(3.0, 12.0)), 2),
                protocol=protocol,
                hemorrhages=hemorrhages,
            )
        )
    return cases


def nodule_cases(n: int, seed: int = HELD_OUT_SEED) -> list[Case]:
    """0-3 nodules (a fifth of scans none) of each type, 4-25 mm; vendors in turn;
    1.0-2.5 mm slices; noise 6-20 HU."""
    rng = np.random.default_rng([seed, 2])
    cases = []
    for i in range(n):
        count = 0 if i % 5 == 0 else int(rng.integers(1, 4))
        nodules = tuple(
            Nodule(
                nodule_type=NODULE_TYPES[int(rng.choice(3, p=[0.5, 0.25, 0.25]))],
                diameter_mm=round(float(rng.uniform(4.0, 25.0)), 1),
            )
            for _ in range(count)
        )
        slice_mm = float(rng.choice([1.0, 1.25, 1.25, 2.5]))
        cases.append(
            Case(
                seed=seed + i,
                vendor=VENDORS[i % len(VENDORS)],
                noise_hu=round(float(rng.uniform(6.0, 20.0)), 2),
                protocol=f"{slice_mm:g}",
                nodules=nodules,
            )
        )
    return cases


# ---- running one case -------------------------------------------------------------------------


HEAD_ROLES = ("thin", "thick")  # as the stroke pathway chooses: thin slices when sent


def read_series(study_dir: Path, truth: StudyTruth, role_order: Iterable[str]) -> list[Any]:
    """The instances of the first series of the wanted roles (the pathway's choice,
    pacsflow.pathways.series_selection.HEAD_SERIES: the thin series of a head CT when
    there is one)."""
    for role in role_order:
        for s in truth.series_by_role(role):
            folder = study_dir / s.directory
            return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    raise FileNotFoundError(f"no series of roles {list(role_order)} in {study_dir}")


def _write(case: Case, kind: str, out: Path, matrix: int) -> StudyTruth:
    if kind == "ich":
        return write_head_ct_study(
            out,
            seed=case.seed,
            hemorrhages=case.hemorrhages,
            protocol=case.protocol,
            matrix=matrix,
            vendor=case.vendor,
            noise_hu=case.noise_hu,
            with_scout=False,
            with_bone=False,
            with_dose_report=False,
        )
    return write_chest_ct_study(
        out,
        seed=case.seed,
        nodules=case.nodules,
        matrix=matrix,
        slice_mm=float(case.protocol),
        vendor=case.vendor,
        noise_hu=case.noise_hu,
        with_scout=False,
        with_lung=False,
        with_dose_report=False,
    )


def _write_fitting(case: Case, kind: str, out: Path, matrix: int) -> tuple[Case, StudyTruth]:
    """Write the case; a lesion that does not fit this patient's anatomy (a large
    intraventricular bleed in small ventricles) is shrunk until it does."""
    for _ in range(6):
        try:
            return case, _write(case, kind, out, matrix)
        except InvalidInputError:
            shutil.rmtree(out, ignore_errors=True)
            case = replace(
                case,
                hemorrhages=tuple(
                    replace(h, volume_ml=max(0.5, round(h.volume_ml * 0.7, 2)))
                    for h in case.hemorrhages
                ),
                nodules=tuple(
                    replace(n, diameter_mm=max(3.0, round(n.diameter_mm * 0.85, 1)))
                    for n in case.nodules
                ),
                tags={**case.tags, "shrunk": "yes"},
            )
    return case, _write(case, kind, out, matrix)


Analyse = Callable[[list[Any], Segmenter, ModelRef], tuple[InferenceResult, Any, Any]]


def _analyser(kind: str) -> Analyse:
    if kind == "ich":
        from models.ich.analyse import analyse_series
    else:
        from models.nodule.analyse import analyse_series  # type: ignore[no-redef]
    return analyse_series  # type: ignore[return-value]


# ---- scoring ----------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 4) if values else None


def _rate(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


# A hemorrhage with less of its mask than this at blood density in the noise-free image
# (pacsflow.synth's `visible_ml`) is not in the pixels: a thin collection against the skull
# that the scanner's blur has mixed with bone. Reported apart; the goals count it.
VISIBLE_MIN_ML = 0.1


def visibility(row: dict[str, Any]) -> str:
    if not row["truth_positive"]:
        return "normal"
    visible = row.get("truth_visible_ml")
    if visible is None:
        return "unknown"
    return "visible" if visible >= VISIBLE_MIN_ML else "not visible"


def score_ich(rows: list[dict[str, Any]]) -> dict[str, Any]:
    pos = [r for r in rows if r["truth_positive"]]
    seen = [r for r in pos if visibility(r) == "visible"]
    neg = [r for r in rows if not r["truth_positive"]]
    tp = [r for r in pos if r["predicted_positive"]]
    abs_err = [abs(r["predicted_ml"] - r["truth_ml"]) for r in tp]
    pct_err = [100 * abs(r["predicted_ml"] - r["truth_ml"]) / r["truth_ml"] for r in tp]
    sided = [r for r in tp if r["truth_side"]]
    return {
        "studies": len(rows),
        "positives": len(pos),
        "negatives": len(neg),
        "sensitivity": _rate(len(tp), len(pos)),
        "specificity": _rate(sum(not r["predicted_positive"] for r in neg), len(neg)),
        "sensitivity_visible": _rate(sum(r["predicted_positive"] for r in seen), len(seen)),
        "positives_not_visible": sum(visibility(r) == "not visible" for r in pos),
        "sensitivity_ge_1ml": _rate(
            sum(r["predicted_positive"] for r in pos if r["truth_ml"] >= 1.0),
            sum(r["truth_ml"] >= 1.0 for r in pos),
        ),
        "volume_abs_error_ml_median": _median(abs_err),
        "volume_pct_error_median": _median(pct_err),
        "volume_pct_error_p90": round(float(np.percentile(pct_err, 90)), 4) if pct_err else None,
        "side_accuracy": _rate(
            sum(r["predicted_side"] == r["truth_side"] for r in sided), len(sided)
        ),
        "subtype_accuracy": _rate(
            sum(r["predicted_subtype"] == r["truth_subtype"] for r in sided), len(sided)
        ),
        "negatives_in_review_band": _rate(
            sum(r["study_probability"] >= 0.35 for r in neg), len(neg)
        ),
        "seconds_median": _median([r["seconds"] for r in rows]),
    }


def noise_band(noise_hu: float) -> str:
    """Noise strata of the ICH evaluation (SD of a 5 mm image, HU)."""
    if noise_hu < 6.0:
        return "3-6 HU"
    return "6-9 HU" if noise_hu < 9.0 else "9-12 HU"


def ich_row(case: Case, truth: StudyTruth, result: InferenceResult) -> dict[str, Any]:
    lesions = truth.lesions
    sides = {les.location.side for les in lesions}
    largest = result.findings[0] if result.findings else None
    return {
        "seed": case.seed,
        "vendor": case.vendor,
        "protocol": case.protocol,
        "noise_hu": case.noise_hu,
        "noise_band": noise_band(case.noise_hu),
        "truth_positive": bool(lesions),
        "truth_ml": round(sum(les.volume_ml for les in lesions), 3),
        "truth_subtype": lesions[0].subtype if lesions else None,
        "truth_side": sides.pop() if len(sides) == 1 else None,
        "truth_visible_ml": (
            round(sum(les.visible_ml for les in lesions if les.visible_ml is not None), 3)
            if lesions and all(les.visible_ml is not None for les in lesions)
            else None
        ),
        "predicted_positive": bool(result.findings),
        "predicted_ml": round(sum(f.volume_ml or 0.0 for f in result.findings), 3),
        "predicted_side": largest.location.side if largest else None,
        "predicted_subtype": largest.subtype if largest else None,
        "n_findings": len(result.findings),
        "study_probability": round(result.study_probability, 4),
        "seconds": result.seconds,
    }


def match_nodules(
    lesions: list[LesionTruth], findings: list[Finding]
) -> list[tuple[LesionTruth, Finding | None]]:
    """Each true nodule with the nearest unused finding whose centre lies within the
    nodule's radius + 4 mm (greedy, nearest pairs first)."""
    pairs = []
    for li, les in enumerate(lesions):
        for fi, f in enumerate(findings):
            if f.centroid_mm is None:
                continue
            d = float(np.linalg.norm(np.subtract(f.centroid_mm, les.centroid_lps_mm)))
            if d <= les.longest_axial_diameter_mm / 2 + 4.0:
                pairs.append((d, li, fi))
    used_l: dict[int, int] = {}
    used_f: set[int] = set()
    for _, li, fi in sorted(pairs):
        if li not in used_l and fi not in used_f:
            used_l[li] = fi
            used_f.add(fi)
    return [(les, findings[used_l[i]] if i in used_l else None) for i, les in enumerate(lesions)]


def nodule_row(case: Case, truth: StudyTruth, result: InferenceResult) -> dict[str, Any]:
    matched = match_nodules(list(truth.lesions), result.findings)
    nodules = []
    for les, f in matched:
        nodules.append(
            {
                "type": les.subtype,
                "truth_diameter_mm": les.longest_axial_diameter_mm,
                "truth_mean_diameter_mm": les.mean_diameter_mm,
                "truth_volume_ml": les.volume_ml,
                "detected": f is not None,
                "diameter_mm": f.diameter_mm if f else None,
                "mean_diameter_mm": f.mean_diameter_mm if f else None,
                "volume_ml": f.volume_ml if f else None,
                "predicted_type": f.subtype if f else None,
            }
        )
    n_matched = sum(f is not None for _, f in matched)
    return {
        "seed": case.seed,
        "vendor": case.vendor,
        "slice_mm": float(case.protocol),
        "noise_hu": case.noise_hu,
        "nodules": nodules,
        "false_positives": len(result.findings) - n_matched,
        "study_probability": round(result.study_probability, 4),
        "seconds": result.seconds,
    }


def score_nodule(rows: list[dict[str, Any]]) -> dict[str, Any]:
    nods = [n for r in rows for n in r["nodules"]]
    big = [n for n in nods if n["truth_mean_diameter_mm"] >= 6.0]
    found = [n for n in nods if n["detected"]]
    d_err = [abs(n["diameter_mm"] - n["truth_diameter_mm"]) for n in found]
    m_err = [abs(n["mean_diameter_mm"] - n["truth_mean_diameter_mm"]) for n in found]
    v_err = [100 * abs(n["volume_ml"] - n["truth_volume_ml"]) / n["truth_volume_ml"] for n in found]
    return {
        "studies": len(rows),
        "nodules": len(nods),
        "nodules_ge_6mm": len(big),
        "sensitivity_ge_6mm": _rate(sum(n["detected"] for n in big), len(big)),
        "sensitivity_all": _rate(len(found), len(nods)),
        "false_positives_per_scan": round(sum(r["false_positives"] for r in rows) / len(rows), 4)
        if rows
        else None,
        "diameter_abs_error_mm_median": _median(d_err),
        "mean_diameter_abs_error_mm_median": _median(m_err),
        "volume_pct_error_median": _median(v_err),
        "type_accuracy": _rate(sum(n["predicted_type"] == n["type"] for n in found), len(found)),
        "seconds_median": _median([r["seconds"] for r in rows]),
    }


GOALS = {
    "ich": [("sensitivity", ">=", 0.95), ("specificity", ">=", 0.95)],
    "nodule": [
        ("sensitivity_ge_6mm", ">=", 0.90),
        ("diameter_abs_error_mm_median", "<=", 1.5),
    ],
}


def _goals(kind: str, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for metric, op, target in GOALS[kind]:
        value = metrics.get(metric)
        met = value is not None and (value >= target if op == ">=" else value <= target)
        out.append({"metric": metric, "op": op, "target": target, "value": value, "met": met})
    return out


def _strata(rows: list[dict[str, Any]], key: str, score: Callable[..., dict[str, Any]]) -> dict:  # type: ignore[type-arg]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r[key]), []).append(r)
    return {k: score(v) for k, v in sorted(groups.items())}


# ---- driver -----------------------------------------------------------------------------------


def run_cases(
    kind: str,
    segmenter: Segmenter,
    cases: list[Case],
    *,
    matrix: int,
    work_dir: Path | None = None,
) -> Iterator[tuple[Case, StudyTruth, InferenceResult]]:
    """Write each case as DICOM, read its series back and analyse it; one study on disk
    at a time."""
    spec = MODELS[kind]
    model = ModelRef(name=spec.registered_name, version="candidate", approved=False)
    analyse = _analyser(kind)
    roles = HEAD_ROLES if kind == "ich" else ("axial",)
    tmp = Path(tempfile.mkdtemp(prefix=f"eval-{kind}-", dir=work_dir))
    try:
        for i, case in enumerate(cases):
            study_dir = tmp / f"{case.seed}"
            case, truth = _write_fitting(case, kind, study_dir, matrix)
            datasets = read_series(study_dir, truth, roles)
            result, _, _ = analyse(datasets, segmenter, model)
            shutil.rmtree(study_dir, ignore_errors=True)
            if (i + 1) % 10 == 0:
                log.info("%s: %d/%d studies analysed", kind, i + 1, len(cases))
            yield case, truth, result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def evaluate(
    kind: str,
    *,
    weights_dir: Path = WEIGHTS_DIR,
    n_studies: int = 100,
    seed: int = HELD_OUT_SEED,
    matrix: int = 256,
    out: Path | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate the weights in `weights_dir` on `n_studies` held-out DICOM studies; the
    report (metrics, goals, strata, one row per study) is written to `out` when given."""
    spec = MODELS[kind]
    segmenter = Segmenter.from_files(spec.weights(weights_dir), spec.config(weights_dir))
    cases = ich_cases(n_studies, seed) if kind == "ich" else nodule_cases(n_studies, seed)
    to_row = ich_row if kind == "ich" else nodule_row
    started = time.perf_counter()
    rows = [
        to_row(case, truth, result)
        for case, truth, result in run_cases(
            kind, segmenter, cases, matrix=matrix, work_dir=work_dir
        )
    ]
    if kind == "ich":
        rows = [dict(r, visibility=visibility(r)) for r in rows]
    score = score_ich if kind == "ich" else score_nodule
    metrics = score(rows)
    strata_keys = (
        ("vendor", "protocol", "noise_band", "truth_subtype", "visibility")
        if kind == "ich"
        else ("vendor", "slice_mm")
    )
    report: dict[str, Any] = {
        "model": kind,
        "registered_name": spec.registered_name,
        "weights_sha256": sha256(spec.weights(weights_dir)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "n_studies": len(rows),
        "matrix": matrix,
        "operating_point": dict(segmenter.config.extra, threshold=segmenter.config.threshold),
        "description": (
            f"{len(rows)} held-out synthetic studies (seeds {seed}..{seed + len(rows) - 1}), "
            f"written as DICOM by pacsflow.synth.studies at a {matrix}x{matrix} matrix with "
            f"the header conventions of {', '.join(VENDORS)}, read back with pydicom and "
            "analysed through load_volume -> Segmenter.probability -> findings (a head "
            "CT's thin series when it has one, as the stroke pathway chooses)."
        ),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "goals": _goals(kind, metrics),
        "strata": {k: _strata(rows, k, score) for k in strata_keys},
        "seconds_total": round(time.perf_counter() - started, 1),
        "studies": rows,
    }
    if kind == "nodule":
        report["strata"]["type"] = _nodule_type_strata(rows)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
    return report


def _nodule_type_strata(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for t in NODULE_TYPES:
        sub = [
            {**r, "nodules": [n for n in r["nodules"] if n["type"] == t], "false_positives": 0}
            for r in rows
        ]
        out[t] = score_nodule(sub)
    return out


# ---- operating point, chosen on a validation split ---------------------------------------------

VALIDATION_SEED = 20_000
MIN_DIAMETERS_MM = (3.0, 4.0, 5.0)
MIN_PROBABILITIES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def probability_grid(threshold: float) -> tuple[float, ...]:
    """Minimum scores (raw, as stored in the config) to try: the voxel threshold itself
    (no extra filter) and the fixed grid above it. The nodule model runs at 0.1: a grid of
    0.5-0.95 alone would silently move it off its operating point."""
    return (threshold, *(p for p in MIN_PROBABILITIES if p > threshold))


def _nodule_choice(
    studies: list[tuple[list[LesionTruth], list[Finding]]], threshold: float
) -> dict[str, Any]:
    """The (min diameter, min probability) that maximises sensitivity for nodules of
    6 mm or more minus 0.1 per false positive per scan. Findings come from a run whose
    minimum score is the voxel threshold, so their probabilities are on the operating
    scale of that threshold: a raw minimum is compared on the same scale."""
    best: tuple[tuple[float, float, float], dict[str, Any]] | None = None
    for min_d in MIN_DIAMETERS_MM:
        for min_p in probability_grid(threshold):
            on_scale = operating_probability(min_p, min_score=threshold)
            hits = big = fps = 0
            for lesions, findings in studies:
                kept = [
                    f
                    for f in findings
                    if (f.diameter_mm or 0) >= min_d and f.probability >= on_scale
                ]
                matched = match_nodules(lesions, kept)
                big += sum(les.mean_diameter_mm >= 6.0 for les, _ in matched)
                hits += sum(les.mean_diameter_mm >= 6.0 and f is not None for les, f in matched)
                fps += len(kept) - sum(f is not None for _, f in matched)
            sens = hits / (big or 1)
            fp_rate = fps / max(1, len(studies))
            key = (sens - 0.1 * fp_rate, -min_d, -min_p)
            if best is None or key > best[0]:
                best = (
                    key,
                    {
                        "min_diameter_mm": min_d,
                        "min_probability": min_p,
                        "sensitivity_ge_6mm": round(sens, 4),
                        "false_positives_per_scan": round(fp_rate, 4),
                    },
                )
    assert best is not None
    return best[1]


def head_volume(case: Case, study_dir: Path, matrix: int) -> tuple[Case, StudyTruth, Volume]:
    """Write an ICH case as DICOM in `study_dir`, read the series the pathway would
    analyse back into a volume, and remove the files (the case comes back shrunk when its
    bleed did not fit)."""
    from models.volume import load_volume

    try:
        case, truth = _write_fitting(case, "ich", study_dir, matrix)
        return case, truth, load_volume(read_series(study_dir, truth, HEAD_ROLES))
    finally:
        shutil.rmtree(study_dir, ignore_errors=True)


def ich_validation_studies(
    segmenter: Segmenter,
    cases: list[Case],
    *,
    matrix: int,
    thresholds: tuple[float, ...],
    work_dir: Path | None = None,
) -> Iterator[ValidationStudy]:
    """Each validation case through the real path up to the probability map, summarised
    as candidate components at every threshold of the grid (one inference per study)."""
    from models.ich.findings import candidates

    tmp = Path(tempfile.mkdtemp(prefix="calibrate-ich-", dir=work_dir))
    try:
        for i, case in enumerate(cases):
            case, truth, volume = head_volume(case, tmp / f"{case.seed}", matrix)
            prob = segmenter.probability(volume.hu, volume.spacing_zyx)
            yield ValidationStudy(
                positive=bool(truth.lesions),
                candidates={t: candidates(prob, volume, t)[2] for t in thresholds},
            )
            if (i + 1) % 10 == 0:
                log.info("ich: %d/%d validation studies analysed", i + 1, len(cases))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _calibrate_ich(
    segmenter: Segmenter, n_studies: int, seed: int, matrix: int, work_dir: Path | None
) -> tuple[SegmenterConfig, dict[str, Any]]:
    grid = AggregationGrid()
    studies = list(
        ich_validation_studies(
            segmenter,
            ich_cases(n_studies, seed),
            matrix=matrix,
            thresholds=grid.thresholds,
            work_dir=work_dir,
        )
    )
    best, outcomes = choose_operating_point(studies, grid)
    op = best.point
    config = replace(
        segmenter.config,
        threshold=op.threshold,
        extra=dict(segmenter.config.extra, **op.as_extra()),
    )
    choice = {
        "threshold": op.threshold,
        **op.as_extra(),
        "sensitivity": round(best.sensitivity, 4),
        "specificity": round(best.specificity, 4),
        "negatives_in_review_band": round(best.negatives_in_review_band, 4),
        "positives": sum(s.positive for s in studies),
        "negatives": sum(not s.positive for s in studies),
        "grid_points": len(outcomes),
        "grid_points_as_good": sum(o.key()[:2] == best.key()[:2] for o in outcomes),
    }
    return config, choice


def calibrate(
    kind: str,
    *,
    weights_dir: Path = WEIGHTS_DIR,
    n_studies: int = 60,
    seed: int = VALIDATION_SEED,
    matrix: int = 256,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Choose the post-processing operating point on validation studies (a seed range
    apart from training and from the held-out evaluation) and store it in the config
    beside the weights; the choice and its grid are written to <key>.calibration.json.

    ICH: voxel threshold, minimum score, minimum volume and maximum median HU of a
    finding (models.ich.aggregate). Nodule: minimum diameter and minimum score; the
    voxel threshold and the vessel filter stay as configured."""
    if seed == HELD_OUT_SEED:
        raise InvalidInputError("the operating point must not be chosen on the held-out seeds")
    spec = MODELS[kind]
    config_path = spec.config(weights_dir)
    segmenter = Segmenter.from_files(spec.weights(weights_dir), config_path)
    if kind == "ich":
        config, choice = _calibrate_ich(segmenter, n_studies, seed, matrix, work_dir)
        n_done = choice["positives"] + choice["negatives"]
    else:
        open_extra = dict(segmenter.config.extra, min_diameter_mm=0.0, min_probability=0.0)
        permissive = Segmenter(replace(segmenter.config, extra=open_extra), segmenter.network)
        collected = list(
            run_cases(
                kind, permissive, nodule_cases(n_studies, seed), matrix=matrix, work_dir=work_dir
            )
        )
        choice = _nodule_choice(
            [(list(t.lesions), r.findings) for _, t, r in collected], segmenter.config.threshold
        )
        chosen = {k: choice[k] for k in ("min_diameter_mm", "min_probability")}
        config = replace(segmenter.config, extra=dict(segmenter.config.extra, **chosen))
        n_done = len(collected)
    config_path.write_text(config.to_json() + "\n")
    record = {
        "model": kind,
        "seed": seed,
        "n_studies": n_done,
        "matrix": matrix,
        "chosen": choice,
        "weights_sha256": sha256(spec.weights(weights_dir)),
    }
    (weights_dir / f"{kind}.calibration.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def evaluate_shipped(
    kind: str,
    *,
    weights_dir: Path = WEIGHTS_DIR,
    n_studies: int = 100,
    seed: int = HELD_OUT_SEED,
    matrix: int = 256,
    calibrate_studies: int = 0,
) -> dict[str, Any]:
    """The release step: (optionally) choose the operating point on validation studies,
    evaluate on held-out studies, and write <key>.eval.json and the model card
    <key>.card.md beside the weights."""
    from models.cards import model_card

    spec = MODELS[kind]
    if calibrate_studies:
        calibrate(kind, weights_dir=weights_dir, n_studies=calibrate_studies, matrix=matrix)
    report = evaluate(
        kind,
        weights_dir=weights_dir,
        n_studies=n_studies,
        seed=seed,
        matrix=matrix,
        out=spec.evaluation(weights_dir),
    )
    (weights_dir / f"{kind}.card.md").write_text(model_card(spec, weights_dir))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--matrix", type=int, default=256)
    parser.add_argument(
        "--calibrate",
        type=int,
        default=0,
        metavar="N",
        help="first choose the operating point on N validation studies",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = evaluate_shipped(
        args.model,
        weights_dir=args.weights_dir,
        n_studies=args.studies,
        seed=args.seed,
        matrix=args.matrix,
        calibrate_studies=args.calibrate,
    )
    print(json.dumps({"metrics": report["metrics"], "goals": report["goals"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
