"""The FHIR R4 test double over a real socket, and the client's error mapping."""

from __future__ import annotations

import copy
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from pacsflow.domain import Finding, ModelRef, Priority
from pacsflow.errors import InvalidInputError, PeerUnavailableError
from pacsflow.fhir.client import post_bundle
from pacsflow.fhir.resources import build_result_bundle, result_identifier
from pacsflow.fhir.test_server import FhirTestServer, run_fhir_test_server

MODEL = ModelRef(name="ich-segresnet", version="7")


@pytest.fixture(scope="module")
def fhir() -> Iterator[FhirTestServer]:
    server = run_fhir_test_server("127.0.0.1", 0)
    try:
        yield server
    finally:
        server.stop()


def _bundle(study_uid: str, priority: Priority = Priority.CRITICAL) -> dict[str, Any]:
    return build_result_bundle(
        study_uid=study_uid,
        accession_number="ACC-9",
        patient_id="PAT-9",
        findings=[Finding(kind="hemorrhage", probability=0.9, volume_ml=12.0)],
        model=MODEL,
        priority=priority,
        report_text="AI: hemorrhage 12 mL.",
        issued=datetime(2026, 3, 1, tzinfo=UTC),
    )


def _search(base: str, resource_type: str, token: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/{resource_type}", params={"identifier": token}, timeout=10)
    assert response.status_code == 200
    return response.json()


def _report_token(study_uid: str) -> str:
    identifier = result_identifier(study_uid, MODEL, "report")
    return f"{identifier['system']}|{identifier['value']}"


def test_posting_the_same_bundle_twice_stores_one_report(fhir: FhirTestServer) -> None:
    study_uid = generate_uid()
    bundle = _bundle(study_uid)

    first = post_bundle(fhir.url, bundle, timeout_s=10)
    second = post_bundle(fhir.url, bundle, timeout_s=10)

    assert first["type"] == "transaction-response"
    assert [e["response"]["status"] for e in first["entry"]] == ["201 Created"] * 3
    assert [e["response"]["status"] for e in second["entry"]] == ["200 OK"] * 3
    assert [e["response"]["location"] for e in second["entry"]] == [
        e["response"]["location"] for e in first["entry"]
    ]
    found = _search(fhir.url, "DiagnosticReport", _report_token(study_uid))
    assert found["type"] == "searchset"
    assert found["total"] == 1
    flags = _search(
        fhir.url, "Flag", f"urn:pacsflow:ai-result|{study_uid}/ich-segresnet/7/critical-flag"
    )
    assert flags["total"] == 1


def test_references_inside_the_transaction_point_at_stored_resources(
    fhir: FhirTestServer,
) -> None:
    study_uid = generate_uid()
    post_bundle(fhir.url, _bundle(study_uid), timeout_s=10)

    (entry,) = _search(fhir.url, "DiagnosticReport", _report_token(study_uid))["entry"]
    (reference,) = entry["resource"]["result"]
    response = httpx.get(f"{fhir.url}/{reference['reference']}", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    observation = response.json()
    assert observation["resourceType"] == "Observation"
    assert observation["valueQuantity"]["value"] == 12.0
    assert observation["meta"]["versionId"] == "1"


def test_invalid_resource_gets_400_with_an_operation_outcome_and_nothing_is_stored(
    fhir: FhirTestServer,
) -> None:
    study_uid = generate_uid()
    bundle = _bundle(study_uid)
    broken = copy.deepcopy(bundle)
    broken["entry"][1]["resource"]["valueQuantity"]["value"] = "twelve"

    response = httpx.post(
        fhir.url,
        json=broken,
        headers={"Content-Type": "application/fhir+json"},
        timeout=10,
    )

    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert "valueQuantity" in outcome["issue"][0]["diagnostics"]
    assert _search(fhir.url, "DiagnosticReport", _report_token(study_uid))["total"] == 0


def test_a_status_outside_the_required_value_set_is_refused(fhir: FhirTestServer) -> None:
    bundle = _bundle(generate_uid())
    bundle["entry"][0]["resource"]["status"] = "draft"

    with pytest.raises(InvalidInputError, match=r"400.*DiagnosticReport.status 'draft'"):
        post_bundle(fhir.url, bundle, timeout_s=10)


@pytest.mark.parametrize(
    ("body", "diagnostic"),
    [
        (b"{not json", "not JSON"),
        (b'{"resourceType": "Bundle", "type": "batch", "entry": []}', "only transaction"),
        (b'{"resourceType": "Patient"}', "takes a Bundle"),
    ],
)
def test_malformed_posts_get_400(fhir: FhirTestServer, body: bytes, diagnostic: str) -> None:
    response = httpx.post(
        fhir.url, content=body, headers={"Content-Type": "application/fhir+json"}, timeout=10
    )
    assert response.status_code == 400
    assert diagnostic in response.json()["issue"][0]["diagnostics"]


def test_read_of_a_missing_or_unknown_resource_is_404(fhir: FhirTestServer) -> None:
    missing = httpx.get(f"{fhir.url}/Flag/does-not-exist", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    assert httpx.get(f"{fhir.url}/NoSuchType", timeout=10).status_code == 404


def test_single_create_honours_if_none_exist(fhir: FhirTestServer) -> None:
    study_uid = generate_uid()
    identifier = result_identifier(study_uid, MODEL, "critical-flag")
    flag = {
        "resourceType": "Flag",
        "identifier": [identifier],
        "status": "active",
        "code": {"text": "Critical finding: intracranial hemorrhage (AI)"},
        "subject": {"reference": "Patient/p1"},
    }
    headers = {
        "Content-Type": "application/fhir+json",
        "If-None-Exist": f"identifier={identifier['system']}|{identifier['value']}",
    }

    first = httpx.post(f"{fhir.url}/Flag", json=flag, headers=headers, timeout=10)
    second = httpx.post(f"{fhir.url}/Flag", json=flag, headers=headers, timeout=10)

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert first.headers["location"].startswith(f"Flag/{first.json()['id']}")


def test_client_maps_connection_refused_to_peer_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more.
    with pytest.raises(PeerUnavailableError, match="unreachable"):
        post_bundle(f"http://127.0.0.1:{port}", _bundle(generate_uid()), timeout_s=5)


def test_client_maps_a_silent_peer_to_peer_unavailable() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # the kernel accepts the connection; nobody ever answers
        port = listener.getsockname()[1]
        with pytest.raises(PeerUnavailableError, match="did not answer"):
            post_bundle(f"http://127.0.0.1:{port}", _bundle(generate_uid()), timeout_s=0.5)


class _Answer(BaseHTTPRequestHandler):
    """Answers every POST with the status in the server's ``status`` attribute."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status: int = self.server.status  # type: ignore[attr-defined]
        body = b'{"resourceType": "OperationOutcome", "issue": [{"severity": "error", '
        body += b'"code": "exception", "diagnostics": "database is down"}]}'
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:  # keep test output quiet
        pass


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, PeerUnavailableError), (500, PeerUnavailableError), (422, InvalidInputError)],
)
def test_client_maps_http_errors(status: int, error: type[Exception]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.status = status  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(error, match="database is down"):
            post_bundle(
                f"http://127.0.0.1:{server.server_port}", _bundle(generate_uid()), timeout_s=5
            )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_client_reuses_a_given_httpx_client(fhir: FhirTestServer) -> None:
    with httpx.Client() as client:
        answer = post_bundle(fhir.url + "/", _bundle(generate_uid()), timeout_s=10, client=client)
        assert not client.is_closed
    assert answer["resourceType"] == "Bundle"
