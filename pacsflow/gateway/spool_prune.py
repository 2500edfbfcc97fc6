"""Removing spooled studies past their retention (rule: `pacsflow.gateway.spool_retention`).

The gateway keeps receiving while a prune runs, so a study is never deleted in place:

1. the database and the files say it may go;
2. its folder is renamed into `<spool>/.prune/`. This is atomic: a new instance of the study
   then makes a fresh folder, or fails and is sent again;
3. the database and the renamed files are checked again. If anything changed in between
   (a late instance, a new trigger), the folder is put back;
4. the study's row gets `spool_pruned_at`: an instance arriving later starts a new,
   partial folder, which readers must not take for the study (they go to the archive);
5. it is renamed to `*.delete` and deleted.

Only one prune runs at a time (a lock file). A prune cut short leaves folders in `.prune/`:
the next one finishes those of step 5 and puts back those of steps 2-4.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import OutboxEntry, PathwayRun, ReceivedStudy
from pacsflow.errors import PacsflowError, TransientError
from pacsflow.gateway.spool import is_valid_uid
from pacsflow.gateway.spool_retention import (
    Contents,
    Decision,
    Outcome,
    StudyRecord,
    Trigger,
    cutoff,
    decide,
    hold_reason,
)
from pacsflow.gateway.storage_commitment import prune_records
from pacsflow.governance.audit import AuditLog

log = logging.getLogger(__name__)

TRASH = ".prune"  # not a UID, so the assembler and the index never take it for a study
_DELETE = ".delete"
_CHUNK = 500  # UIDs per IN (...): below SQLite's parameter limit


class PruneBusyError(TransientError):
    """Another prune of the same spool is running."""


@dataclass(frozen=True)
class Pruned:
    study_uid: str
    size_bytes: int
    orphan: bool


@dataclass
class PruneReport:
    retention_days: float
    dry_run: bool
    removed: list[Pruned] = field(default_factory=list)  # or, with dry_run, would be
    orphans_kept: list[Pruned] = field(default_factory=list)  # without include_orphans
    kept: Counter[str] = field(default_factory=Counter)  # reason -> studies

    @property
    def freed_bytes(self) -> int:
        return sum(p.size_bytes for p in self.removed)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone


def study_uids(spool_root: Path) -> list[str]:
    """Study folders of the spool, i.e. real folders with a UID for a name."""
    if not spool_root.is_dir():
        return []
    return sorted(
        e.name
        for e in os.scandir(spool_root)
        if e.is_dir(follow_symlinks=False) and is_valid_uid(e.name)
    )


def load_records(sessions: sessionmaker[Session], uids: Sequence[str]) -> dict[str, StudyRecord]:
    """The retention facts of each study that has a `received_studies` row."""
    records: dict[str, StudyRecord] = {}
    with sessions() as session:
        for start in range(0, len(uids), _CHUNK):
            chunk = list(uids[start : start + _CHUNK])
            triggers: dict[str, list[Trigger]] = {}
            for row in session.scalars(select(OutboxEntry).where(OutboxEntry.study_uid.in_(chunk))):
                moments = [row.created_at, row.next_attempt_at, row.dispatched_at]
                triggers.setdefault(row.study_uid or "", []).append(
                    Trigger(
                        pathway=row.pathway,
                        state=row.state,
                        last_activity=max(_aware(m) for m in moments if m is not None),
                        flow_run_id=row.flow_run_id,
                        dispatched_at=_aware(row.dispatched_at) if row.dispatched_at else None,
                    )
                )
            outcomes: dict[str, list[Outcome]] = {}
            runs = session.execute(
                select(
                    PathwayRun.study_uid,
                    PathwayRun.pathway,
                    PathwayRun.finished_at,
                    PathwayRun.flow_run_id,
                ).where(PathwayRun.study_uid.in_(chunk))
            )
            for uid, pathway, finished_at, flow_run_id in runs:
                outcomes.setdefault(uid, []).append(
                    Outcome(pathway, _aware(finished_at), flow_run_id)
                )
            studies = session.execute(
                select(ReceivedStudy.study_uid, ReceivedStudy.state, ReceivedStudy.closed_at).where(
                    ReceivedStudy.study_uid.in_(chunk)
                )
            )
            for uid, state, closed_at in studies:
                records[uid] = StudyRecord(
                    state=state,
                    closed_at=_aware(closed_at) if closed_at else None,
                    triggers=tuple(triggers.get(uid, ())),
                    outcomes=tuple(outcomes.get(uid, ())),
                )
    return records


def measure(folder: Path) -> Contents:
    """Bytes and newest modification time of everything below the folder (not the folder
    itself: renaming it may touch its own times)."""
    size, newest = 0, None

    def fail(error: OSError) -> None:  # an unreadable folder must not look old
        raise error

    for path, dirs, files in os.walk(folder, onerror=fail):
        for name in dirs:
            newest = max(newest or 0.0, os.lstat(os.path.join(path, name)).st_mtime)
        for name in files:
            st = os.lstat(os.path.join(path, name))
            newest = max(newest or 0.0, st.st_mtime)
            size += st.st_size
    return Contents(size, datetime.fromtimestamp(newest, UTC) if newest is not None else None)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise PruneBusyError(f"another prune of {lock_path.parent.parent} is running") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _put_back(held: Path, study_dir: Path) -> None:
    """Return a folder taken into the trash to its place, merging with one made meanwhile
    (an instance already there again wins: same SOP Instance UID, same object)."""
    try:
        os.rename(held, study_dir)
        return
    except OSError:  # the study folder exists again
        pass
    for path, _dirs, files in os.walk(held):
        for name in files:
            source = Path(path) / name
            target = study_dir / source.relative_to(held)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.rename(source, target)
    shutil.rmtree(held, ignore_errors=True)


def _finish_interrupted(spool_root: Path) -> None:
    trash = spool_root / TRASH
    if not trash.is_dir():
        return
    for entry in os.scandir(trash):
        if not entry.is_dir(follow_symlinks=False):
            continue
        if entry.name.endswith(_DELETE):  # passed every check: finish the deletion
            log.warning("spool prune: finishing the removal of %s", entry.name)
            shutil.rmtree(entry.path, ignore_errors=True)
            continue
        study_uid = entry.name.split("~", 1)[0]
        if is_valid_uid(study_uid):
            log.warning(
                "spool prune: putting back study %s left by an interrupted prune", study_uid
            )
            _put_back(Path(entry.path), spool_root / study_uid)


def _remove(
    spool_root: Path, sessions: sessionmaker[Session], decision: Decision, before: datetime
) -> Contents | Decision:
    """Take the folder away if it still may go: its contents, or the decision to keep it."""
    study_dir = spool_root / decision.study_uid
    held = spool_root / TRASH / f"{decision.study_uid}~{uuid.uuid4().hex[:8]}"
    try:
        os.rename(study_dir, held)
    except FileNotFoundError:
        return Decision(decision.study_uid, "keep", "gone meanwhile")
    try:
        contents = measure(held)
        record = load_records(sessions, [decision.study_uid]).get(decision.study_uid)
        again = decide(decision.study_uid, record, contents, before)
    except BaseException:  # cannot check again: the study goes back where it was
        _put_back(held, study_dir)
        raise
    if study_dir.exists():  # an instance arrived since the rename: the study is active
        _put_back(held, study_dir)
        return Decision(decision.study_uid, "keep", "recent files")
    if again.action != decision.action:
        _put_back(held, study_dir)
        return again
    if record is not None:
        try:
            _mark_pruned(sessions, decision.study_uid)
        except BaseException:  # unmarked, a late instance would pass for the study: keep it
            _put_back(held, study_dir)
            raise
    doomed = held.with_name(held.name + _DELETE)
    os.rename(held, doomed)
    shutil.rmtree(doomed, ignore_errors=True)  # what is left, the next prune deletes
    return contents


def _mark_pruned(sessions: sessionmaker[Session], study_uid: str) -> None:
    # An UPDATE of this column alone: the assembler may be rewriting the row's other
    # columns for a late instance at this very moment.
    with sessions() as session:
        session.execute(
            update(ReceivedStudy)
            .where(ReceivedStudy.study_uid == study_uid)
            .values(spool_pruned_at=datetime.now(UTC))
        )
        session.commit()


def prune_spool(
    spool_root: Path,
    sessions: sessionmaker[Session],
    *,
    retention_days: float,
    dry_run: bool = False,
    include_orphans: bool = False,
    audit: AuditLog | None = None,
    actor: str = "pacsflow",
    now: datetime | None = None,
) -> PruneReport:
    """Remove (or, with dry_run, only list) the study folders past their retention.

    Quarantine is a separate folder and is never touched."""
    report = PruneReport(retention_days, dry_run)
    before = cutoff(now or datetime.now(UTC), retention_days)
    if before is None or not spool_root.is_dir():
        return report
    # A dry run writes nothing, so it neither takes the lock nor tidies up.
    with nullcontext() if dry_run else _exclusive(spool_root / TRASH / "lock"):
        if not dry_run:
            _finish_interrupted(spool_root)
        uids = study_uids(spool_root)
        records = load_records(sessions, uids)
        for uid in uids:
            record = records.get(uid)
            reason = hold_reason(record, before) if record is not None else None
            if reason is not None:  # decided by the database alone: no need to walk the files
                report.kept[reason] += 1
                continue
            try:
                contents = measure(spool_root / uid)
            except FileNotFoundError:  # gone meanwhile
                continue
            except OSError as exc:  # one unreadable folder must not stop the others
                log.error("spool prune: cannot read study %s: %s", uid, exc)
                report.kept["unreadable"] += 1
                continue
            decision = decide(uid, record, contents, before)
            orphan = decision.action == "orphan"
            if decision.action == "keep":
                report.kept[decision.reason] += 1
            elif orphan and not include_orphans:
                report.orphans_kept.append(Pruned(uid, contents.size_bytes, orphan=True))
            elif dry_run:
                report.removed.append(Pruned(uid, contents.size_bytes, orphan))
            else:
                try:
                    result = _remove(spool_root, sessions, decision, before)
                except OSError as exc:  # put back by _remove where it got that far
                    log.error("spool prune: cannot remove study %s: %s", uid, exc)
                    report.kept["unreadable"] += 1
                    continue
                except SQLAlchemyError as exc:  # put back by _remove: the next round retries
                    log.error("spool prune: study %s kept, database error: %s", uid, exc)
                    report.kept["database error"] += 1
                    continue
                if isinstance(result, Decision):
                    report.kept[result.reason] += 1
                    continue
                report.removed.append(Pruned(uid, result.size_bytes, orphan))
                log.info("spool prune: removed study %s (%d bytes)", uid, result.size_bytes)
                if audit is not None:
                    _audit(audit, actor, uid, result.size_bytes, orphan, retention_days)
    return report


def _audit(
    audit: AuditLog, actor: str, uid: str, size: int, orphan: bool, retention_days: float
) -> None:
    detail = {"bytes": size, "orphan": orphan, "retention_days": retention_days}
    try:
        audit.append(actor, "spool.pruned", uid, detail)
    except PacsflowError as exc:  # the folder is gone already; the log still says so
        log.error("spool prune: audit entry for study %s not written: %s", uid, exc)


class SpoolJanitor:
    """The gateway's background prune: every `interval_s`, the first a minute after start.
    With `commitment_records`, the records of finished Storage Commitment transactions go
    after the same retention."""

    def __init__(
        self,
        spool_root: Path,
        sessions: sessionmaker[Session],
        retention_days: float,
        *,
        interval_s: float = 3600.0,
        first_after_s: float = 60.0,
        commitment_records: Path | None = None,
    ) -> None:
        self.spool_root = spool_root
        self.commitment_records = commitment_records
        self.sessions = sessions
        self.retention_days = retention_days
        self.interval_s = interval_s
        self.first_after_s = first_after_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> PruneReport | None:
        try:
            self._prune_commitment_records()
        except Exception:  # never stop the spool prune, nor the janitor's thread
            log.exception("storage commitment records not pruned")
        try:
            report = prune_spool(
                self.spool_root,
                self.sessions,
                retention_days=self.retention_days,
                audit=AuditLog(self.sessions),
            )
        except PruneBusyError:
            log.info("spool prune skipped: another prune is running")
            return None
        except Exception:  # the gateway keeps receiving; the next round tries again
            log.exception("spool prune failed")
            return None
        if report.removed or report.orphans_kept:
            log.info(
                "spool prune: removed %d studies (%d bytes); %d orphan folders left",
                len(report.removed),
                report.freed_bytes,
                len(report.orphans_kept),
            )
        return report

    def _prune_commitment_records(self) -> None:
        before = cutoff(datetime.now(UTC), self.retention_days)
        if self.commitment_records is None or before is None:
            return
        removed = prune_records(self.commitment_records, before)
        if removed:
            log.info("removed %d finished storage commitment records", removed)

    def start(self) -> None:
        def loop() -> None:
            wait = self.first_after_s
            while not self._stop.wait(wait):
                self.run_once()
                wait = self.interval_s

        self._thread = threading.Thread(target=loop, name="spool-janitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
