"""Hostile input on the gateway's DICOM listener (issue 9, "Hostile input").

Over 200 malformed objects C-STOREd on one association, a known-good one every fifth:
each gets a C-STORE status from PS3.4 B.2-1 / PS3.7 C.4.2 (never a dropped association),
is spooled when the status is success and quarantined, not spooled, when refused; the good
ones keep succeeding. Connections that are not DICOM at all are dropped without harming
the listener. Afterwards every study the listener opened still closes.

The regression tests at the end pin three defects the fuzzing found (now fixed): an object
whose header pydicom reads but cannot serialise to JSON (an invalid DS value) was spooled
yet answered 0x0110, poisoned the rest of its study and stopped the gateway restarting;
parse errors outside the caught exception types were answered 0x0110 and not quarantined;
TCP probes held association slots for the 30 s ACSE timeout and locked modalities out.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, RTImageStorage, Verification
from sqlalchemy import select

from pacsflow.db.tables import ReceivedStudy
from pacsflow.stack.process import free_port
from pacsflow.testing.gateway import running_gateway
from pacsflow.testing.services import isolated_settings

from .dicom_cases import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH,
    PROCESSING_FAILURE,
    REFUSED_SOP_CLASS,
    SUCCESS,
    TRANSFER_SYNTAXES,
    DicomCase,
    dicom_cases,
    is_protocol_status,
    valid_case,
    with_element_value,
)
from .live import LiveGateway, fuzz_uid

pytestmark = [
    pytest.mark.reliability,
    # pydicom warns about every invalid value the gateway reads; that is the point here.
    pytest.mark.filterwarnings("ignore::UserWarning:pydicom"),
]

MIN_OBJECTS = 200
GOOD_EVERY = 5
NOT_DICOM_CONNECTIONS = 24
QUARANTINED_STATUSES = (REFUSED_SOP_CLASS, DOES_NOT_MATCH, CANNOT_UNDERSTAND)


@pytest.fixture(scope="module")
def raw_file_sending() -> Iterator[None]:
    """pynetdicom sends a file's dataset bytes as they are, without decoding them first."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = before


def _fuzzing_ae() -> AE:
    ae = AE(ae_title="FUZZSCU")
    ae.add_requested_context(Verification)
    for transfer_syntax in TRANSFER_SYNTAXES:  # one context each, so each is accepted
        ae.add_requested_context(CTImageStorage, transfer_syntax)
    ae.add_requested_context(MRImageStorage, TRANSFER_SYNTAXES[0])
    ae.add_requested_context(RTImageStorage, TRANSFER_SYNTAXES[0])
    return ae


def _quarantined(live: LiveGateway) -> int:
    return len(list(live.settings.quarantine_dir.glob("*.json")))


def _open_studies(live: LiveGateway) -> list[str]:
    with live.gateway.sessions() as session:
        rows = session.scalars(select(ReceivedStudy).where(ReceivedStudy.state == "open"))
        return [row.study_uid for row in rows]


# Connections that are not DICOM: HTTP, TLS, HL7, truncated or absurd PDUs, random bytes.
_NOT_DICOM = [
    b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32),
    b"\x0bMSH|^~\\&|A|B|C|D|2026||ADT^A08|1|P|2.5.1\r\x1c\r",
    b"\x01\x00\x00\x00",  # an A-ASSOCIATE-RQ header cut short
    b"\x01\x00\xff\xff\xff\xff" + bytes(64),  # an A-ASSOCIATE-RQ claiming 4 GiB
    b"\x01\x00\x00\x00\x00\x10" + b"\x00\x01\x00\x00" + b"X" * 12,  # garbage variable items
    b"\x04\x00\x00\x00\x00\x0c\x00\x00\x00\x08\x01\x03" + bytes(6),  # P-DATA before any association
    b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00",  # A-RELEASE-RQ out of the blue
    b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00",  # A-ABORT out of the blue
]


def _raw_exchange(live: LiveGateway, junk: bytes) -> bytes:
    with socket.create_connection((live.host, live.settings.gateway.dicom_port), timeout=30) as s:
        try:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return b""
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def test_dicom_listener_drops_what_is_not_dicom_and_keeps_serving(
    live_gateway: LiveGateway,
) -> None:
    """Each such connection ends with nothing or an A-ASSOCIATE-RJ / A-ABORT PDU (PS3.8
    9.3). Each one holds an association slot until the (short) ACSE timeout, so this test
    runs first and the slots are free again before the module's gateway stops."""
    seen = Counter[str]()

    @settings(max_examples=NOT_DICOM_CONNECTIONS, deadline=None, derandomize=True, database=None)
    @given(junk=st.one_of(st.sampled_from(_NOT_DICOM), st.binary(min_size=1, max_size=1_000)))
    def not_dicom(junk: bytes) -> None:
        answer = _raw_exchange(live_gateway, junk)
        assert answer == b"" or answer[0] in (0x03, 0x07), f"{junk[:60]!r} -> {answer[:60]!r}"
        seen["rejected" if answer else "closed"] += 1

    not_dicom()
    assert seen["rejected"] and seen["closed"], seen
    live_gateway.assert_alive()


def test_dicom_scp_answers_every_malformed_object_with_a_store_status(
    live_gateway: LiveGateway, raw_file_sending: None, tmp_path: Path
) -> None:
    live = live_gateway
    ae = _fuzzing_ae()
    association: list[Association] = [live.associate(ae)]
    statuses: Counter[int] = Counter()
    quarantined_before = _quarantined(live)

    def send(case: DicomCase, path: Path) -> int:
        assoc = association[0]
        if not assoc.is_established:  # an earlier example failed on a drop; carry on
            association[0] = assoc = live.associate(ae)
        path.write_bytes(case.file_bytes())
        response = assoc.send_c_store(path)
        assert "Status" in response and assoc.is_established, f"{case!r}: association dropped"
        return int(response.Status)

    @settings(
        max_examples=205,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def malformed_object(data: st.DataObject) -> None:
        serial = live.next_serial()
        case = data.draw(dicom_cases(fuzz_uid(1, serial), serial), label="case")
        status = send(case, tmp_path / f"{serial}.dcm")
        assert is_protocol_status(status), f"{case!r}: status 0x{status:04X}"
        if case.expected is not None:
            assert status in case.expected, f"{case!r}: status 0x{status:04X}"
        if case.must_fail:
            assert status != SUCCESS, f"{case!r}: accepted"
        spooled = bool(live.spooled(case.sop_instance_uid))
        if status != PROCESSING_FAILURE:  # an internal error may have stored it first
            assert spooled == (status == SUCCESS), f"{case!r}: 0x{status:04X}, spooled={spooled}"
        statuses[status] += 1
        if sum(statuses.values()) % GOOD_EVERY == 0:
            live.store_good_dicom(association[0], fuzz_uid(3, live.next_serial()))

    try:
        malformed_object()
    finally:
        if association[0].is_established:
            association[0].release()
    assert sum(statuses.values()) >= MIN_OBJECTS, statuses
    assert statuses[SUCCESS] and statuses[CANNOT_UNDERSTAND] and statuses[DOES_NOT_MATCH]
    refused = sum(statuses[s] for s in QUARANTINED_STATUSES)
    assert _quarantined(live) - quarantined_before == refused, "a refusal was not quarantined"
    # Every study the listener opened still closes (stable window 1 s): nothing it accepted
    # is stuck in the assembler.
    deadline = time.monotonic() + 60
    while _open_studies(live) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _open_studies(live), "studies left open after their stable window"
    live.assert_alive()


# -- regression tests of defects the fuzzing found ----------------------------------------

# PixelSpacing (0028,0030) is DS; "k.5" is not a decimal string (PS3.5 6.2). pydicom reads it
# (validation mode WARN), the listener spools it, then StudyAssembler._persist_open called
# Dataset.to_json_dict(), which raised ValueError("could not convert string to float").
TAG_PIXEL_SPACING = 0x00280030
INVALID_DS = b"k.5\\0.5 "
POISONED = (
    "the spool write happens before StudyAssembler.instance_received, whose _persist_open "
    "fails on Dataset.to_json_dict() for an invalid DS value: the object is spooled yet "
    "answered 0x0110, its header stays in the open study and fails every later new series"
)


def _odd_case(live: LiveGateway, study_uid: str) -> DicomCase:
    valid = valid_case(study_uid, live.next_serial())
    return with_element_value(valid, TAG_PIXEL_SPACING, INVALID_DS, "invalid DS")


def _store(live: LiveGateway, case: DicomCase, path: Path) -> int:
    ae = _fuzzing_ae()
    assoc = live.associate(ae)
    try:
        path.write_bytes(case.file_bytes())
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


def test_object_with_an_invalid_decimal_string_is_stored_or_refused_not_both(
    live_gateway: LiveGateway, raw_file_sending: None, tmp_path: Path
) -> None:
    live = live_gateway
    case = _odd_case(live, fuzz_uid(1, live.next_serial()))
    quarantined = _quarantined(live)
    status = _store(live, case, tmp_path / "odd.dcm")
    spooled = bool(live.spooled(case.sop_instance_uid))
    accepted = status == SUCCESS and spooled
    refused = status >> 12 == 0xC and not spooled and _quarantined(live) == quarantined + 1
    assert accepted or refused, f"status 0x{status:04X}, spooled={spooled}"


@contextmanager
def _gateway_with_open_studies(var_dir: Path) -> Iterator[LiveGateway]:
    """A gateway of its own whose studies stay open (300 s stable window) while a test runs."""
    settings = isolated_settings(
        var_dir,
        prefect={"api_url": f"http://127.0.0.1:{free_port()}/api"},
        gateway={"stable_window_s": {"default": 300.0}},
    )
    with running_gateway(settings) as gateway:
        yield LiveGateway(settings, gateway)


def test_valid_series_after_an_odd_object_in_the_same_study_is_stored(
    raw_file_sending: None, tmp_path: Path
) -> None:
    with _gateway_with_open_studies(tmp_path / "var") as live:
        study_uid = fuzz_uid(1, live.next_serial())
        _store(live, _odd_case(live, study_uid), tmp_path / "odd.dcm")  # whatever it answers
        good = valid_case(study_uid, live.next_serial())  # same study, a new series
        assert _store(live, good, tmp_path / "good.dcm") == SUCCESS


def test_gateway_restarts_with_an_odd_object_of_an_open_study_on_its_spool(
    raw_file_sending: None, tmp_path: Path
) -> None:
    with _gateway_with_open_studies(tmp_path / "var") as live:
        _store(live, _odd_case(live, fuzz_uid(1, live.next_serial())), tmp_path / "odd.dcm")
        settings = live.settings
    with running_gateway(settings, timeout_s=20) as gateway:  # StackError today
        LiveGateway(settings, gateway).assert_alive()


def test_element_of_impossible_length_is_refused_as_cannot_understand_and_quarantined(
    live_gateway: LiveGateway, raw_file_sending: None, tmp_path: Path
) -> None:
    live = live_gateway
    valid = valid_case(fuzz_uid(1, live.next_serial()), live.next_serial())
    columns = 0x00280011  # US: 2 bytes per value, here 3
    case = with_element_value(valid, columns, b"\x08\x00\x00", "odd-length US")
    quarantined = _quarantined(live)
    assert _store(live, case, tmp_path / "odd.dcm") == CANNOT_UNDERSTAND
    assert _quarantined(live) == quarantined + 1


def test_tcp_probes_do_not_lock_modalities_out(tmp_path: Path) -> None:
    settings = isolated_settings(
        tmp_path / "var", prefect={"api_url": f"http://127.0.0.1:{free_port()}/api"}
    )
    with running_gateway(settings) as gateway:
        live = LiveGateway(settings, gateway)
        for _ in range(33):  # what TCP health checks or a port scan do
            socket.create_connection((live.host, settings.gateway.dicom_port)).close()
        live.assert_alive()
