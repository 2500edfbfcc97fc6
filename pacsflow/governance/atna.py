"""DICOM audit messages (PS3.15 Annex A.5, the XML format IHE ATNA audit repositories take).

One AuditMessage per pacsflow audit entry:

- EventIdentification: EventID from DICOM CID 400 (PS3.16), EventActionCode (C/R/U/D/E),
  EventDateTime, EventOutcomeIndicator (0 success, 4 minor failure), and EventTypeCode:
  the DICOM CID 401 code where one fits, plus pacsflow's own action as a code of the private
  coding scheme "99PACSFLOW" so a repository can filter on it;
- ActiveParticipant: the actor (UserID), requestor, with its pacsflow role as RoleIDCode;
- AuditSourceIdentification: pacsflow, type 4 "Application Server" (CID 20 of RFC 3881);
- ParticipantObjectIdentification: the study (Study Instance UID, DCM 110180) when the
  subject is a UID, the patient (RFC 3881 "Patient Number") when the entry names one, the
  user (RFC 3881 "User Identifier") for account events; anything else as a pacsflow subject.

Coded values follow A.5.1's CodedValueType: attributes csd-code, codeSystemName, originalText.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

DCM = "DCM"
RFC3881 = "RFC-3881"
PRIVATE = "99PACSFLOW"  # private coding scheme designators start with "99" (PS3.16 8.2)
_UID = re.compile(r"[0-9]+(\.[0-9]+)+")


class AuditEntryLike(Protocol):
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class Code:
    code: str
    scheme: str
    meaning: str

    def element(self, tag: str) -> ET.Element:
        attributes = {"csd-code": self.code, "codeSystemName": self.scheme}
        return ET.Element(tag, {**attributes, "originalText": self.meaning})


@dataclass(frozen=True)
class EventKind:
    event_id: Code
    action_code: str  # EventActionCode: C create, R read, U update, D delete, E execute
    type_code: Code | None = None


# DICOM CID 400 Audit Event ID and CID 401 Audit Event Type Code (PS3.16).
APPLICATION_ACTIVITY = Code("110100", DCM, "Application Activity")
AUDIT_LOG_USED = Code("110101", DCM, "Audit Log Used")
INSTANCES_ACCESSED = Code("110103", DCM, "DICOM Instances Accessed")
IMPORT = Code("110107", DCM, "Import")
PROCEDURE_RECORD = Code("110111", DCM, "Procedure Record")
SECURITY_ALERT = Code("110113", DCM, "Security Alert")
USER_AUTHENTICATION = Code("110114", DCM, "User Authentication")
LOGIN = Code("110122", DCM, "Login")
LOGOUT = Code("110123", DCM, "Logout")
USER_SECURITY_ATTRIBUTES_CHANGED = Code("110137", DCM, "User Security Attributes Changed")
STUDY_INSTANCE_UID = Code("110180", DCM, "Study Instance UID")
PATIENT_NUMBER = Code("2", RFC3881, "Patient Number")
USER_IDENTIFIER = Code("11", RFC3881, "User Identifier")
PACSFLOW_SUBJECT = Code("subject", PRIVATE, "pacsflow audit subject")

EVENTS: dict[str, EventKind] = {
    "auth.login": EventKind(USER_AUTHENTICATION, "E", LOGIN),
    "auth.login_failed": EventKind(USER_AUTHENTICATION, "E", LOGIN),
    "auth.logout": EventKind(USER_AUTHENTICATION, "E", LOGOUT),
    "result.view": EventKind(INSTANCES_ACCESSED, "R"),
    "result.confirm": EventKind(PROCEDURE_RECORD, "U"),
    "result.reject": EventKind(PROCEDURE_RECORD, "U"),
    "result.override": EventKind(PROCEDURE_RECORD, "U"),
    "study.received": EventKind(IMPORT, "C"),
    "inference": EventKind(INSTANCES_ACCESSED, "R"),
    "pathway.outcome": EventKind(PROCEDURE_RECORD, "C"),
    "audit.read": EventKind(AUDIT_LOG_USED, "R"),
    "audit.verify": EventKind(AUDIT_LOG_USED, "R"),
    "audit.export": EventKind(AUDIT_LOG_USED, "R"),
    "user.add": EventKind(SECURITY_ALERT, "E", USER_SECURITY_ATTRIBUTES_CHANGED),
    "user.disable": EventKind(SECURITY_ALERT, "E", USER_SECURITY_ATTRIBUTES_CHANGED),
    "user.token": EventKind(SECURITY_ALERT, "E", USER_SECURITY_ATTRIBUTES_CHANGED),
}
_FAILED = {"auth.login_failed"}
_USER_SUBJECT = {"auth.login", "auth.login_failed", "auth.logout", "user.add", "user.disable"}


def event_kind(action: str) -> EventKind:
    return EVENTS.get(action, EventKind(APPLICATION_ACTIVITY, "E"))


def outcome_indicator(entry: AuditEntryLike) -> str:
    """0 success, 4 minor failure, 8 serious failure (A.5.1 EventOutcomeIndicator)."""
    if entry.action in _FAILED or entry.detail.get("outcome") == "failed":
        return "4"
    return "0"


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def audit_message(entry: AuditEntryLike, *, source_id: str = "pacsflow") -> ET.Element:
    kind = event_kind(entry.action)
    message = ET.Element("AuditMessage")
    event = ET.SubElement(
        message,
        "EventIdentification",
        {
            "EventActionCode": kind.action_code,
            "EventDateTime": _iso(entry.at),
            "EventOutcomeIndicator": outcome_indicator(entry),
        },
    )
    event.append(kind.event_id.element("EventID"))
    if kind.type_code is not None:
        event.append(kind.type_code.element("EventTypeCode"))
    event.append(Code(entry.action, PRIVATE, entry.action).element("EventTypeCode"))

    participant = ET.SubElement(
        message, "ActiveParticipant", {"UserID": entry.actor, "UserIsRequestor": "true"}
    )
    role = entry.detail.get("role")
    if isinstance(role, str) and role:
        participant.append(Code(role, PRIVATE, f"pacsflow role {role}").element("RoleIDCode"))

    source = ET.SubElement(message, "AuditSourceIdentification", {"AuditSourceID": source_id})
    source.append(Code("4", DCM, "Application Server").element("AuditSourceTypeCode"))

    for obj in _participant_objects(entry):
        message.append(obj)
    return message


def _participant_objects(entry: AuditEntryLike) -> list[ET.Element]:
    objects: list[ET.Element] = []
    if _UID.fullmatch(entry.subject) and len(entry.subject) <= 64:
        study = _object(entry.subject, type_code="2", role="3", id_type=STUDY_INSTANCE_UID)
        accession = entry.detail.get("accession")
        if isinstance(accession, str) and accession:
            ET.SubElement(study, "Accession", {"Number": accession})
        objects.append(study)
        patient_id = entry.detail.get("patient_id")
        if isinstance(patient_id, str) and patient_id:
            objects.append(_object(patient_id, type_code="1", role="1", id_type=PATIENT_NUMBER))
    elif entry.action in _USER_SUBJECT:
        objects.append(_object(entry.subject, type_code="1", role="11", id_type=USER_IDENTIFIER))
    elif entry.subject:
        objects.append(_object(entry.subject, type_code="2", role="4", id_type=PACSFLOW_SUBJECT))
    return objects


def _object(object_id: str, *, type_code: str, role: str, id_type: Code) -> ET.Element:
    """ParticipantObjectTypeCode: 1 person, 2 system object; role (RFC 3881): 1 patient,
    3 report, 4 resource, 11 security user entity."""
    element = ET.Element(
        "ParticipantObjectIdentification",
        {
            "ParticipantObjectID": object_id,
            "ParticipantObjectTypeCode": type_code,
            "ParticipantObjectTypeCodeRole": role,
        },
    )
    element.append(id_type.element("ParticipantObjectIDTypeCode"))
    return element


def audit_message_xml(entry: AuditEntryLike, *, source_id: str = "pacsflow") -> str:
    """The message as one line of XML (no declaration; UTF-8 when encoded)."""
    return ET.tostring(audit_message(entry, source_id=source_id), encoding="unicode")
