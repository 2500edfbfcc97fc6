"""A patient's imaging across specialties, in time order: every study the archive holds (CT,
MR, PET, US/echo, pathology whole-slide, ...) with its series, and for pacsflow's own SRs the
key findings, plus the EHR's diagnostic reports when a FHIR endpoint is configured.

Built from QIDO-RS (studies by PatientID, then series per study); an SR is only retrieved
when it is an AI result of pacsflow (its series description says so), to keep it cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from pydantic import BaseModel, Field

from pacsflow.config import Settings
from pacsflow.dicom.dicomweb import Archive
from pacsflow.dicom.sr import read_sr_summary
from pacsflow.errors import InvalidInputError, PeerUnavailableError

log = logging.getLogger(__name__)

# DICOM modality -> the specialty a reader of the timeline thinks in.
SPECIALTY = {
    "CT": "radiology",
    "MR": "radiology",
    "CR": "radiology",
    "DX": "radiology",
    "MG": "breast imaging",
    "PT": "nuclear medicine",
    "NM": "nuclear medicine",
    "US": "ultrasound / echo",
    "SM": "pathology",
    "XA": "cardiology",
    "IVUS": "cardiology",
    "ECG": "cardiology",
    "OP": "ophthalmology",
    "SR": "reports",
    "SEG": "reports",
}
AI_SERIES_PREFIX = "AI result"


class TimelineSeries(BaseModel):
    series_uid: str
    modality: str
    description: str = ""
    instances: int | None = None


class TimelineEvent(BaseModel):
    date: str  # ISO date, "" when the archive does not know it
    kind: str  # "study" | "ehr-report"
    study_uid: str | None = None
    description: str = ""
    modalities: list[str] = Field(default_factory=list)
    specialties: list[str] = Field(default_factory=list)
    accession_number: str = ""
    series: list[TimelineSeries] = Field(default_factory=list)
    key_findings: list[str] = Field(default_factory=list)
    source: str = "archive"


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _values(item: dict[str, Any], tag: str) -> list[str]:
    return [str(v) for v in item.get(tag, {}).get("Value") or []]


def _iso(dicom_date: str | None) -> str:
    text = (dicom_date or "").strip()
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else ""


def _ai_findings(archive: Archive, study_uid: str, series_uid: str) -> list[str]:
    lines = []
    for ds in archive.retrieve_series(study_uid, series_uid):
        try:
            summary = read_sr_summary(ds)
        except InvalidInputError:
            continue
        who = f"{summary.algorithm_name} {summary.algorithm_version}"
        if summary.finding_present is None:
            lines.append(f"{who}: not analysed")
        elif not summary.findings:
            lines.append(f"{who}: no finding")
        for f in summary.findings:
            size = f"{f.diameter_mm:.1f} mm" if f.diameter_mm else ""
            volume = f"{f.volume_ml:.1f} mL" if f.volume_ml and f.kind == "hemorrhage" else ""
            detail = ", ".join(p for p in (f.finding_type, f.subtype, size, volume) if p)
            lines.append(f"{who}: {detail}")
    return lines


def archive_events(archive: Archive, patient_id: str) -> list[TimelineEvent]:
    events = []
    for study in archive.search_studies(PatientID=patient_id):
        study_uid = str(_value(study, "0020000D"))
        event = TimelineEvent(
            date=_iso(_value(study, "00080020")),
            kind="study",
            study_uid=study_uid,
            description=str(_value(study, "00081030") or ""),
            accession_number=str(_value(study, "00080050") or ""),
        )
        for series in archive.search_series(study_uid):
            modality = str(_value(series, "00080060") or "")
            description = str(_value(series, "0008103E") or "")
            series_uid = str(_value(series, "0020000E"))
            count = _value(series, "00201209")
            event.series.append(
                TimelineSeries(
                    series_uid=series_uid,
                    modality=modality,
                    description=description,
                    instances=int(count) if count is not None else None,
                )
            )
            if modality == "SR" and description.startswith(AI_SERIES_PREFIX):
                event.key_findings += _ai_findings(archive, study_uid, series_uid)
        modalities = sorted({s.modality for s in event.series} or set(_values(study, "00080061")))
        event.modalities = modalities
        event.specialties = sorted({SPECIALTY.get(m, "other") for m in modalities})
        events.append(event)
    return events


def ehr_events(
    fhir_base_url: str, patient_id: str, *, timeout_s: float = 10.0
) -> list[TimelineEvent]:
    """DiagnosticReports the EHR holds for the patient (searched by patient identifier)."""
    try:
        response = httpx.get(
            f"{fhir_base_url.rstrip('/')}/DiagnosticReport",
            params={"subject:identifier": patient_id},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        raise PeerUnavailableError(f"EHR unreachable for the timeline: {exc}") from exc
    if response.status_code >= 400:
        raise PeerUnavailableError(f"EHR answered {response.status_code} to the timeline search")
    events = []
    for entry in response.json().get("entry", []):
        report = entry.get("resource", {})
        issued = str(report.get("effectiveDateTime") or report.get("issued") or "")
        events.append(
            TimelineEvent(
                date=issued[:10],
                kind="ehr-report",
                description=str(report.get("code", {}).get("text", "Diagnostic report")),
                key_findings=[str(report["conclusion"])] if report.get("conclusion") else [],
                source="ehr",
            )
        )
    return events


def patient_timeline(
    archive: Archive,
    patient_id: str,
    *,
    fhir_base_url: str | None = None,
    extra: Sequence[Callable[[str], list[TimelineEvent]]] = (),
) -> list[TimelineEvent]:
    """Every event of the patient, oldest first (undated ones last). The EHR is optional:
    when it is down, the archive's part is still returned and the gap is logged."""
    if not patient_id:
        raise InvalidInputError("a timeline needs a patient ID")
    events = archive_events(archive, patient_id)
    if fhir_base_url:
        try:
            events += ehr_events(fhir_base_url, patient_id)
        except PeerUnavailableError as exc:
            log.warning("timeline of patient %s without EHR reports: %s", patient_id, exc)
    for source in extra:
        events += source(patient_id)
    return sorted(events, key=lambda e: (e.date == "", e.date, e.kind))


def timeline_source(settings: Settings) -> Callable[[str], list[TimelineEvent]]:
    """The web app's patient timeline over the configured archive and EHR."""
    archive = Archive(settings.orthanc)

    def source(patient_id: str) -> list[TimelineEvent]:
        return patient_timeline(
            archive, patient_id, fhir_base_url=settings.ehr.fhir_base_url or None
        )

    return source
