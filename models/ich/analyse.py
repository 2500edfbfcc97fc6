"""One head CT series -> hemorrhage findings: the inference path of the stroke pathway.

load_volume (DICOM -> HU on the source grid) -> Segmenter.probability (model grid and
back) -> findings_from_probability (components measured on the source grid).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pydicom

from models.ich.findings import findings_from_probability
from models.segmenter import Segmenter
from models.volume import Volume, load_volume
from pacsflow.domain import Finding, InferenceResult, ModelRef
from pacsflow.errors import InvalidInputError, NotAnalysableError


def series_uids(datasets: Sequence[pydicom.Dataset]) -> tuple[str, str]:
    """(StudyInstanceUID, SeriesInstanceUID) shared by all instances."""
    studies = {str(ds.get("StudyInstanceUID", "")) for ds in datasets}
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(studies) != 1 or len(series) != 1:
        raise NotAnalysableError(["the instances are not one series of one study"])
    return studies.pop(), series.pop()


def analyse_volume(
    volume: Volume, segmenter: Segmenter, *, threshold: float | None = None
) -> tuple[list[Finding], np.ndarray, float]:
    """Findings, label map (source grid) and study probability of a loaded volume."""
    if segmenter.config.kind != "ich":
        raise InvalidInputError(f"an ICH analysis needs an ICH model, got {segmenter.config.kind}")
    prob = segmenter.probability(volume.hu, volume.spacing_zyx)
    return findings_from_probability(
        prob,
        volume,
        threshold=segmenter.config.threshold if threshold is None else threshold,
        min_volume_ml=float(segmenter.config.extra.get("min_volume_ml", 0.05)),
        min_probability=float(segmenter.config.extra.get("min_probability", 0.0)),
        max_median_hu=segmenter.config.extra.get("max_median_hu"),
    )


def analyse_series(
    datasets: Sequence[pydicom.Dataset],
    segmenter: Segmenter,
    model: ModelRef,
    *,
    threshold: float | None = None,
) -> tuple[InferenceResult, np.ndarray, Volume]:
    """Analyse one axial non-contrast head CT series (instances in any order).

    Returns the result (findings largest first), the label map on the source grid
    (0 = none, i = finding i; slices in `volume.sop_instance_uids` order) and the volume.
    """
    started = time.perf_counter()
    study_uid, series_uid = series_uids(datasets)
    volume = load_volume(datasets)
    findings, labels, study_probability = analyse_volume(volume, segmenter, threshold=threshold)
    result = InferenceResult(
        study_uid=study_uid,
        series_uid=series_uid,
        model=model,
        study_probability=study_probability,
        findings=findings,
        seconds=round(time.perf_counter() - started, 3),
    )
    return result, labels, volume
