"""Storage Commitment Push Model (PS3.4 Annex J) against the gateway's real SCP.

The modality is played by pynetdicom as a real one works: it stores with dcmtk's storescu,
asks for commitment with N-ACTION, and listens on its own port for the N-EVENT-REPORT that
the gateway sends on a new association.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from pacsflow.config import Settings
from pacsflow.gateway.service import Gateway
from pacsflow.gateway.storage_commitment import STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE
from pacsflow.testing.dicom_factory import write_tiny_study
from pacsflow.testing.services import isolated_settings, storescu

pytestmark = [pytest.mark.dcmtk]

MODALITY = "MODALITY1"
# A guard so a bug hangs no test run; no assertion depends on timing.
GUARD_S = 30


@dataclass(frozen=True)
class Report:
    event_type: int
    information: Dataset
    calling_aet: str


class ListeningModality:
    """The modality's own listener for N-EVENT-REPORTs (Storage Commitment, SCU role)."""

    def __init__(self) -> None:
        self.reports: queue.Queue[Report] = queue.Queue()
        self.ae = AE(ae_title=MODALITY)
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        self.server = self.ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)],
        )
        self.port: int = self.server.server_address[1]

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        info = event.event_information
        info.decode()  # read it in full here, on the association's thread
        self.reports.put(
            Report(int(event.event_type or 0), info, event.assoc.requestor.ae_title.strip())
        )
        return 0x0000, None

    def next_report(self) -> Report:
        return self.reports.get(timeout=GUARD_S)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def modality() -> Iterator[ListeningModality]:
    listener = ListeningModality()
    try:
        yield listener
    finally:
        listener.close()


def _settings(var_dir: Path, modality: ListeningModality) -> Settings:
    return isolated_settings(
        var_dir,
        gateway={
            # Studies stay open: nothing in these tests needs Prefect.
            "stable_window_s": {"default": 3600.0},
            "dicom_peers": {MODALITY: f"127.0.0.1:{modality.port}"},
            "commitment_report_attempts": 1,
        },
    )


@pytest.fixture
def gateway(tmp_path: Path, modality: ListeningModality) -> Iterator[Gateway]:
    gw = Gateway(_settings(tmp_path / "var", modality))
    gw.start_threads()
    try:
        yield gw
    finally:
        gw.stop_threads()


def _store_study(gw: Gateway, tmp_path: Path, slices: int = 3) -> list[tuple[str, str]]:
    """Send a tiny CT study with storescu; returns (SOP class, SOP instance) per file."""
    _study, files = write_tiny_study(tmp_path / generate_uid(), slices=slices)
    g = gw.settings.gateway
    done = storescu(gw.settings, files, port=g.dicom_port, called_aet=g.aet, calling_aet=MODALITY)
    assert done.returncode == 0, done.stderr
    return [(str(d.SOPClassUID), str(d.SOPInstanceUID)) for d in map(dcmread, files)]


def _action_information(transaction_uid: str, references: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = Sequence(items)
    return ds


def _request_commitment(
    gw: Gateway,
    action_information: Dataset,
    *,
    calling_aet: str = MODALITY,
    keep_open_for: queue.Queue[Report] | None = None,
) -> int:
    """N-ACTION from calling_aet; returns its status. With ``keep_open_for`` the association
    stays open until a report arrives on it (put on that queue)."""
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(StorageCommitmentPushModel)
    handlers: list[Any] = []
    if keep_open_for is not None:

        def on_report(event: evt.Event) -> tuple[int, None]:
            info = event.event_information
            info.decode()
            keep_open_for.put(Report(int(event.event_type or 0), info, "same-association"))
            return 0x0000, None

        handlers = [(evt.EVT_N_EVENT_REPORT, on_report)]
    g = gw.settings.gateway
    assoc = ae.associate("127.0.0.1", g.dicom_port, ae_title=g.aet, evt_handlers=handlers)
    assert assoc.is_established
    try:
        status, _reply = assoc.send_n_action(
            action_information,
            1,
            StorageCommitmentPushModel,
            STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
        )
        if keep_open_for is not None:
            report = keep_open_for.get(timeout=GUARD_S)
            keep_open_for.put(report)  # back for the caller to read
        return int(status.Status)
    finally:
        assoc.release()


def _references(sequence: Any) -> set[tuple[str, str]]:
    return {
        (str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
        for item in sequence or []
    }


def _record(gw: Gateway, transaction_uid: str, state: str) -> dict[str, Any]:
    """The transaction's JSON record once it reached ``state`` (written after the report)."""
    path = gw.commitment.record_path(transaction_uid)
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        if path.is_file():
            record = json.loads(path.read_text())
            if record["state"] == state:
                return record
        time.sleep(0.1)
    raise AssertionError(f"record of {transaction_uid} never reached {state!r}")


# -- tests ---------------------------------------------------------------------------------------
def test_stored_instances_committed_missing_one_failed_on_a_new_association(
    gateway: Gateway, modality: ListeningModality, tmp_path: Path
) -> None:
    stored = _store_study(gateway, tmp_path, slices=3)
    never_sent = (CTImageStorage, generate_uid())
    wrong_class = (MRImageStorage, stored[0][1])  # stored, but as CT
    transaction = generate_uid()

    status = _request_commitment(
        gateway, _action_information(transaction, [*stored, never_sent, wrong_class])
    )
    assert status == 0x0000
    report = modality.next_report()

    assert report.event_type == 2  # failures exist (PS3.4 J.3.3.1)
    assert report.calling_aet == gateway.settings.gateway.aet  # a new association from us
    assert str(report.information.TransactionUID) == transaction
    assert _references(report.information.ReferencedSOPSequence) == set(stored)
    failed = {
        str(item.ReferencedSOPInstanceUID): (
            str(item.ReferencedSOPClassUID),
            int(item.FailureReason),
        )
        for item in report.information.FailedSOPSequence
    }
    assert failed == {
        never_sent[1]: (CTImageStorage, 0x0112),  # no such object instance
        wrong_class[1]: (MRImageStorage, 0x0119),  # class / instance conflict
    }
    record = _record(gateway, transaction, "delivered")
    assert record["via"] == "new-association"
    assert record["event_type_id"] == 2


def test_all_stored_gives_event_type_1(
    gateway: Gateway, modality: ListeningModality, tmp_path: Path
) -> None:
    stored = _store_study(gateway, tmp_path, slices=2) + _store_study(gateway, tmp_path, slices=2)
    transaction = generate_uid()
    assert _request_commitment(gateway, _action_information(transaction, stored)) == 0x0000

    report = modality.next_report()
    assert report.event_type == 1  # all succeeded
    assert str(report.information.TransactionUID) == transaction
    assert _references(report.information.ReferencedSOPSequence) == set(stored)
    assert "FailedSOPSequence" not in report.information


def test_after_a_restart_instances_are_found_on_the_spool(
    tmp_path: Path, modality: ListeningModality
) -> None:
    """The index of stored instances is memory; the spool is the record."""
    settings = _settings(tmp_path / "var", modality)
    first = Gateway(settings)
    first.start_threads()
    try:
        stored = _store_study(first, tmp_path, slices=2)
    finally:
        first.stop_threads()
    second = Gateway(settings)
    second.start_threads()
    try:
        transaction = generate_uid()
        assert _request_commitment(second, _action_information(transaction, stored)) == 0
        report = modality.next_report()
    finally:
        second.stop_threads()
    assert report.event_type == 1
    assert _references(report.information.ReferencedSOPSequence) == set(stored)


def test_pending_request_left_by_a_stopped_gateway_is_reported_at_start(
    tmp_path: Path, modality: ListeningModality
) -> None:
    settings = _settings(tmp_path / "var", modality)
    records = settings.paths.var_dir / "gateway" / "storage-commitment"
    records.mkdir(parents=True)
    transaction, missing = generate_uid(), generate_uid()
    (records / f"{transaction}.json").write_text(
        json.dumps(
            {
                "transaction_uid": transaction,
                "requestor_aet": MODALITY,
                "state": "pending",
                "references": [[CTImageStorage, missing]],
            }
        )
    )
    gw = Gateway(settings)
    gw.start_threads()
    try:
        report = modality.next_report()
        record = _record(gw, transaction, "delivered")
    finally:
        gw.stop_threads()
    assert report.event_type == 2
    assert str(report.information.TransactionUID) == transaction
    assert int(report.information.FailedSOPSequence[0].FailureReason) == 0x0112
    assert record["failed"] == [{"sop_instance_uid": missing, "failure_reason": "0x0112"}]


def test_unknown_requester_gets_the_report_on_its_open_association(
    gateway: Gateway, tmp_path: Path
) -> None:
    stored = _store_study(gateway, tmp_path, slices=1)
    transaction = generate_uid()
    received: queue.Queue[Report] = queue.Queue()
    status = _request_commitment(
        gateway,
        _action_information(transaction, stored),
        calling_aet="NOTLISTED",
        keep_open_for=received,
    )
    assert status == 0x0000
    report = received.get_nowait()
    assert report.event_type == 1
    assert _references(report.information.ReferencedSOPSequence) == set(stored)
    assert _record(gateway, transaction, "delivered")["via"] == "same-association"


def test_unknown_requester_that_left_is_recorded_as_undeliverable(
    gateway: Gateway, modality: ListeningModality, tmp_path: Path
) -> None:
    stored = _store_study(gateway, tmp_path, slices=1)
    transaction = generate_uid()
    assert (
        _request_commitment(
            gateway, _action_information(transaction, stored), calling_aet="NOTLISTED"
        )
        == 0x0000
    )
    record = _record(gateway, transaction, "undeliverable")
    assert any("NOTLISTED" in error and "dicom_peers" in error for error in record["errors"])
    assert record["committed"] == [stored[0][1]]
    assert modality.reports.empty()  # not sent to somebody else


def test_malformed_requests_get_failure_statuses(gateway: Gateway) -> None:
    no_transaction = _action_information(generate_uid(), [(CTImageStorage, generate_uid())])
    del no_transaction.TransactionUID
    empty = _action_information(generate_uid(), [])
    no_instance = _action_information(generate_uid(), [(CTImageStorage, generate_uid())])
    del no_instance.ReferencedSOPSequence[0].ReferencedSOPInstanceUID

    assert _request_commitment(gateway, no_transaction) == 0x0115  # invalid argument value
    assert _request_commitment(gateway, empty) == 0x0115
    assert _request_commitment(gateway, no_instance) == 0x0115
    # The listener still serves: a good request afterwards is accepted.
    good = _action_information(generate_uid(), [(CTImageStorage, generate_uid())])
    assert _request_commitment(gateway, good) == 0x0000
