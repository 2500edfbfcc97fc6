"""synth -> C-STORE with dcmtk storescu -> QIDO-RS / WADO-RS with dicomweb-client: the
archive returns pixel-identical instances."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pacsflow.config import Settings
from pacsflow.dicom.dicomweb import Archive, OrthancExtras
from pacsflow.synth.phantoms import Hemorrhage
from pacsflow.synth.studies import write_head_ct_study
from pacsflow.testing.services import storescu

pytestmark = [pytest.mark.orthanc, pytest.mark.dcmtk]


def test_synthetic_study_round_trips_pixel_identical(orthanc: Settings, tmp_path: Path) -> None:
    truth = write_head_ct_study(
        tmp_path / "study",
        seed=3,
        hemorrhages=(Hemorrhage(subtype="subdural", volume_ml=15.0, side="left"),),
        matrix=128,
    )
    files = sorted((tmp_path / "study").rglob("*.dcm"))
    assert files
    dump = subprocess.run(["dcmdump", "-q", str(files[1])], capture_output=True, text=True)
    assert dump.returncode == 0 and "(0020,000d)" in dump.stdout.lower()

    sent = storescu(orthanc, tmp_path / "study")
    assert sent.returncode == 0, sent.stderr

    archive = Archive(orthanc.orthanc)
    studies = archive.search_studies(StudyInstanceUID=truth.study_uid)
    assert len(studies) == 1
    assert studies[0]["00080050"]["Value"][0] == truth.accession_number
    series = archive.search_series(truth.study_uid)
    assert len(series) == len(truth.series)

    local = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(f) for f in files)}
    compared = 0
    for s in series:
        for ds in archive.retrieve_series(truth.study_uid, s["0020000E"]["Value"][0]):
            original = local[str(ds.SOPInstanceUID)]
            if "PixelData" in original:
                assert np.array_equal(ds.pixel_array, original.pixel_array)
                compared += 1
    assert compared == sum(1 for ds in local.values() if "PixelData" in ds)

    extras = OrthancExtras(orthanc.orthanc)
    extras.set_study_metadata(truth.study_uid, "PacsflowPriority", "critical")
    assert extras.get_study_metadata(truth.study_uid, "PacsflowPriority") == "critical"
