"""Where a pathway reads a study from: the gateway's spool when it holds the study,
else the archive over DICOMweb. Plus the order context and the priors: those the gateway
prefetched when the order arrived (pacsflow.gateway.prefetch), else a QIDO query."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pydicom
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings
from pacsflow.db.tables import Order, PrefetchedContext, ReceivedStudy
from pacsflow.dicom.dicomweb import Archive
from pacsflow.domain import OrderContext
from pacsflow.pathways.headers import InstanceHeader


class StudySource:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.archive = Archive(settings.orthanc)

    def _spooled(self, study_uid: str, series_uid: str | None = None) -> list[Path]:
        """The study's (or series') files on the spool; none where the spool copy was pruned
        once, since what arrived after the prune is only part of the study."""
        root = self.settings.spool_dir / study_uid
        if series_uid:
            root = root / series_uid
        try:
            files = sorted(root.rglob("*.dcm")) if root.is_dir() else []
        except FileNotFoundError:  # pruned while being listed
            return []
        # Asked after listing: files listed before a prune's mark are gone when read, and
        # the readers below then go to the archive.
        return [] if files and self._pruned_once(study_uid) else files

    def _pruned_once(self, study_uid: str) -> bool:
        with self.sessions() as session:
            pruned = session.scalar(
                select(ReceivedStudy.spool_pruned_at).where(ReceivedStudy.study_uid == study_uid)
            )
            return pruned is not None

    def headers(self, study_uid: str) -> list[InstanceHeader]:
        files = self._spooled(study_uid)
        if files:
            try:
                return [
                    InstanceHeader.from_dataset(pydicom.dcmread(f, stop_before_pixels=True))
                    for f in files
                ]
            except FileNotFoundError:  # the spool copy was pruned while being read
                pass
        return [
            InstanceHeader.from_dicom_json(item) for item in self.archive.study_metadata(study_uid)
        ]

    def series_datasets(self, study_uid: str, series_uid: str) -> tuple[list[pydicom.Dataset], str]:
        """All instances of a series with pixels, and where they came from."""
        files = self._spooled(study_uid, series_uid)
        if files:
            try:
                return [pydicom.dcmread(f) for f in files], "spool"
            except FileNotFoundError:  # the spool copy was pruned while being read
                pass
        return self.archive.retrieve_series(study_uid, series_uid), "archive"

    def order(self, accession_number: str | None) -> OrderContext | None:
        if not accession_number:
            return None
        with self.sessions() as session:
            row = session.get(Order, accession_number)
            if row is None:
                return None
            known = set(OrderContext.model_fields)
            return OrderContext(**{k: v for k, v in (row.context or {}).items() if k in known})

    def priors(
        self,
        patient_id: str,
        before_date: str,
        modality: str = "CT",
        *,
        accession_number: str | None = None,
    ) -> list[dict[str, str]]:
        """Earlier studies of the patient, newest first, one dict each (study_uid,
        study_date, description, modalities, source: "prefetched" or "queried")."""
        return self.prior_studies(
            patient_id, before_date, modality, accession_number=accession_number
        ).rows()

    def prior_studies(
        self,
        patient_id: str,
        before_date: str,
        modality: str = "CT",
        *,
        accession_number: str | None = None,
    ) -> PriorStudies:
        """The priors prefetched for the order when present and fresh, else a QIDO query
        (exact patient, modality, study date before `before_date`)."""
        if not patient_id or not before_date:
            return PriorStudies(source="none")
        cached = self.prefetched(accession_number, patient_id, modality)
        if cached is not None:
            earlier = [s for s in cached.studies if s.study_date and s.study_date < before_date]
            return cached.model_copy(update={"studies": earlier})
        studies = query_priors(
            self.archive,
            patient_id,
            modality,
            before_date=before_date,
            limit=self.settings.priors.max_studies,
        )
        return PriorStudies(source="queried", fetched_at=datetime.now(UTC), studies=studies)

    def prefetched(
        self, accession_number: str | None, patient_id: str, modality: str
    ) -> PriorStudies | None:
        """What the gateway prefetched for this order, if it is fresh (younger than
        `priors.max_age_s`) and for the same patient and modality; else None."""
        if not accession_number:
            return None
        with self.sessions() as session:
            row = session.get(PrefetchedContext, accession_number)
            if row is None or row.patient_id != patient_id or row.modality != modality:
                return None
            fetched_at = _aware(row.fetched_at)
            age_s = (datetime.now(UTC) - fetched_at).total_seconds()
            if age_s > self.settings.priors.max_age_s:
                return None
            try:
                studies = [PriorStudy.model_validate(p) for p in row.priors or []]
            except ValidationError:  # written by another version: query instead
                return None
        return PriorStudies(source="prefetched", fetched_at=fetched_at, studies=studies)


# --- priors ----------------------------------------------------------------------------------
# Pathways that compare with earlier exams, and the modality of the priors they read.
PRIOR_MODALITY: dict[str, str] = {"stroke_triage": "CT", "nodule_followup": "CT"}


class PriorStudy(BaseModel):
    """One earlier study of the patient, from a study-level QIDO answer (no patient data)."""

    model_config = ConfigDict(frozen=True)

    study_uid: str
    study_date: str = ""  # DA, YYYYMMDD
    description: str = ""
    modalities: list[str] = Field(default_factory=list)  # ModalitiesInStudy (0008,0061)


class PriorStudies(BaseModel):
    """The priors a run reads, and where they came from: prefetched by the gateway when the
    order arrived, or queried from the archive at run time ("none": nothing to look for)."""

    source: Literal["prefetched", "queried", "none"]
    fetched_at: datetime | None = None
    studies: list[PriorStudy] = Field(default_factory=list)

    def rows(self) -> list[dict[str, str]]:
        return [
            {
                "study_uid": s.study_uid,
                "study_date": s.study_date,
                "description": s.description,
                "modalities": "\\".join(s.modalities),  # DICOM multi-value separator
                "source": self.source,
            }
            for s in self.studies
        ]


def _values(item: dict[str, Any], tag: str) -> list[str]:
    element = item.get(tag) or {}
    return [str(v) for v in element.get("Value") or [] if v is not None]


def query_priors(
    archive: Archive,
    patient_id: str,
    modality: str,
    *,
    before_date: str | None = None,
    limit: int | None = None,
) -> list[PriorStudy]:
    """QIDO-RS studies of the patient with the modality, newest first, at most `limit`.

    With `before_date` (YYYYMMDD) only studies dated strictly before it (undated ones are
    left out); without it every study found, as a prefetch does before the new study exists.
    """
    filters: dict[str, Any] = {
        "PatientID": patient_id,
        "ModalitiesInStudy": modality,
        "includefield": "StudyDescription",  # not among the default study-level attributes
    }
    if before_date:
        filters["StudyDate"] = f"-{before_date}"
    found: list[PriorStudy] = []
    for item in archive.search_studies(**filters):
        uid = next(iter(_values(item, "0020000D")), "")
        date = next(iter(_values(item, "00080020")), "")
        if not uid or (before_date and not (date and date < before_date)):
            continue
        found.append(
            PriorStudy(
                study_uid=uid,
                study_date=date,
                description=next(iter(_values(item, "00081030")), ""),
                modalities=sorted(set(_values(item, "00080061"))),
            )
        )
    found.sort(key=lambda s: (s.study_date, s.study_uid), reverse=True)
    return found[:limit] if limit else found


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
