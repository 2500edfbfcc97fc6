"""Worklist adapters: one interface for every place a study's reading priority is set.

A pathway's priority goes to each adapter named in `worklist.adapters`, in order:

- ``pacsflow``: pacsflow's own worklist table (what the web UI shows);
- ``orthanc``: the study's ``PacsflowPriority`` metadata in Orthanc (archive-side sorting);
- ``hl7``: an ORM^O01 priority update to the RIS (critical and urgent only);
- ``rest``: a vendor worklist REST API, described by a URL and a JSON body template.

The table and the metadata are upserts (the same value written again changes nothing), so
they are simply written again on a retry. Adapters that send a message to a peer name a
ledger target: their delivery goes through the writeback `Ledger`, one key per adapter and
study and model version, so a retried or re-run pathway never sends it twice.

The REST adapter speaks a generic shape (method + URL + JSON body + headers), tested only
against pacsflow's own test double (`pacsflow.testing.vendor_worklist_double`); no real
vendor API is claimed.
"""

from __future__ import annotations

import hashlib
import logging
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

import httpx
import requests
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings
from pacsflow.config.settings import OrthancSettings, RisSettings, WorklistSettings
from pacsflow.db.tables import WorklistItem
from pacsflow.dicom.dicomweb import OrthancExtras
from pacsflow.domain import Finding, ModelRef, OrderContext, Priority
from pacsflow.errors import (
    ConfigError,
    InvalidInputError,
    PacsflowError,
    PeerUnavailableError,
    PermanentError,
    TransientError,
)
from pacsflow.hl7.client import send_message_sync
from pacsflow.hl7.orm import build_priority_update
from pacsflow.writeback.ledger import Ledger, writeback_key

log = logging.getLogger(__name__)

PRIORITY_METADATA = "PacsflowPriority"  # Orthanc user metadata, declared in its config


class WorklistUpdate(BaseModel):
    """A study's new place on the worklist, as a pathway decided it. No patient names."""

    model_config = ConfigDict(frozen=True)

    study_uid: str
    accession_number: str = ""
    patient_id: str = ""
    pathway: str = "stroke_triage"
    priority: Priority
    summary: str = ""
    findings: list[Finding] = Field(default_factory=list)
    model: ModelRef
    order: OrderContext | None = None


@runtime_checkable
class WorklistAdapter(Protocol):
    """One place a worklist priority is written to.

    `name` is the configured name. `ledger_target` is the ledger's target for adapters that
    send a message (delivered once per study and model version), None for upserts.
    `skip_reason` says why an update is not for this adapter (None: send it).
    `set_priority` writes it and returns a receipt; it raises TransientError (peer down,
    retry later) or PermanentError (refused; retrying will not help).
    """

    name: str
    ledger_target: str | None

    def skip_reason(self, item: WorklistUpdate) -> str | None: ...

    def set_priority(self, item: WorklistUpdate) -> dict[str, str]: ...


# --- pacsflow's table ------------------------------------------------------------------------
class PacsflowTableAdapter:
    """The `worklist` table the web UI and API read (an upsert by Study Instance UID)."""

    name: str = "pacsflow"
    ledger_target: str | None = None

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def skip_reason(self, item: WorklistUpdate) -> str | None:
        return None

    def set_priority(self, item: WorklistUpdate) -> dict[str, str]:
        with self.sessions() as session:
            row = session.get(WorklistItem, item.study_uid) or WorklistItem(
                study_uid=item.study_uid, pathway=item.pathway, priority=item.priority.value
            )
            row.accession_number = item.accession_number or None
            row.patient_id = item.patient_id or None
            row.priority = item.priority.value
            row.summary = item.summary
            row.findings = [f.model_dump(mode="json") for f in item.findings]
            row.model_name, row.model_version = item.model.name, item.model.version
            row.updated_at = datetime.now(UTC)
            session.merge(row)
            session.commit()
        return {"worklist": item.priority.value}


# --- Orthanc study metadata ------------------------------------------------------------------
class OrthancMetadataAdapter:
    """Orthanc user metadata `PacsflowPriority` on the study (Orthanc 1.10 has no labels)."""

    name: str = "orthanc"
    ledger_target: str | None = None

    def __init__(self, settings: OrthancSettings) -> None:
        self.extras = OrthancExtras(settings)

    def skip_reason(self, item: WorklistUpdate) -> str | None:
        return None

    def set_priority(self, item: WorklistUpdate) -> dict[str, str]:
        try:
            self.extras.set_study_metadata(item.study_uid, PRIORITY_METADATA, item.priority.value)
        except requests.HTTPError as exc:  # the study lookup refused (e.g. 401: credentials)
            code = exc.response.status_code if exc.response is not None else 0
            raise InvalidInputError(f"Orthanc refused the study lookup: HTTP {code}") from exc
        return {"archive_metadata": PRIORITY_METADATA}


# --- RIS: HL7 ORM^O01 priority update --------------------------------------------------------
RIS_PRIORITY_TARGET = "ris-priority"


def control_id(key: str) -> str:
    """A deterministic MSH-10 per output (max 20 chars), derived as the other writebacks do,
    so a resend after a crash carries the same control id and the RIS can spot it."""
    return hashlib.sha1(key.encode()).hexdigest()[:20].upper()


class Hl7PriorityAdapter:
    """ORM^O01 with ORC-1 XX and the new priority (pacsflow.hl7.orm) to the RIS over MLLP.

    Only critical and urgent studies move up the RIS worklist (HL7 table 0027 S / A)."""

    name: str = "hl7"
    ledger_target: str | None = RIS_PRIORITY_TARGET
    sends = (Priority.CRITICAL, Priority.URGENT)

    def __init__(self, settings: RisSettings) -> None:
        self.settings = settings

    def skip_reason(self, item: WorklistUpdate) -> str | None:
        if self.settings.mllp_port is None:
            return "no RIS configured (ris.mllp_port)"
        if item.priority not in self.sends:
            return f"priority {item.priority.value} is not sent to the RIS"
        return None

    def set_priority(self, item: WorklistUpdate) -> dict[str, str]:
        ris = self.settings
        if ris.mllp_port is None:
            raise ConfigError("the hl7 worklist adapter needs ris.mllp_port")
        msh10 = control_id(writeback_key(RIS_PRIORITY_TARGET, item.study_uid, item.model))
        message = build_priority_update(
            accession_number=item.accession_number,
            patient_id=item.patient_id,
            priority=item.priority,
            control_id=msh10,
            sending_facility=ris.sending_facility,
            receiving_application=ris.receiving_application,
            order=item.order,
        )
        ack = send_message_sync(ris.mllp_host, ris.mllp_port, message, timeout_s=ris.timeout_s)
        if ack.rejected:
            raise InvalidInputError(f"RIS rejected the priority update: {ack.text}")
        if not ack.accepted:
            raise PeerUnavailableError(f"RIS did not accept the priority update: {ack.text}")
        return {"ris_priority": "sent", "ris_priority_control_id": msh10}


# --- a vendor worklist over REST -------------------------------------------------------------
PLACEHOLDERS: dict[str, str] = {
    "study_uid": "Study Instance UID",
    "accession_number": "accession number",
    "patient_id": "patient ID",
    "pathway": "pacsflow pathway name",
    "priority": "pacsflow priority (critical, urgent, ...)",
    "vendor_priority": "the priority after worklist.rest_priority_map",
    "summary": "one-line result summary",
    "algorithm": "model name and version",
    "model_name": "model name",
    "model_version": "model version",
    "idempotency_key": "the ledger key (also sent as Idempotency-Key)",
}

Template = list[tuple[str, str | None]]  # (literal text, placeholder or None)


def compile_template(text: str, where: str) -> Template:
    """Split a "{placeholder}" template into literal parts and names, refusing anything but
    plain known names (no attribute access, indexing, conversions or format specs)."""
    parts: Template = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(f"{where}: not a valid template {text!r}: {exc}") from exc
    for literal, name, spec, conversion in parsed:
        if name is not None and name not in PLACEHOLDERS:
            known = ", ".join(sorted(PLACEHOLDERS))
            raise ConfigError(f"{where}: unknown placeholder {{{name}}} (known: {known})")
        if spec or conversion:
            raise ConfigError(f"{where}: placeholder {{{name}}} may not carry a format or !r")
        parts.append((literal, name))
    return parts


def render(template: Template, values: Mapping[str, str], quote_values: bool = False) -> str:
    out = []
    for literal, name in template:
        out.append(literal)
        if name is not None:
            out.append(quote(values[name], safe="") if quote_values else values[name])
    return "".join(out)


@dataclass(frozen=True)
class _Text:
    """A string of the body template, compiled."""

    parts: Template


def _compile_body(value: Any, where: str) -> Any:
    """The body template with every string replaced by its compiled template."""
    if isinstance(value, str):
        return _Text(compile_template(value, where))
    if isinstance(value, dict):
        return {k: _compile_body(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_compile_body(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value  # numbers, booleans: sent as they are


def _render_body(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, _Text):
        return render(value.parts, values)
    if isinstance(value, dict):
        return {k: _render_body(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_body(v, values) for v in value]
    return value


_REDIRECT = range(300, 400)
REST_TARGET = "worklist-rest"


class RestWorklistAdapter:
    """A vendor worklist REST API: `method url` with a JSON body, both from templates.

    HTTP 2xx is delivered; 5xx, 408, 429 and network errors are transient; any other
    status (4xx, a redirect) is permanent. Each request carries an `Idempotency-Key` header
    (the ledger key) so a vendor that honours it can drop the resend after a crash.
    """

    ledger_target: str | None = REST_TARGET

    def __init__(
        self,
        *,
        url: str,
        method: str = "PUT",
        body: Mapping[str, Any] | None = None,
        priority_map: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
        name: str = "rest",
    ) -> None:
        self.name = name
        self.url_template = compile_template(url, "worklist.rest_url")
        scheme = urlsplit(render(self.url_template, dict.fromkeys(PLACEHOLDERS, "x"))).scheme
        if scheme not in ("http", "https"):
            raise ConfigError(f"worklist.rest_url must be an http(s) URL, got {url!r}")
        self.method = method.upper()
        if self.method not in ("POST", "PUT", "PATCH"):
            raise ConfigError(f"worklist.rest_method must be POST, PUT or PATCH, got {method!r}")
        self.body_template = _compile_body(dict(body or {}), "worklist.rest_body")
        self.priority_map = dict(priority_map or {})
        unknown = sorted(set(self.priority_map) - {p.value for p in Priority})
        if unknown:
            known = ", ".join(p.value for p in Priority)
            raise ConfigError(
                f"worklist.rest_priority_map: unknown pacsflow priority {unknown[0]!r} "
                f"(known: {known})"
            )
        self.headers = dict(headers or {})
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: WorklistSettings) -> RestWorklistAdapter:
        if not settings.rest_url:
            raise ConfigError(
                "worklist.adapters lists 'rest' but worklist.rest_url is not set "
                "(PACSFLOW_WORKLIST_REST_URL or [worklist] rest_url)"
            )
        return cls(
            url=settings.rest_url,
            method=settings.rest_method,
            body=settings.rest_body,
            priority_map=settings.rest_priority_map,
            headers=settings.rest_headers,
            token=settings.rest_token.get_secret_value() if settings.rest_token else None,
            timeout_s=settings.rest_timeout_s,
        )

    def skip_reason(self, item: WorklistUpdate) -> str | None:
        if item.priority.value not in self.priority_map:
            return f"priority {item.priority.value} is not in worklist.rest_priority_map"
        return None

    def values(self, item: WorklistUpdate) -> dict[str, str]:
        return {
            "study_uid": item.study_uid,
            "accession_number": item.accession_number,
            "patient_id": item.patient_id,
            "pathway": item.pathway,
            "priority": item.priority.value,
            "vendor_priority": self.priority_map.get(item.priority.value, ""),
            "summary": item.summary,
            "algorithm": f"{item.model.name} {item.model.version}",
            "model_name": item.model.name,
            "model_version": item.model.version,
            "idempotency_key": writeback_key(REST_TARGET, item.study_uid, item.model),
        }

    def request(self, item: WorklistUpdate) -> tuple[str, dict[str, Any]]:
        """The URL and JSON body for an update (URL placeholders are percent-encoded)."""
        values = self.values(item)
        return render(self.url_template, values, quote_values=True), _render_body(
            self.body_template, values
        )

    def set_priority(self, item: WorklistUpdate) -> dict[str, str]:
        url, body = self.request(item)
        key = self.values(item)["idempotency_key"]
        headers = {**self.headers, "Idempotency-Key": key}
        where = urlsplit(url)._replace(query="", fragment="").geturl()  # no query in messages
        try:
            response = httpx.request(
                self.method, url, json=body, headers=headers, timeout=self.timeout_s
            )
        except httpx.HTTPError as exc:
            raise PeerUnavailableError(f"vendor worklist {where}: {type(exc).__name__}") from exc
        code = response.status_code
        if code >= 500 or code in (408, 429):
            raise PeerUnavailableError(f"vendor worklist {where} answered {code}")
        if code >= 400 or code in _REDIRECT:
            raise InvalidInputError(f"vendor worklist {where} refused the update: HTTP {code}")
        return {self.name: self.priority_map[item.priority.value], f"{self.name}_http": str(code)}


# --- registry --------------------------------------------------------------------------------
AdapterFactory = Callable[[Settings, sessionmaker[Session]], WorklistAdapter]

ADAPTERS: Mapping[str, AdapterFactory] = {
    "pacsflow": lambda _settings, sessions: PacsflowTableAdapter(sessions),
    "orthanc": lambda settings, _sessions: OrthancMetadataAdapter(settings.orthanc),
    "hl7": lambda settings, _sessions: Hl7PriorityAdapter(settings.ris),
    "rest": lambda settings, _sessions: RestWorklistAdapter.from_settings(settings.worklist),
}


def adapters_from_settings(
    settings: Settings,
    sessions: sessionmaker[Session],
    registry: Mapping[str, AdapterFactory] = ADAPTERS,
) -> list[WorklistAdapter]:
    """The adapters named in `worklist.adapters`, in order. ConfigError for an unknown or
    repeated name, or an adapter whose own settings are incomplete."""
    names = settings.worklist.adapters
    adapters: list[WorklistAdapter] = []
    seen: set[str] = set()
    for name in names:
        key = name.strip().lower()
        if key not in registry:
            known = ", ".join(sorted(registry))
            raise ConfigError(f"worklist.adapters: unknown adapter {name!r} (known: {known})")
        if key in seen:
            raise ConfigError(f"worklist.adapters: {name!r} is listed twice")
        seen.add(key)
        adapter = registry[key](settings, sessions)
        if not isinstance(adapter, WorklistAdapter):
            raise ConfigError(f"worklist adapter {name!r} does not implement WorklistAdapter")
        adapters.append(adapter)
    return adapters


# --- delivery --------------------------------------------------------------------------------
def deliver(
    adapters: Sequence[WorklistAdapter], item: WorklistUpdate, ledger: Ledger
) -> dict[str, str]:
    """Write the update to every adapter and merge their receipts.

    Every adapter is tried even when an earlier one fails (the RIS still hears of a critical
    study while the archive is down). Then, if any failed: TransientError when at least one
    failure may pass on a retry (delivered adapters are skipped through the ledger or
    rewritten as upserts), else PermanentError; the message names each failure.
    """
    receipt: dict[str, str] = {}
    failures: list[tuple[str, PacsflowError]] = []
    for adapter in adapters:
        reason = adapter.skip_reason(item)
        if reason is not None:
            log.debug("worklist %s: %s skipped (%s)", item.study_uid, adapter.name, reason)
            continue
        try:
            receipt.update(_deliver_one(adapter, item, ledger))
        except (TransientError, PermanentError) as exc:
            log.warning(
                "worklist %s: %s failed: %s", item.study_uid, adapter.name, type(exc).__name__
            )
            failures.append((adapter.name, exc))
    if not failures:
        return receipt
    summary = "; ".join(f"{name}: {exc}" for name, exc in failures)
    transient = [exc for _, exc in failures if isinstance(exc, TransientError)]
    if transient:
        error: PacsflowError = TransientError(f"worklist update incomplete ({summary})")
        raise error from transient[0]
    raise PermanentError(f"worklist update refused ({summary})") from failures[0][1]


def _deliver_one(adapter: WorklistAdapter, item: WorklistUpdate, ledger: Ledger) -> dict[str, Any]:
    target = adapter.ledger_target
    if target is None:
        return adapter.set_priority(item)
    key = writeback_key(target, item.study_uid, item.model)
    return ledger.deliver_once(key, item.study_uid, target, lambda: adapter.set_priority(item))
