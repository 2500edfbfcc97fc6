"""One chest CT series -> lung nodule findings: the inference path of the nodule pathway.

load_volume (DICOM -> HU on the source grid) -> Segmenter.probability (model grid and
back) -> findings_from_probability (refined and measured on the source grid).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pydicom

from models.ich.analyse import series_uids
from models.nodule.findings import findings_from_probability
from models.segmenter import Segmenter
from models.volume import Volume, load_volume
from pacsflow.domain import Finding, InferenceResult, ModelRef
from pacsflow.errors import InvalidInputError


def analyse_volume(
    volume: Volume, segmenter: Segmenter, *, threshold: float | None = None
) -> tuple[list[Finding], np.ndarray, float]:
    """Findings, label map (source grid) and study probability of a loaded volume."""
    if segmenter.config.kind != "nodule":
        raise InvalidInputError(
            f"a nodule analysis needs a nodule model, got {segmenter.config.kind}"
        )
    prob = segmenter.probability(volume.hu, volume.spacing_zyx)
    extra = segmenter.config.extra
    return findings_from_probability(
        prob,
        volume,
        threshold=segmenter.config.threshold if threshold is None else threshold,
        min_diameter_mm=float(extra.get("min_diameter_mm", 3.0)),
        band_mm=float(extra.get("refine_band_mm", 1.5)),
        min_probability=float(extra.get("min_probability", 0.0)),
        min_roundness=float(extra.get("min_roundness", 0.0)),
        max_contact=float(extra.get("max_contact", 1.0)),
    )


def analyse_series(
    datasets: Sequence[pydicom.Dataset],
    segmenter: Segmenter,
    model: ModelRef,
    *,
    threshold: float | None = None,
) -> tuple[InferenceResult, np.ndarray, Volume]:
    """Analyse one axial chest CT series (instances in any order).

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
