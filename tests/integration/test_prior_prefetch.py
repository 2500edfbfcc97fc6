"""Prior prefetch on the real gateway: an HL7 order over MLLP, priors from a real Orthanc."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pydicom
import pytest
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings
from pacsflow.db.session import make_engine, make_sessionmaker
from pacsflow.db.tables import PrefetchedContext
from pacsflow.dicom.dicomweb import Archive
from pacsflow.hl7 import send_message_sync
from pacsflow.pathways.sources import StudySource
from pacsflow.stack.process import free_port
from pacsflow.synth.patients import PatientSpec
from pacsflow.synth.studies import write_head_ct_study, write_non_ct_study
from pacsflow.synth.truth import StudyTruth
from pacsflow.testing.gateway import running_gateway
from pacsflow.testing.services import isolated_settings

pytestmark = [pytest.mark.orthanc]

T = TypeVar("T")
TODAY = datetime.now(UTC).strftime("%Y%m%d")


def _wait(predicate: Callable[[], T | None], what: str, timeout_s: float = 30.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def orm(accession: str, patient_id: str, procedure: str, status: str = "SC") -> str:
    """ORM^O01 v2.5.1: new order (ORC-1 NW), ORC-5 status, OBR-4 procedure, OBR-18 accession."""
    obr = ["OBR", "1", f"PL-{accession}", f"FI-{accession}", procedure] + [""] * 13 + [accession]
    control_id = uuid.uuid4().hex[:20]
    return "\r".join(
        [
            rf"MSH|^~\&|RIS|HOSP|PACSFLOW|HOSP|20260101120000||ORM^O01^ORM_O01|{control_id}|P|2.5.1",
            f"PID|1||{patient_id}||Doe^Jane",
            f"ORC|NW|PL-{accession}|FI-{accession}||{status}",
            "|".join(obr),
        ]
    )


def _order(settings: Settings, accession: str, patient_id: str, procedure: str, **kw: str) -> str:
    """Send an ORM to the gateway's MLLP listener; the ACK's MSA-1."""
    message = orm(accession, patient_id, procedure, **kw)
    ack = send_message_sync("127.0.0.1", settings.gateway.mllp_port, message, timeout_s=30)
    return ack.code.value


def _patient() -> PatientSpec:
    return PatientSpec(
        patient_id=f"PF-{uuid.uuid4().hex[:10]}",
        name="PRIOR^TEST",
        birth_date=date(1950, 3, 4),
        sex="F",
    )


def _store(archive: Archive, folder: Path) -> None:
    archive.store([pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm"))])


def _gateway_settings(tmp_path: Path, orthanc_http_port: int, orthanc_dicom_port: int) -> Settings:
    return isolated_settings(
        tmp_path / "var",
        orthanc={"http_port": orthanc_http_port, "dicom_port": orthanc_dicom_port},
    )


def _sessions(settings: Settings) -> sessionmaker[Session]:
    return make_sessionmaker(make_engine(settings.database_url))


def _row(sessions: sessionmaker[Session], accession: str) -> PrefetchedContext | None:
    with sessions() as session:
        return session.get(PrefetchedContext, accession)


@pytest.fixture(scope="module")
def prior_history(
    orthanc: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[PatientSpec, StudyTruth, StudyTruth]:
    """A patient with a head CT and an MR brain of last year in the archive."""
    patient = _patient()
    folder = tmp_path_factory.mktemp("priors")
    head = write_head_ct_study(
        folder / "head",
        seed=31,
        matrix=64,
        patient=patient,
        study_date=date(2025, 6, 1),
        with_scout=False,
        with_bone=False,
        with_dose_report=False,
    )
    mr = write_non_ct_study(
        folder / "mr",
        seed=32,
        modality="MR",
        matrix=32,
        patient=patient,
        study_date=date(2025, 7, 1),
    )
    archive = Archive(orthanc.orthanc)
    _store(archive, folder / "head")
    _store(archive, folder / "mr")
    return patient, head, mr


def test_order_before_images_prefetches_priors_and_the_run_reads_them(
    orthanc: Settings,
    prior_history: tuple[PatientSpec, StudyTruth, StudyTruth],
    tmp_path: Path,
) -> None:
    patient, head, mr = prior_history
    settings = _gateway_settings(tmp_path, orthanc.orthanc.http_port, orthanc.orthanc.dicom_port)
    sessions = _sessions(settings)
    with running_gateway(settings) as gw:
        assert gw.prefetcher is not None
        # An order no pathway compares with priors: acknowledged, nothing queued (the
        # decision is taken before the ACK, so nothing can start later either).
        assert _order(settings, "ACC-XR-1", patient.patient_id, "XRHAND^XR hand^L") == "AA"
        assert gw.prefetcher.outcome("ACC-XR-1") is None

        assert _order(settings, "ACC-CT-1", patient.patient_id, "CTHEAD^CT head^L") == "AA"
        row = _wait(lambda: _row(sessions, "ACC-CT-1"), "the prefetched row")
        assert (row.patient_id, row.pathway, row.modality) == (
            patient.patient_id,
            "stroke_triage",
            "CT",
        )
        assert [p["study_uid"] for p in row.priors] == [head.study_uid]  # CT only: no MR
        assert row.priors[0]["study_date"] == "20250601"
        assert row.priors[0]["description"] == head.study_description
        assert row.fetched_at is not None

        # A status update of the same order finds the fresh row and fetches nothing.
        update = _order(settings, "ACC-CT-1", patient.patient_id, "CTHEAD^CT head^L", status="IP")
        assert update == "AA"
        _wait(lambda: gw.prefetcher.outcome("ACC-CT-1") == "fresh", "the update's outcome")
    assert _row(sessions, "ACC-XR-1") is None

    # The run of the study, when its images come: the priors as prefetched, marked so.
    source = StudySource(settings, sessions)
    prefetched = source.priors(patient.patient_id, TODAY, accession_number="ACC-CT-1")
    assert [(p["study_uid"], p["source"]) for p in prefetched] == [(head.study_uid, "prefetched")]
    # Exactly what the run would have found by querying the archive itself.
    queried = source.prior_studies(patient.patient_id, TODAY)
    assert queried.source == "queried"
    warm = source.prior_studies(patient.patient_id, TODAY, accession_number="ACC-CT-1")
    assert warm.source == "prefetched"
    assert warm.studies == queried.studies
    assert mr.study_uid not in {s.study_uid for s in queried.studies}


def test_stale_prefetched_priors_are_queried_again(
    orthanc: Settings,
    prior_history: tuple[PatientSpec, StudyTruth, StudyTruth],
    tmp_path: Path,
) -> None:
    patient, head, _mr = prior_history
    settings = _gateway_settings(tmp_path, orthanc.orthanc.http_port, orthanc.orthanc.dicom_port)
    sessions = _sessions(settings)
    with running_gateway(settings):
        assert _order(settings, "ACC-CT-2", patient.patient_id, "CTHEAD^CT head^L") == "AA"
        _wait(lambda: _row(sessions, "ACC-CT-2"), "the prefetched row")
    with sessions() as session:
        row = session.get(PrefetchedContext, "ACC-CT-2")
        assert row is not None
        row.fetched_at = datetime.now(UTC) - timedelta(seconds=settings.priors.max_age_s + 60)
        session.commit()
    priors = StudySource(settings, sessions).prior_studies(
        patient.patient_id, TODAY, accession_number="ACC-CT-2"
    )
    assert priors.source == "queried"
    assert [s.study_uid for s in priors.studies] == [head.study_uid]


def test_archive_down_still_acks_and_leaves_no_row(tmp_path: Path) -> None:
    settings = _gateway_settings(tmp_path, free_port(), free_port())  # no archive there
    sessions = _sessions(settings)
    with running_gateway(settings) as gw:
        assert gw.prefetcher is not None
        assert _order(settings, "ACC-CT-3", "PAT-DOWN", "CTHEAD^CT head^L") == "AA"
        outcome = _wait(lambda: gw.prefetcher.outcome("ACC-CT-3"), "the prefetch to give up")
        assert outcome == "failed: PeerUnavailableError"
        assert _row(sessions, "ACC-CT-3") is None
        # The order itself is stored: the run has its context and will query the priors.
        source = StudySource(settings, sessions)
        order = source.order("ACC-CT-3")
        assert order is not None and order.procedure_code == "CTHEAD"
        assert source.prefetched("ACC-CT-3", "PAT-DOWN", "CT") is None
