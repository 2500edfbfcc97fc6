"""Where a pathway reads a study from: the gateway's spool when it holds the study,
else the archive over DICOMweb. Plus the order context and the priors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings
from pacsflow.db.tables import Order
from pacsflow.dicom.dicomweb import Archive
from pacsflow.domain import OrderContext
from pacsflow.pathways.headers import InstanceHeader


class StudySource:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.archive = Archive(settings.orthanc)

    def _spooled(self, study_uid: str, series_uid: str | None = None) -> list[Path]:
        root = self.settings.spool_dir / study_uid
        if series_uid:
            root = root / series_uid
        return sorted(root.rglob("*.dcm")) if root.is_dir() else []

    def headers(self, study_uid: str) -> list[InstanceHeader]:
        files = self._spooled(study_uid)
        if files:
            return [
                InstanceHeader.from_dataset(pydicom.dcmread(f, stop_before_pixels=True))
                for f in files
            ]
        return [
            InstanceHeader.from_dicom_json(item) for item in self.archive.study_metadata(study_uid)
        ]

    def series_datasets(self, study_uid: str, series_uid: str) -> tuple[list[pydicom.Dataset], str]:
        """All instances of a series with pixels, and where they came from."""
        files = self._spooled(study_uid, series_uid)
        if files:
            return [pydicom.dcmread(f) for f in files], "spool"
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
        self, patient_id: str, before_date: str, modality: str = "CT"
    ) -> list[dict[str, Any]]:
        """Earlier studies of the patient (QIDO: exact patient, modality, date range)."""
        if not patient_id or not before_date:
            return []
        found = self.archive.search_studies(
            PatientID=patient_id, ModalitiesInStudy=modality, StudyDate=f"-{before_date}"
        )
        out = []
        for item in found:
            h = InstanceHeader.from_dicom_json(item)
            if h.study_date and h.study_date < before_date:
                out.append(
                    {
                        "study_uid": h.study_uid,
                        "study_date": h.study_date,
                        "description": h.study_description,
                    }
                )
        return sorted(out, key=lambda p: p["study_date"], reverse=True)
