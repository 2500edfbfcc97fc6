"""Reading the audit trail: filtered listing (web, CLI) and export as JSON lines or as DICOM
audit messages (one AuditMessage per line), optionally forwarded over syslog."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import AuditEntry
from pacsflow.governance.atna import audit_message_xml
from pacsflow.governance.syslog import SyslogSender, rfc5424_message

ExportFormat = Literal["jsonl", "atna"]


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def _record(row: AuditEntry) -> AuditRecord:
    at = row.at if row.at.tzinfo is not None else row.at.replace(tzinfo=UTC)
    return AuditRecord(
        id=row.id,
        at=at,
        actor=row.actor,
        action=row.action,
        subject=row.subject,
        detail=dict(row.detail or {}),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None  # exact, or a prefix ending in "." ("result.")
    actor: str | None = None
    subject: str | None = None
    since: datetime | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.action:
            if self.action.endswith("."):
                query = query.where(AuditEntry.action.startswith(self.action, autoescape=True))
            else:
                query = query.where(AuditEntry.action == self.action)
        if self.actor:
            query = query.where(AuditEntry.actor == self.actor)
        if self.subject:
            query = query.where(AuditEntry.subject == self.subject)
        if self.since:
            query = query.where(AuditEntry.at >= self.since)
        return query


def read_entries(
    sessions: sessionmaker[Session],
    where: AuditFilter | None = None,
    *,
    limit: int | None = None,
    offset: int = 0,
    newest_first: bool = False,
) -> list[AuditRecord]:
    where = where or AuditFilter()
    order = AuditEntry.id.desc() if newest_first else AuditEntry.id.asc()
    query = where.apply(select(AuditEntry)).order_by(order).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    with sessions() as session:
        return [_record(r) for r in session.scalars(query)]


def count_entries(sessions: sessionmaker[Session], where: AuditFilter | None = None) -> int:
    query = (where or AuditFilter()).apply(select(func.count()).select_from(AuditEntry))
    with sessions() as session:
        return int(session.scalar(query) or 0)


def export_lines(records: Iterable[AuditRecord], fmt: ExportFormat) -> Iterable[str]:
    for record in records:
        if fmt == "jsonl":
            yield json.dumps(record.as_json(), sort_keys=True, separators=(",", ":"))
        else:
            yield audit_message_xml(record)


def write_export(records: Iterable[AuditRecord], fmt: ExportFormat, out: Path) -> int:
    """Write one entry per line; returns how many."""
    count = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for line in export_lines(records, fmt):
            fh.write(line + "\n")
            count += 1
    return count


def forward_syslog(records: Iterable[AuditRecord], sender: SyslogSender) -> int:
    """Send each entry as a DICOM audit message in an RFC 5424 syslog message."""
    count = 0
    for record in records:
        sender.send(rfc5424_message(audit_message_xml(record)))
        count += 1
    return count
