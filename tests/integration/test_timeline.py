"""The patient timeline over a real Orthanc: studies of several specialties in time order,
with the key findings of pacsflow's own SRs; other patients' studies stay out."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pydicom
import pytest

from pacsflow.config import Settings
from pacsflow.dicom.dicomweb import Archive
from pacsflow.dicom.sr import build_sr
from pacsflow.domain import Finding, Location, ModelRef, Priority
from pacsflow.pathways.timeline import patient_timeline
from pacsflow.synth.patients import PatientSpec
from pacsflow.synth.phantoms import Hemorrhage
from pacsflow.synth.studies import write_head_ct_study, write_non_ct_study
from pacsflow.testing.services import storescu

pytestmark = [pytest.mark.orthanc]

PATIENT = PatientSpec(patient_id="TL-1", name="Time^Line", birth_date=date(1950, 5, 4), sex="F")
OTHER = PatientSpec(patient_id="TL-2", name="Other^One", birth_date=date(1960, 1, 1), sex="M")


def _store(settings: Settings, folder: Path) -> None:
    done = storescu(settings, folder)
    assert done.returncode == 0, done.stderr


def test_timeline_orders_studies_across_specialties_with_ai_findings(
    orthanc: Settings, tmp_path: Path
) -> None:
    mr = write_non_ct_study(
        tmp_path / "mr",
        seed=1,
        modality="MR",
        matrix=64,
        patient=PATIENT,
        study_date=date(2024, 2, 1),
    )
    ct = write_head_ct_study(
        tmp_path / "ct",
        seed=2,
        hemorrhages=(Hemorrhage(subtype="subdural", volume_ml=15.0, side="left"),),
        matrix=64,
        patient=PATIENT,
        study_date=date(2025, 6, 3),
    )
    cr = write_non_ct_study(
        tmp_path / "cr",
        seed=3,
        modality="CR",
        matrix=64,
        patient=PATIENT,
        study_date=date(2023, 9, 9),
    )
    write_non_ct_study(
        tmp_path / "other",
        seed=4,
        modality="MR",
        matrix=64,
        patient=OTHER,
        study_date=date(2024, 1, 1),
    )
    for folder in ("mr", "ct", "cr", "other"):
        _store(orthanc, tmp_path / folder)
    thick = ct.series_by_role("thick")[0]
    images = [pydicom.dcmread(f) for f in sorted((tmp_path / "ct" / thick.directory).glob("*.dcm"))]
    finding = Finding(
        kind="hemorrhage",
        subtype="subdural",
        probability=0.97,
        volume_ml=14.2,
        location=Location(side="left", compartment="supratentorial"),
    )
    model = ModelRef(name="pacsflow-ich", version="7", approved=True)
    sr = build_sr(
        images, [finding], model, seg=None, study_probability=0.97, priority=Priority.CRITICAL
    )
    archive = Archive(orthanc.orthanc)
    archive.store([sr])

    events = patient_timeline(archive, PATIENT.patient_id)

    assert [e.study_uid for e in events] == [cr.study_uid, mr.study_uid, ct.study_uid]
    assert [e.date for e in events] == ["2023-09-09", "2024-02-01", "2025-06-03"]
    by_uid = {e.study_uid: e for e in events}
    assert by_uid[mr.study_uid].modalities == ["MR"]
    assert "SR" in by_uid[ct.study_uid].modalities
    assert by_uid[ct.study_uid].specialties == ["radiology", "reports"]
    (line,) = by_uid[ct.study_uid].key_findings
    assert line.startswith("pacsflow-ich 7:") and "14.2 mL" in line
    assert by_uid[cr.study_uid].key_findings == []
