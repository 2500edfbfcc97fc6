"""FHIR R4 resources pacsflow sends to the EHR: result Bundle and coordinator Task.

Every resource carries a business identifier derived from the study UID, model name and
model version, and goes in a transaction Bundle as a conditional create
(``request.ifNoneExist`` = ``identifier=<system>|<value>``, FHIR R4 3.1.0.8.1): re-sending
the same result creates nothing twice. References between entries use ``urn:uuid:`` full
URLs derived from the same identifiers (FHIR R4 Bundle 2.36.4.1), which the server rewrites.

Everything is validated with fhir.resources' R4B models before it is returned; the JSON of
these resources is R4.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from pacsflow.domain import Finding, ModelRef, Priority
from pacsflow.errors import InvalidInputError

IDENTIFIER_SYSTEM = "urn:pacsflow:ai-result"
DICOM_UID_SYSTEM = "urn:dicom:uid"  # ImagingStudy.identifier for a Study Instance UID
TAG_SYSTEM = "urn:pacsflow:tag"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # diagnostic service section
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"  # identifier type
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"

# DiagnosticReport.code per finding kind (LOINC).
REPORT_CODES: dict[str, tuple[str, str]] = {
    "hemorrhage": ("24725-4", "CT Head"),
    "nodule": ("24627-2", "CT Chest"),
}
# Observation.code per finding kind (SNOMED CT), and the critical flag text.
FINDING_CODES: dict[str, tuple[str, str]] = {
    "hemorrhage": ("50960005", "Hemorrhage"),
    "nodule": ("27925004", "Nodule"),
}
FINDING_TEXT = {"hemorrhage": "intracranial hemorrhage", "nodule": "pulmonary nodule"}
ABSENT = ("272519000", "Absent")
PRESENT = ("52101004", "Present")
# HL7 v3 ObservationInterpretation: AA critical abnormal, A abnormal, N normal.
INTERPRETATIONS = {"AA": "Critical abnormal", "A": "Abnormal", "N": "Normal"}


def result_identifier(study_uid: str, model: ModelRef, suffix: str) -> dict[str, str]:
    """Business identifier of one result resource: same inputs, same identifier."""
    parts = [study_uid, model.name, model.version, suffix]
    return {"system": IDENTIFIER_SYSTEM, "value": "/".join(_token_safe(p) for p in parts)}


def _token_safe(text: str) -> str:
    # Only characters that need no escaping in a FHIR token search (`,` `$` `|` `\`).
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def full_url_for(identifier: dict[str, str]) -> str:
    """Stable ``urn:uuid:`` full URL of the entry that carries ``identifier``."""
    name = f"{identifier['system']}|{identifier['value']}"
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"


def if_none_exist(identifier: dict[str, str]) -> str:
    """``Bundle.entry.request.ifNoneExist`` for a conditional create on ``identifier``."""
    token = f"{identifier['system']}|{identifier['value']}"
    return "identifier=" + quote(token, safe=":/|._-")


def transaction_bundle(resources: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle creating each resource unless its first identifier exists.

    Validates the Bundle (and every resource in it) with the R4B models; raises
    InvalidInputError on a resource without identifier or on a validation failure.
    """
    entries = []
    for resource in resources:
        identifiers = resource.get("identifier") or []
        if not identifiers or "value" not in identifiers[0]:
            raise InvalidInputError(
                f"{resource.get('resourceType')} has no identifier for a conditional create"
            )
        identifier = identifiers[0]
        entries.append(
            {
                "fullUrl": full_url_for(identifier),
                "resource": resource,
                "request": {
                    "method": "POST",
                    "url": resource["resourceType"],
                    "ifNoneExist": if_none_exist(identifier),
                },
            }
        )
    return validate_resource({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def validate_resource(resource: dict[str, Any]) -> dict[str, Any]:
    """Validate a resource (a Bundle validates its entries too) against FHIR R4B.

    Returns the resource as JSON-ready dict; raises InvalidInputError with the reasons.
    """
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(resource_type, str):
        raise InvalidInputError("not a FHIR resource: no resourceType")
    model_class = resource_class(resource_type)
    try:
        model = model_class.model_validate(resource)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid FHIR {resource_type}: {_reasons(exc)}") from None
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def resource_class(resource_type: str) -> type[Resource]:
    """The R4B model class of a resource type; InvalidInputError for anything else."""
    try:
        model_class = get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        model_class = None
    if model_class is None or not issubclass(model_class, Resource):
        raise InvalidInputError(f"unknown FHIR R4 resource type {resource_type!r}")
    return model_class


def _reasons(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


def _instant(moment: datetime, what: str) -> str:
    if moment.tzinfo is None:
        raise InvalidInputError(f"{what} must carry a time zone (FHIR instant)")
    return moment.isoformat()


def _subject(
    patient_id: str, ehr_patient_reference: str | None, patient_id_system: str | None
) -> dict[str, Any]:
    if ehr_patient_reference:
        return {"reference": ehr_patient_reference}
    # A logical reference by the RIS patient ID when the EHR's Patient id is not known.
    identifier = {"value": patient_id}
    if patient_id_system:
        identifier["system"] = patient_id_system
    return {"type": "Patient", "identifier": identifier}


def _imaging_study(study_uid: str) -> dict[str, Any]:
    return {
        "type": "ImagingStudy",
        "identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study_uid}"},
    }


def _device(model: ModelRef) -> dict[str, Any]:
    return {"display": f"AI model {model.name} {model.version}"}


def _meta(model: ModelRef) -> dict[str, Any]:
    tags = [
        {"system": TAG_SYSTEM, "code": "ai-generated", "display": "AI-generated result"},
        {
            "system": TAG_SYSTEM,
            "code": f"model:{_token_safe(model.name)}:{_token_safe(model.version)}",
        },
    ]
    if not model.approved:
        tags.append(
            {
                "system": TAG_SYSTEM,
                "code": "not-for-clinical-use",
                "display": "Model version not approved for clinical use",
            }
        )
    return {"tag": tags}


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [{"system": system, "code": code, "display": display}]}
    if text:
        concept["text"] = text
    return concept


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": round(float(value), 4), "unit": unit, "system": UCUM, "code": unit}


def _kind(findings: Sequence[Finding], finding_kind: str | None) -> str:
    kinds = {f.kind for f in findings}
    kind = finding_kind or (next(iter(kinds)) if len(kinds) == 1 else "hemorrhage")
    for k in kinds | {kind}:
        if k not in FINDING_CODES:
            raise InvalidInputError(f"finding kind {k!r} is not one of {sorted(FINDING_CODES)}")
    return kind


def _location_text(finding: Finding) -> str | None:
    loc = finding.location
    words = [w for w in (loc.side, loc.region, loc.compartment) if w]
    return " ".join(words) or None


def _finding_observation(
    finding: Finding,
    index: int,
    *,
    study_uid: str,
    model: ModelRef,
    subject: dict[str, Any],
    issued: str,
    interpretation: str,
) -> dict[str, Any]:
    code, display = FINDING_CODES[finding.kind]
    label = f"{finding.subtype} {finding.kind}" if finding.subtype else finding.kind
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": _meta(model),
        "identifier": [result_identifier(study_uid, model, f"finding-{index}")],
        "status": "preliminary",
        "category": [_concept(OBSERVATION_CATEGORY, "imaging", "Imaging")],
        "code": _concept(SNOMED, code, display, text=f"{label} (AI)"),
        "subject": subject,
        "issued": issued,
        "device": _device(model),
        "derivedFrom": [_imaging_study(study_uid)],
        "interpretation": [
            _concept(V3_INTERPRETATION, interpretation, INTERPRETATIONS[interpretation])
        ],
        "component": [
            {
                "code": {"text": "AI probability"},
                "valueQuantity": _quantity(finding.probability, "1"),
            }
        ],
    }
    if finding.volume_ml is not None:
        observation["valueQuantity"] = _quantity(finding.volume_ml, "mL")
    else:
        observation["valueCodeableConcept"] = _concept(SNOMED, *PRESENT)
    if finding.diameter_mm is not None:
        observation["component"].append(
            {
                "code": _concept(SNOMED, "81827009", "Diameter"),
                "valueQuantity": _quantity(finding.diameter_mm, "mm"),
            }
        )
    location = _location_text(finding)
    if location:
        observation["bodySite"] = {"text": location}
    return observation


def _absent_observation(
    kind: str, *, study_uid: str, model: ModelRef, subject: dict[str, Any], issued: str
) -> dict[str, Any]:
    code, display = FINDING_CODES[kind]
    return {
        "resourceType": "Observation",
        "meta": _meta(model),
        "identifier": [result_identifier(study_uid, model, "no-finding")],
        "status": "preliminary",
        "category": [_concept(OBSERVATION_CATEGORY, "imaging", "Imaging")],
        "code": _concept(SNOMED, code, display, text=f"{FINDING_TEXT[kind]} (AI)"),
        "subject": subject,
        "issued": issued,
        "device": _device(model),
        "derivedFrom": [_imaging_study(study_uid)],
        "valueCodeableConcept": _concept(
            SNOMED, *ABSENT, text=f"No {FINDING_TEXT[kind]} detected (AI)"
        ),
        "interpretation": [_concept(V3_INTERPRETATION, "N", INTERPRETATIONS["N"])],
    }


def build_result_bundle(
    *,
    study_uid: str,
    accession_number: str,
    patient_id: str,
    findings: Sequence[Finding],
    model: ModelRef,
    priority: Priority,
    report_text: str,
    issued: datetime,
    ehr_patient_reference: str | None = None,
    patient_id_system: str | None = None,
    finding_kind: str | None = None,
    extra_resources: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Transaction Bundle with the AI result for the EHR (FHIR R4 JSON).

    Contents: a DiagnosticReport (status preliminary, category RAD, LOINC CT head/chest,
    conclusion = ``report_text``, the study by ``urn:dicom:uid`` identifier, accession as an
    ACSN identifier); one Observation per finding (volume in mL, interpretation AA when the
    priority is critical, else A), or one Observation "absent" (interpretation N) for a normal
    study, none for a study not analysed; a Flag only when the priority is critical; then
    ``extra_resources`` (each with an identifier for its conditional create). ``issued`` must
    be time-zone aware. Raises InvalidInputError on invalid input.
    """
    kind = _kind(findings, finding_kind)
    if priority == Priority.NOT_ANALYSED and findings:
        raise InvalidInputError("a study that was not analysed cannot have findings")
    issued_at = _instant(issued, "issued")
    subject = _subject(patient_id, ehr_patient_reference, patient_id_system)
    interpretation = "AA" if priority == Priority.CRITICAL else "A"
    observations: list[dict[str, Any]] = [
        _finding_observation(
            finding,
            index,
            study_uid=study_uid,
            model=model,
            subject=subject,
            issued=issued_at,
            interpretation=interpretation,
        )
        for index, finding in enumerate(findings, start=1)
    ]
    if not findings and priority != Priority.NOT_ANALYSED:
        observations.append(
            _absent_observation(
                kind, study_uid=study_uid, model=model, subject=subject, issued=issued_at
            )
        )
    report_code, report_display = REPORT_CODES[kind]
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "meta": _meta(model),
        "identifier": [
            result_identifier(study_uid, model, "report"),
            {
                "type": _concept(V2_0203, "ACSN", "Accession ID"),
                "value": accession_number,
            },
        ],
        "status": "preliminary",
        "category": [_concept(V2_0074, "RAD", "Radiology")],
        "code": _concept(LOINC, report_code, report_display, text=f"{report_display} AI result"),
        "subject": subject,
        "issued": issued_at,
        "imagingStudy": [_imaging_study(study_uid)],
        "result": [{"reference": full_url_for(o["identifier"][0])} for o in observations],
        "conclusion": report_text,
    }
    if not report["result"]:
        del report["result"]
    resources = [report, *observations]
    if priority == Priority.CRITICAL:
        resources.append(
            {
                "resourceType": "Flag",
                "meta": _meta(model),
                "identifier": [result_identifier(study_uid, model, "critical-flag")],
                "status": "active",
                "category": [_concept(FLAG_CATEGORY, "clinical", "Clinical")],
                "code": {"text": f"Critical finding: {FINDING_TEXT[kind]} (AI)"},
                "subject": subject,
                "period": {"start": issued_at},
                "author": _device(model),
            }
        )
    # e.g. the follow-up pathway's coordinator Task: one transaction, one delivery.
    resources.extend(extra_resources)
    return transaction_bundle(resources)


def build_task(
    *,
    study_uid: str,
    patient_id: str,
    model: ModelRef,
    description: str,
    due: date,
    authored_on: datetime,
    task_key: str = "follow-up",
    priority: str = "routine",
    ehr_patient_reference: str | None = None,
    patient_id_system: str | None = None,
) -> dict[str, Any]:
    """A coordinator Task (status requested, intent order) due by ``due`` (FHIR R4 JSON).

    ``task_key`` names the task within the study and model version, so that re-sending the
    same task is recognised (wrap it with `transaction_bundle` for a conditional create).
    ``priority`` is a FHIR request priority: routine | urgent | asap | stat.
    """
    if priority not in {"routine", "urgent", "asap", "stat"}:
        raise InvalidInputError(f"task priority {priority!r} is not a FHIR request priority")
    task = {
        "resourceType": "Task",
        "meta": _meta(model),
        "identifier": [result_identifier(study_uid, model, f"task-{task_key}")],
        "status": "requested",
        "intent": "order",
        "priority": priority,
        "description": description,
        "focus": _imaging_study(study_uid),
        "for": _subject(patient_id, ehr_patient_reference, patient_id_system),
        "authoredOn": _instant(authored_on, "authored_on"),
        "requester": _device(model),
        "restriction": {"period": {"end": due.isoformat()}},
    }
    return validate_resource(task)
