"""FHIR R4 test double: a small in-memory FHIR server for tests and the demo.

This is a test double, not an EHR. It implements the slice of the FHIR R4 REST API that
pacsflow uses, faithfully enough to catch mistakes:

- ``POST /`` a transaction Bundle (FHIR R4 3.1.0.11): POST entries only, all-or-nothing,
  conditional create by ``request.ifNoneExist`` (``identifier=<system>|<value>``): one match
  answers ``200 OK`` with the existing resource, several matches ``412``; ``urn:uuid:``
  references between entries are rewritten to the assigned ``Type/id``.
- ``POST /{type}`` a single create, honouring the ``If-None-Exist`` header.
- ``GET /{type}`` a searchset Bundle. Search parameters (FHIR R4 3.1.1.4): ``identifier``
  (token), ``code`` (token, ``,`` = OR), ``subject`` and ``patient`` (reference: ``id``,
  ``Type/id`` or an absolute URL; ``patient`` looks at ``subject``, ``patient`` and ``for``);
  others are ignored, as a lenient server does; ``_count`` pages the answer with ``next``
  links (``_offset``). ``GET /{type}/{id}``, ``GET /metadata``.
- Every posted resource is validated with fhir.resources' R4B models plus the required
  ``status``/``intent`` bindings of the resources pacsflow sends; invalid input gets
  ``400`` with an OperationOutcome and stores nothing.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pacsflow.errors import InvalidInputError, PacsflowError, StackError
from pacsflow.fhir.resources import resource_class, validate_resource

FHIR_JSON = "application/fhir+json"

# Required bindings (FHIR R4 value sets) that the R4B models do not enforce.
REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("DiagnosticReport", "status"): frozenset(
        "registered partial preliminary final amended corrected appended cancelled "
        "entered-in-error unknown".split()
    ),
    ("Observation", "status"): frozenset(
        "registered preliminary final amended corrected cancelled entered-in-error unknown".split()
    ),
    ("Flag", "status"): frozenset("active inactive entered-in-error".split()),
    ("Task", "status"): frozenset(
        "draft requested received accepted rejected ready cancelled in-progress on-hold "
        "failed completed entered-in-error".split()
    ),
    ("Task", "intent"): frozenset(
        "unknown proposal plan order original-order reflex-order filler-order "
        "instance-order option".split()
    ),
}


class FhirHttpError(PacsflowError):
    """An HTTP answer with an OperationOutcome (inside the test double only)."""

    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


@dataclass
class _Planned:
    """One entry of a transaction, resolved before anything is stored."""

    resource_type: str
    resource_id: str
    resource: dict[str, Any]
    created: bool


@dataclass
class FhirStore:
    """Resources in memory, by type then id."""

    resources: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        with self.lock:
            found = self.resources.get(resource_type, {}).get(resource_id)
        if found is None:
            raise FhirHttpError(404, "not-found", f"{resource_type}/{resource_id} not found")
        return found

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        with self.lock:
            return self._search(resource_type, params)

    def _search(self, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        found = list(self.resources.get(resource_type, {}).values())
        for name, token in params:
            if name == "identifier":
                found = [r for r in found if _has_identifier(r, token)]
            elif name == "code":
                found = [r for r in found if _has_code(r, token)]
            elif name in _REFERENCE_PARAMS:
                elements, target = _REFERENCE_PARAMS[name]
                found = [r for r in found if _refers_to(r, elements, target, token)]
        return found

    def transact(
        self, entries: list[tuple[dict[str, Any], str | None, str | None]]
    ) -> list[_Planned]:
        """Create each (resource, ifNoneExist, fullUrl) unless it exists; all or nothing."""
        with self.lock:
            planned: list[_Planned] = []
            references: dict[str, str] = {}
            for resource, condition, full_url in entries:
                resource_type = resource["resourceType"]
                existing = self._match(resource_type, condition, planned)
                if existing is not None:
                    item = _Planned(resource_type, existing["id"], existing, created=False)
                else:
                    new_id = uuid.uuid4().hex
                    stored = {**resource, "id": new_id}
                    item = _Planned(resource_type, new_id, stored, created=True)
                planned.append(item)
                if full_url:
                    references[full_url] = f"{resource_type}/{item.resource_id}"
            now = datetime.now(UTC).isoformat()
            for item in planned:
                if item.created:
                    item.resource = _rewrite_references(item.resource, references)
                    item.resource["meta"] = {
                        **item.resource.get("meta", {}),
                        "versionId": "1",
                        "lastUpdated": now,
                    }
                    self.resources[item.resource_type][item.resource_id] = item.resource
            return planned

    def _match(
        self, resource_type: str, condition: str | None, planned: list[_Planned]
    ) -> dict[str, Any] | None:
        if not condition:
            return None
        params = parse_qsl(condition, keep_blank_values=True)
        if not params or any(name != "identifier" for name, _ in params):
            raise FhirHttpError(
                400, "not-supported", f"ifNoneExist {condition!r}: only identifier is supported"
            )
        matches = self._search(resource_type, params)
        matches += [
            p.resource
            for p in planned
            if p.created
            and p.resource_type == resource_type
            and all(_has_identifier(p.resource, token) for _, token in params)
        ]
        if len(matches) > 1:
            raise FhirHttpError(
                412, "duplicate", f"ifNoneExist {condition!r} matches {len(matches)} resources"
            )
        return matches[0] if matches else None


def _has_identifier(resource: dict[str, Any], token: str) -> bool:
    system: str | None = None
    value = token
    if "|" in token:
        system, _, value = token.partition("|")
    for identifier in resource.get("identifier", []):
        if system is not None and identifier.get("system", "") != system:
            continue
        if value and identifier.get("value") != value:
            continue
        return True
    return False


# Reference search parameters: the elements they look at (Observation.subject,
# EpisodeOfCare.patient, Task.for, Flag.subject) and the type they must point at.
_REFERENCE_PARAMS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "subject": (("subject",), None),
    "patient": (("subject", "patient", "for"), "Patient"),
}


def _has_code(resource: dict[str, Any], tokens: str) -> bool:
    """Token search on ``code``: ``system|code``, ``code`` or ``system|``; ``,`` is OR."""
    codings = (resource.get("code") or {}).get("coding", [])
    for token in tokens.split(","):
        system, bar, code = token.rpartition("|")
        for coding in codings:
            if bar and coding.get("system", "") != system:
                continue
            if code and coding.get("code") != code:
                continue
            return True
    return False


def _refers_to(
    resource: dict[str, Any], elements: tuple[str, ...], target: str | None, value: str
) -> bool:
    """Reference search: ``id``, ``Patient/id`` or an absolute URL ending in ``Patient/id``."""
    for element in elements:
        reference = (resource.get(element) or {}).get("reference")
        if not isinstance(reference, str):
            continue
        if target is not None and reference.split("/")[-2:-1] != [target]:
            continue
        if value == reference or value.endswith("/" + reference):
            return True
        if "/" not in value and reference.endswith("/" + value):
            return True
    return False


def _paging(params: list[tuple[str, str]]) -> tuple[int | None, int]:
    """(``_count``, ``_offset``) of a search; no ``_count``: everything on one page."""
    values = dict(params)
    try:
        count = int(values["_count"]) if "_count" in values else None
        offset = int(values.get("_offset", "0"))
    except ValueError:
        raise FhirHttpError(400, "invalid", "_count and _offset must be integers") from None
    if (count is not None and count < 1) or offset < 0:
        raise FhirHttpError(400, "invalid", "_count must be >= 1 and _offset >= 0")
    return count, offset


def _rewrite_references(node: Any, references: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                references.get(value, value)
                if key == "reference" and isinstance(value, str)
                else _rewrite_references(value, references)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_references(item, references) for item in node]
    return node


def _check_required_codes(resource: dict[str, Any]) -> None:
    resource_type = resource["resourceType"]
    for (bound_type, element), codes in REQUIRED_CODES.items():
        if bound_type == resource_type and element in resource:
            if resource[element] not in codes:
                raise FhirHttpError(
                    400,
                    "code-invalid",
                    f"{resource_type}.{element} {resource[element]!r} is not in the required "
                    "value set",
                )


def _validated(resource: Any) -> dict[str, Any]:
    try:
        checked = validate_resource(resource)
    except InvalidInputError as exc:
        raise FhirHttpError(400, "invalid", str(exc)) from None
    entries = checked.get("entry", []) if checked["resourceType"] == "Bundle" else []
    for resource_in in [checked, *(e.get("resource") or {} for e in entries)]:
        if resource_in:
            _check_required_codes(resource_in)
    return checked


def _known_type(resource_type: str) -> None:
    try:
        resource_class(resource_type)
    except InvalidInputError as exc:
        raise FhirHttpError(404, "not-supported", str(exc)) from None


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise FhirHttpError(400, "structure", f"body is not JSON: {exc}") from None


def _respond(body: dict[str, Any], status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers or None)


def _entry_response(item: _Planned) -> dict[str, Any]:
    meta = item.resource.get("meta", {})
    return {
        "resource": item.resource,
        "response": {
            "status": "201 Created" if item.created else "200 OK",
            "location": f"{item.resource_type}/{item.resource_id}/_history/"
            f"{meta.get('versionId', '1')}",
            "etag": f'W/"{meta.get("versionId", "1")}"',
            "lastModified": meta.get("lastUpdated"),
        },
    }


def _transaction(store: FhirStore, bundle: Any) -> dict[str, Any]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirHttpError(400, "invalid", "POST [base] takes a Bundle")
    if bundle.get("type") != "transaction":
        raise FhirHttpError(
            400, "not-supported", f"Bundle type {bundle.get('type')!r}: only transaction"
        )
    checked = _validated(bundle)
    entries = []
    for number, entry in enumerate(checked.get("entry", []), start=1):
        request = entry.get("request") or {}
        resource = entry.get("resource")
        if request.get("method") != "POST" or not resource:
            raise FhirHttpError(
                400, "not-supported", f"entry {number}: only POST with a resource is supported"
            )
        if request.get("url") != resource["resourceType"]:
            raise FhirHttpError(
                400, "invalid", f"entry {number}: request.url must be {resource['resourceType']}"
            )
        entries.append((resource, request.get("ifNoneExist"), entry.get("fullUrl")))
    planned = store.transact(entries)
    return {
        "resourceType": "Bundle",
        "id": uuid.uuid4().hex,
        "type": "transaction-response",
        "entry": [_entry_response(item) for item in planned],
    }


def create_fhir_test_app() -> FastAPI:
    """The FHIR R4 test double as a FastAPI app; its store is ``app.state.store``."""
    app = FastAPI(title="pacsflow FHIR R4 test double", docs_url=None, redoc_url=None)
    store = FhirStore()
    app.state.store = store

    @app.exception_handler(FhirHttpError)
    async def _fhir_error(_: Request, exc: FhirHttpError) -> JSONResponse:
        return _respond(operation_outcome(exc.code, exc.diagnostics), exc.status)

    @app.get("/metadata")
    async def metadata() -> JSONResponse:
        return _respond(
            {
                "resourceType": "CapabilityStatement",
                "status": "active",
                "date": "2026-01-01",
                "kind": "instance",
                "fhirVersion": "4.0.1",
                "format": ["json"],
                "software": {"name": "pacsflow FHIR R4 test double"},
            }
        )

    @app.post("/")
    async def transaction(request: Request) -> JSONResponse:
        return _respond(_transaction(store, await _json_body(request)))

    @app.post("/{resource_type}")
    async def create(resource_type: str, request: Request) -> JSONResponse:
        resource = _validated(await _json_body(request))
        if resource["resourceType"] != resource_type:
            raise FhirHttpError(400, "invalid", f"resourceType must be {resource_type}")
        (item,) = store.transact([(resource, request.headers.get("If-None-Exist"), None)])
        answer = _entry_response(item)
        return _respond(
            item.resource,
            201 if item.created else 200,
            Location=answer["response"]["location"],
            ETag=answer["response"]["etag"],
        )

    @app.get("/{resource_type}")
    async def search(resource_type: str, request: Request) -> JSONResponse:
        _known_type(resource_type)
        params = list(request.query_params.multi_items())
        found = store.search(resource_type, params)
        base = str(request.base_url).rstrip("/")
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        bundle["total"] = len(found)
        count, offset = _paging(params)
        if count is not None:
            # Paging as a server does it: a page of _count and a "next" link (FHIR R4 3.1.1.5.6).
            if offset + count < len(found):
                kept = [(k, v) for k, v in params if k != "_offset"]
                query = urlencode([*kept, ("_offset", str(offset + count))])
                bundle["link"] = [{"relation": "next", "url": f"{base}/{resource_type}?{query}"}]
            found = found[offset : offset + count]
        bundle["entry"] = [
            {
                "fullUrl": f"{base}/{resource_type}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in found
        ]
        return _respond(bundle)

    @app.get("/{resource_type}/{resource_id}")
    async def read(resource_type: str, resource_id: str) -> JSONResponse:
        _known_type(resource_type)
        return _respond(store.read(resource_type, resource_id))

    return app


@dataclass
class FhirTestServer:
    """A running FHIR R4 test double: ``url`` is its base URL; call ``stop()`` when done."""

    url: str
    app: FastAPI
    _server: uvicorn.Server
    _thread: threading.Thread
    _socket: socket.socket

    @property
    def store(self) -> FhirStore:
        return self.app.state.store  # type: ignore[no-any-return]

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._socket.close()
        if self._thread.is_alive():
            raise StackError(f"FHIR test double at {self.url} did not stop in {timeout_s} s")

    def __enter__(self) -> FhirTestServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def run_fhir_test_server(
    host: str = "127.0.0.1", port: int = 0, *, start_timeout_s: float = 10.0
) -> FhirTestServer:
    """Serve the FHIR R4 test double with uvicorn in a daemon thread (port 0: a free port)."""
    app = create_fhir_test_app()
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    # proto says TCP, and accepted sockets inherit it; with proto 0 every response waited
    # ~40 ms for the client's delayed ACK.
    sock = socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StackError(f"cannot bind the FHIR test double to {host}:{port}: {exc}") from exc
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="fhir-test-double", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise StackError(f"FHIR test double on {host}:{bound_port} did not start")
        time.sleep(0.02)
    netloc = f"[{host}]" if ":" in host else host
    return FhirTestServer(f"http://{netloc}:{bound_port}", app, server, thread, sock)
