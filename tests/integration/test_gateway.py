"""The gateway with real peers: dcmtk storescu, pynetdicom SCU, a real Prefect server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, RTImageStorage, Verification

from pacsflow.config import Settings
from pacsflow.gateway.outbox import Outbox
from pacsflow.orchestration.prefect_api import PrefectApi
from pacsflow.testing.dicom_factory import tiny_ct, write_tiny_study
from pacsflow.testing.gateway import running_gateway
from pacsflow.testing.services import storescu

pytestmark = [pytest.mark.prefect, pytest.mark.dcmtk, pytest.mark.orthanc]

DEPLOYMENT = "stroke-triage/stroke-triage"


def _wait(predicate, timeout_s: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _runs_for(api: PrefectApi, study_uid: str) -> list[dict]:  # type: ignore[type-arg]
    return [
        r for r in api.flow_runs_of(DEPLOYMENT) if r["parameters"].get("study_uid") == study_uid
    ]


def _send_to_gateway(settings: Settings, files: list[Path]) -> None:
    done = storescu(
        settings, files, port=settings.gateway.dicom_port, called_aet=settings.gateway.aet
    )
    assert done.returncode == 0, done.stderr


def test_storescu_study_starts_exactly_one_run_and_resend_starts_none(
    gateway_settings: Settings, deployments_registered: dict[str, str], tmp_path: Path
) -> None:
    study_uid, files = write_tiny_study(tmp_path / "study", slices=4)
    api = PrefectApi(gateway_settings.prefect.effective_api_url)
    with running_gateway(gateway_settings) as gw:
        _send_to_gateway(gateway_settings, files)
        row = _wait(
            lambda: [r for r in gw.outbox.list("dispatched") if r.study_uid == study_uid],
            what="dispatch",
        )[0]
        assert row.pathway == "stroke_triage"
        assert len(_runs_for(api, study_uid)) == 1

        _send_to_gateway(gateway_settings, files)  # the same study again
        time.sleep(gateway_settings.gateway.stable_window_s["default"] + 2)
        assert len(_runs_for(api, study_uid)) == 1
        assert len([r for r in gw.outbox.list() if r.study_uid == study_uid]) == 1
    spooled = list((gateway_settings.spool_dir / study_uid).rglob("*.dcm"))
    assert len(spooled) == 4


def test_studies_accepted_while_prefect_is_down_run_once_it_is_back(
    gateway_settings: Settings,
    deployments_registered: dict[str, str],
    prefect_process,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    api = PrefectApi(gateway_settings.prefect.effective_api_url)
    studies = [write_tiny_study(tmp_path / f"s{i}", slices=2) for i in range(3)]
    with running_gateway(gateway_settings) as gw:
        prefect_process.stop()
        try:
            for _uid, files in studies:
                _send_to_gateway(gateway_settings, files)  # still accepted
            _wait(
                lambda: all(
                    any(r.study_uid == uid and r.attempts >= 1 for r in gw.outbox.list("pending"))
                    for uid, _ in studies
                ),
                what="failed dispatch attempts while Prefect is down",
            )
        finally:
            prefect_process.start()
            prefect_process.wait_ready()
        _wait(
            lambda: all(
                any(r.study_uid == uid for r in gw.outbox.list("dispatched")) for uid, _ in studies
            ),
            timeout_s=90,
            what="dispatch after Prefect came back",
        )
    for uid, _ in studies:
        assert len(_runs_for(api, uid)) == 1


def _scu_store(
    settings: Settings, datasets_or_paths: list, calling: str = "MODALITY1"
) -> list[int]:  # type: ignore[type-arg]
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(RTImageStorage)
    assoc = ae.associate("127.0.0.1", settings.gateway.dicom_port, ae_title=settings.gateway.aet)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(item).Status) for item in datasets_or_paths]
    finally:
        assoc.release()


def test_bad_dicom_gets_failure_status_is_quarantined_and_listener_keeps_serving(
    gateway_settings: Settings, tmp_path: Path
) -> None:
    study, series = generate_uid(), generate_uid()
    good = tiny_ct(study_uid=study, series_uid=series, index=0)
    no_study_uid = tiny_ct(study_uid=study, series_uid=series, index=1)
    del no_study_uid.StudyInstanceUID
    bad_uid = tiny_ct(study_uid="not-a-uid", series_uid=series, index=2)
    truncated_pixels = tiny_ct(study_uid=study, series_uid=series, index=3)
    truncated_pixels.PixelData = truncated_pixels.PixelData[:100]
    rt_image = tiny_ct(study_uid=study, series_uid=series, index=4, sop_class_uid=RTImageStorage)
    truncated_file = tmp_path / "truncated.dcm"
    tiny_ct(study_uid=study, series_uid=series, index=5).save_as(
        truncated_file, enforce_file_format=True
    )
    truncated_file.write_bytes(truncated_file.read_bytes()[:400])
    after = tiny_ct(study_uid=study, series_uid=series, index=6)

    with running_gateway(gateway_settings):
        statuses = _scu_store(
            gateway_settings,
            [good, no_study_uid, bad_uid, truncated_pixels, rt_image, truncated_file, after],
        )
        assert statuses[0] == 0x0000
        assert statuses[1] == 0xC000  # cannot understand: StudyInstanceUID missing
        assert statuses[2] == 0xC000  # invalid UID
        assert statuses[3] == 0xC000  # pixel data truncated
        assert statuses[4] == 0x0122  # SOP class not supported
        assert statuses[5] in (0xC000, 0xA900)  # truncated object
        assert statuses[6] == 0x0000  # the listener still serves
        # A duplicate SOP Instance UID is accepted (once).
        assert _scu_store(gateway_settings, [good]) == [0x0000]

        # Unknown calling AE: with an allow-list the association is rejected.
    reasons = sorted(
        json.loads(p.read_text())["reason"] for p in gateway_settings.quarantine_dir.glob("*.json")
    )
    assert len(reasons) == 5
    assert any("StudyInstanceUID" in r for r in reasons)
    assert any("truncated" in r for r in reasons)
    assert any("not supported" in r for r in reasons)
    stored = list((gateway_settings.spool_dir / study).rglob("*.dcm"))
    assert len(stored) == 2
    assert dcmread(stored[0]).StudyInstanceUID == study


def test_unknown_calling_ae_is_rejected_and_known_one_served(
    tmp_path: Path, gateway_settings: Settings
) -> None:
    settings = gateway_settings.model_copy(
        update={"gateway": gateway_settings.gateway.model_copy(update={"allowed_aets": ["CT1"]})}
    )
    with running_gateway(settings):
        ae = AE(ae_title="INTRUDER")
        ae.add_requested_context(Verification)
        assoc = ae.associate(
            "127.0.0.1", settings.gateway.dicom_port, ae_title=settings.gateway.aet
        )
        assert assoc.is_rejected
        ae2 = AE(ae_title="CT1")
        ae2.add_requested_context(Verification)
        assoc2 = ae2.associate(
            "127.0.0.1", settings.gateway.dicom_port, ae_title=settings.gateway.aet
        )
        assert assoc2.is_established
        assert assoc2.send_c_echo().Status == 0
        assoc2.release()


def test_outbox_rows_survive_in_the_database(gateway_settings: Settings, tmp_path: Path) -> None:
    """What was acknowledged is on disk: a new Outbox on the same database sees it."""
    from pacsflow.db.session import make_engine, make_sessionmaker

    study_uid, files = write_tiny_study(tmp_path / "study", slices=2)
    with running_gateway(gateway_settings):
        _send_to_gateway(gateway_settings, files)
        fresh = Outbox(make_sessionmaker(make_engine(gateway_settings.database_url)))
        _wait(lambda: [r for r in fresh.list() if r.study_uid == study_uid], what="outbox row")


def _orm(accession: str, *, control: str, status: str = "SC", pid: str = "PAT-77") -> str:
    segments = [
        f"MSH|^~\\&|RIS|HOSP|PACSFLOW|RAD|20261128093000||ORM^O01|{control}|P|2.3",
        f"PID|1||{pid}^^^HOSP^MR||Doe^Jane||19600101|F",
        f"ORC|NW|PL-{accession}|FL-{accession}||{status}||^^^^^S||20261128093000|||1234^House^Greg",
        f"OBR|1|PL-{accession}|FL-{accession}|CTHEAD^CT head without contrast^L|||"
        f"20261128093000|||||||||1234^House^Greg||{accession}|||||||||||||"
        "^Sudden weakness left arm",
        "ZDS|1.2.3^PACSFLOW^Application^DICOM",
    ]
    return "\n".join(segments)  # LF segment ends, as some interface engines send


def test_hl7_orders_are_stored_bad_ones_get_ae_and_complete_order_closes_study(
    gateway_settings: Settings, tmp_path: Path
) -> None:
    from pacsflow.db.session import make_engine, make_sessionmaker
    from pacsflow.db.tables import Order, ReceivedStudy
    from pacsflow.hl7.client import send_message_sync

    settings = gateway_settings.model_copy(
        update={
            "gateway": gateway_settings.gateway.model_copy(
                update={"stable_window_s": {"default": 300.0}}  # only HL7 can close it
            )
        }
    )
    port = settings.gateway.mllp_port
    study_uid, files = write_tiny_study(tmp_path / "study", slices=2, accession="ACC-HL7-1")
    with running_gateway(settings):
        ack = send_message_sync("127.0.0.1", port, _orm("ACC-HL7-1", control="C1"), timeout_s=5)
        assert ack.code.value == "AA" and ack.acknowledged_control_id == "C1"

        missing_pid = _orm("ACC-HL7-2", control="C2", pid="").replace(
            "PID|1||^^^HOSP^MR", "PID|1||"
        )
        ack = send_message_sync("127.0.0.1", port, missing_pid, timeout_s=5)
        assert ack.code.value == "AE" and "PID-3" in ack.error_location + ack.text

        unsupported = "MSH|^~\\&|RIS|HOSP|PACSFLOW|RAD|20261128||SIU^S12|C3|P|2.5.1\rSCH|1"
        ack = send_message_sync("127.0.0.1", port, unsupported, timeout_s=5)
        assert ack.code.value == "AR"

        _send_to_gateway(settings, files)
        sessions = make_sessionmaker(make_engine(settings.database_url))
        _wait(lambda: sessions().get(ReceivedStudy, study_uid) is not None, what="study open")
        ack = send_message_sync(
            "127.0.0.1", port, _orm("ACC-HL7-1", control="C4", status="CM"), timeout_s=5
        )
        assert ack.code.value == "AA"
        row = _wait(
            lambda: (r := sessions().get(ReceivedStudy, study_uid)) and r.state == "closed" and r,
            what="study closed by the order",
        )
        assert row.closed_by == "hl7-order-complete"
    with sessions() as session:
        order = session.get(Order, "ACC-HL7-1")
        assert order is not None and order.patient_id == "PAT-77"
        assert "weakness" in (order.context.get("indication") or "")
        assert session.get(Order, "ACC-HL7-2") is None


def test_spooled_study_unknown_to_the_database_is_recovered_at_start(
    gateway_settings: Settings, tmp_path: Path
) -> None:
    """A crash between the spool fsync and the database row loses nothing."""
    from pacsflow.db.session import make_engine, make_sessionmaker
    from pacsflow.db.tables import ReceivedStudy
    from pacsflow.gateway.spool import Spool

    study_uid, files = write_tiny_study(tmp_path / "study", slices=2)
    spool = Spool(gateway_settings.spool_dir, gateway_settings.quarantine_dir)
    for f in files:  # what the SCP wrote before "crashing"
        ds = dcmread(f)
        spool.store(study_uid, str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), f.read_bytes())
    with running_gateway(gateway_settings):
        sessions = make_sessionmaker(make_engine(gateway_settings.database_url))
        row = _wait(
            lambda: (r := sessions().get(ReceivedStudy, study_uid)) and r.state == "closed" and r,
            what="recovered study closed",
        )
        assert row.closed_by == "stable-window"


def test_mpps_completed_closes_the_study_before_the_stable_window(
    gateway_settings: Settings, tmp_path: Path
) -> None:
    from pydicom import Dataset

    from pacsflow.db.session import make_engine, make_sessionmaker
    from pacsflow.db.tables import ReceivedStudy

    settings = gateway_settings.model_copy(
        update={
            "gateway": gateway_settings.gateway.model_copy(
                update={"stable_window_s": {"default": 300.0}}
            )
        }
    )
    study_uid, files = write_tiny_study(tmp_path / "study", slices=2)
    with running_gateway(settings):
        ae = AE(ae_title="MODALITY1")
        from pynetdicom.sop_class import ModalityPerformedProcedureStep

        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate(
            "127.0.0.1", settings.gateway.dicom_port, ae_title=settings.gateway.aet
        )
        assert assoc.is_established
        mpps_uid = generate_uid()
        attrs = Dataset()
        step = Dataset()
        step.StudyInstanceUID = study_uid
        attrs.ScheduledStepAttributesSequence = [step]
        attrs.PerformedProcedureStepStatus = "IN PROGRESS"
        status, _ = assoc.send_n_create(attrs, ModalityPerformedProcedureStep, mpps_uid)
        assert status.Status == 0
        _send_to_gateway(settings, files)
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, mpps_uid)
        assert status.Status == 0
        assoc.release()
        sessions = make_sessionmaker(make_engine(settings.database_url))
        row = _wait(
            lambda: (r := sessions().get(ReceivedStudy, study_uid)) and r.state == "closed" and r,
            timeout_s=15,
            what="study closed by MPPS",
        )
        assert row.closed_by == "mpps"  # after the MPPS grace window, not 300 s
