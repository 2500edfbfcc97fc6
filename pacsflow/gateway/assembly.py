"""Study assembly: DICOM has no "study complete" signal, so the gateway decides.

A study closes on MPPS COMPLETED, on an HL7 order saying the exam is complete, or after a
per-modality stable window without new instances. Closing routes the study and writes its
outbox rows in the same transaction as the state change, so a closed study always has its
triggers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import ReceivedStudy
from pacsflow.gateway.outbox import Outbox, idempotency_key

log = logging.getLogger(__name__)

# Routing: header datasets of a study (one per series) + calling AE -> (pathways, attributes)
Router = Callable[[list[pydicom.Dataset], str | None], tuple[list[str], dict[str, Any]]]


@dataclass
class _OpenStudy:
    study_uid: str
    modality: str
    calling_aet: str | None
    last_received: float  # monotonic clock
    last_received_at: datetime
    instance_count: int = 0
    headers_by_series: dict[str, pydicom.Dataset] = field(default_factory=dict)
    grace_s: float | None = None  # set by MPPS COMPLETED: close sooner


class StudyAssembler:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        router: Router,
        *,
        stable_window_s: Mapping[str, float],
        on_closed: Callable[[str], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.router = router
        self.outbox = Outbox(sessions)
        self.stable_window_s = dict(stable_window_s)
        self.on_closed = on_closed
        self._open: dict[str, _OpenStudy] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def window_for(self, modality: str) -> float:
        return float(self.stable_window_s.get(modality, self.stable_window_s.get("default", 5.0)))

    def recover(self, spool_root: Path | None = None) -> int:
        """After a restart: studies still open in the database restart their window now, and
        studies on the spool that the database never heard of (a crash between the fsync and
        the row) are reopened from their headers."""
        now = time.monotonic()
        with self.sessions() as session:
            rows = {r.study_uid: r for r in session.scalars(select(ReceivedStudy))}
        for row in rows.values():
            if row.state != "open":
                continue
            headers = {
                k: pydicom.Dataset.from_json(v)
                for k, v in (row.attributes or {}).get("headers", {}).items()
            }
            last = row.last_received_at or datetime.now(UTC)
            if last.tzinfo is None:
                last = last.replace(tzinfo=UTC)
            self._open[row.study_uid] = _OpenStudy(
                row.study_uid,
                row.modality or "",
                row.calling_aet,
                now,
                last,
                row.instance_count,
                headers,
            )
        if spool_root is not None and spool_root.is_dir():
            for study_dir in spool_root.iterdir():
                row = rows.get(study_dir.name)
                known = set((row.attributes or {}).get("headers", {})) if row else set()
                if row is not None and row.state == "closed":
                    continue
                for series_dir in study_dir.iterdir():
                    if series_dir.name in known or not series_dir.is_dir():
                        continue
                    first = next(iter(sorted(series_dir.glob("*.dcm"))), None)
                    if first is None:
                        continue
                    try:
                        header = pydicom.dcmread(first, stop_before_pixels=True)
                        header.to_json_dict()
                        self.instance_received(header, None)
                    except Exception as exc:  # one bad file must not stop the gateway
                        log.error("cannot recover %s: %s", first, exc)
                        continue
                    log.warning(
                        "recovered spooled series %s of study %s", series_dir.name, study_dir.name
                    )
        return len(self._open)

    def instance_received(
        self, header: pydicom.Dataset, calling_aet: str | None, *, duplicate: bool = False
    ) -> None:
        """Record an instance already spooled. Header = the dataset without pixel data.

        A duplicate (already on the spool) still counts as activity of an open study, and
        reopens tracking of a study the database lost; it never reopens a closed study."""
        study_uid = str(header.StudyInstanceUID)
        series_uid = str(header.SeriesInstanceUID)
        now = datetime.now(UTC)
        if duplicate and study_uid not in self._open:
            with self.sessions() as session:
                row = session.get(ReceivedStudy, study_uid)
                if row is not None and row.state == "closed":
                    return
        with self._lock:
            study = self._open.get(study_uid)
            new_series = study is None or series_uid not in study.headers_by_series
            if study is None:
                study = _OpenStudy(
                    study_uid, str(header.get("Modality", "")), calling_aet, 0.0, now
                )
                self._open[study_uid] = study
            study.last_received = time.monotonic()
            study.last_received_at = now
            study.instance_count += 0 if duplicate else 1
            if new_series:
                study.headers_by_series[series_uid] = header
        if new_series:
            self._persist_open(study, header)

    def _persist_open(self, study: _OpenStudy, header: pydicom.Dataset) -> None:
        """Keep open studies and one header per series in the database (restart recovery)."""
        headers = {k: v.to_json_dict() for k, v in list(study.headers_by_series.items())}
        with self.sessions() as session:
            row = session.get(ReceivedStudy, study.study_uid)
            if row is None:
                row = ReceivedStudy(
                    study_uid=study.study_uid,
                    patient_id=str(header.get("PatientID", "")) or None,
                    accession_number=str(header.get("AccessionNumber", "")) or None,
                    modality=study.modality,
                    calling_aet=study.calling_aet,
                    first_received_at=study.last_received_at,
                )
                session.add(row)
            row.state = "open"
            row.last_received_at = study.last_received_at
            row.instance_count = study.instance_count
            stored = (row.attributes or {}).get("headers", {})
            row.attributes = {**(row.attributes or {}), "headers": {**stored, **headers}}
            session.commit()

    def due(self) -> list[tuple[str, str]]:
        """(study, why) for every open study whose window has passed."""
        now = time.monotonic()
        with self._lock:
            return [
                (uid, "mpps" if s.grace_s is not None else "stable-window")
                for uid, s in self._open.items()
                if now - s.last_received
                >= (s.grace_s if s.grace_s is not None else self.window_for(s.modality))
            ]

    def close(self, study_uid: str, by: str) -> list[str]:
        """Close a study, route it and enqueue its pathways. Returns the pathways.

        The study leaves the open set only once the close is committed: a failure (router,
        database busy) leaves it open, and the next tick tries again."""
        with self._lock:
            study = self._open.get(study_uid)
        with self.sessions() as session:
            row = session.get(ReceivedStudy, study_uid)
            if row is None and study is None:
                return []
            stored = (row.attributes or {}).get("headers", {}) if row is not None else {}
            headers_by_series = {k: pydicom.Dataset.from_json(v) for k, v in stored.items()}
            if study is not None:
                headers_by_series.update(study.headers_by_series)
            headers = list(headers_by_series.values())
            calling = study.calling_aet if study is not None else row.calling_aet  # type: ignore[union-attr]
            pathways, attributes = self.router(headers, calling)
            if row is None:
                h = headers[0]
                row = ReceivedStudy(
                    study_uid=study_uid,
                    patient_id=str(h.get("PatientID", "")) or None,
                    accession_number=str(h.get("AccessionNumber", "")) or None,
                    modality=str(h.get("Modality", "")),
                    calling_aet=calling,
                )
                session.add(row)
            if study is not None:
                row.instance_count = study.instance_count
                row.last_received_at = study.last_received_at
            row.state = "closed"
            row.closed_at = datetime.now(UTC)
            row.closed_by = by
            row.attributes = {**(row.attributes or {}), "routing": attributes}
            for pathway in pathways:
                self.outbox.enqueue(
                    source="dicom",
                    pathway=pathway,
                    study_uid=study_uid,
                    parameters=flow_parameters(row),
                    key=idempotency_key(pathway, study_uid),
                    session=session,
                )
            session.commit()
        with self._lock:
            current = self._open.get(study_uid)
            if current is study:  # nothing arrived meanwhile
                self._open.pop(study_uid, None)
        log.info("study %s closed by %s -> %s", study_uid, by, pathways or "no pathway")
        if self.on_closed:
            self.on_closed(study_uid)
        return pathways

    def expedite(self, study_uid: str, grace_s: float = 1.0) -> None:
        """The modality said it is done (MPPS COMPLETED): close after a short grace window
        instead of the full stable window, so instances still in flight are included."""
        with self._lock:
            study = self._open.get(study_uid)
            if study is not None:
                study.grace_s = grace_s

    def close_by_accession(self, accession_number: str, by: str) -> list[str]:
        with self._lock:
            uids = [
                uid
                for uid, s in self._open.items()
                if any(
                    str(h.get("AccessionNumber", "")) == accession_number
                    for h in s.headers_by_series.values()
                )
            ]
        return [p for uid in uids for p in self.close(uid, by)]

    def start(self, tick_s: float = 0.25) -> None:
        def loop() -> None:
            while not self._stop.wait(tick_s):
                for uid, why in self.due():
                    try:
                        self.close(uid, why)
                    except Exception:  # keep assembling other studies; retried next tick
                        log.exception("closing study %s failed", uid)

        self._thread = threading.Thread(target=loop, name="study-assembler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)


def flow_parameters(row: ReceivedStudy) -> dict[str, Any]:
    """What a pathway run needs to start: identifiers and stage times, no patient data."""
    return {
        "study_uid": row.study_uid,
        "accession_number": row.accession_number,
        "received_at": row.last_received_at.isoformat() if row.last_received_at else None,
        "closed_at": row.closed_at.isoformat() if row.closed_at else None,
    }
