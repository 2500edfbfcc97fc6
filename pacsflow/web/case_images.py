"""The key image of a case: the slice through the largest finding, outlined.

Reads the label map a pathway run saved (var/results/<study>/<model>-<version>/labels.npz,
with the SOP Instance UID of each slice) and the source slice from the spool or the
archive; renders it with `render_key_image`. No model code is involved.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom

from pacsflow.config import Settings
from pacsflow.dicom.dicomweb import Archive
from pacsflow.errors import PacsflowError
from pacsflow.web.key_image import render_key_image

log = logging.getLogger(__name__)


def _labels_file(results_root: Path, study_uid: str) -> Path | None:
    found = sorted((results_root / study_uid).glob("*/labels.npz"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _instance(settings: Settings, study_uid: str, sop_uid: str) -> pydicom.Dataset | None:
    local = list((settings.spool_dir / study_uid).rglob(f"{sop_uid}.dcm"))
    if local:
        return pydicom.dcmread(local[0])
    archive = Archive(settings.orthanc)
    for item in archive.client.search_for_instances(
        study_instance_uid=study_uid, search_filters={"SOPInstanceUID": sop_uid}
    ):
        series_uid = item["0020000E"]["Value"][0]
        return archive.client.retrieve_instance(study_uid, series_uid, sop_uid)
    return None


def key_image_source(settings: Settings) -> object:
    """A `key_image(study_uid) -> PNG bytes | None` for the web app."""
    results_root = settings.paths.var_dir / "results"

    def key_image(study_uid: str) -> bytes | None:
        labels_path = _labels_file(results_root, study_uid)
        if labels_path is None:
            return None
        data = np.load(labels_path)
        labels, sop_uids = data["labels"], [str(u) for u in data["sop_uids"]]
        areas = (labels > 0).reshape(labels.shape[0], -1).sum(axis=1)
        index = int(areas.argmax()) if areas.any() else labels.shape[0] // 2
        try:
            ds = _instance(settings, study_uid, sop_uids[index])
        except (PacsflowError, OSError) as exc:
            log.warning("key image of %s unavailable: %s", study_uid, exc)
            return None
        if ds is None:
            return None
        hu = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) + float(
            ds.get("RescaleIntercept", 0) or 0
        )
        mask = labels[index] > 0
        return render_key_image(hu, mask if mask.any() else None)

    return key_image
