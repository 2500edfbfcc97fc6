"""`pacsflow spool prune` on a real spool folder and a real SQLite database: exactly the
settled studies go, a dry run removes nothing, work still to do keeps its study."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.cli import spool_cmd
from pacsflow.config import Settings, load_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import AuditEntry, OutboxEntry, PathwayRun, ReceivedStudy
from pacsflow.gateway import spool_prune
from pacsflow.gateway.spool import Spool
from pacsflow.gateway.spool_prune import (
    TRASH,
    PruneBusyError,
    SpoolJanitor,
    _exclusive,
    prune_spool,
)
from pacsflow.gateway.storage_commitment import prune_records
from pacsflow.governance.audit import AuditLog
from pacsflow.pathways.sources import StudySource

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=10)
RECENT = NOW - timedelta(hours=2)

SETTLED = "1.2.826.0.1.1"  # closed, dispatched, outcome recorded: goes
SETTLED_NO_TRIGGER = "1.2.826.0.1.2"  # closed, routed to no pathway: goes
DEAD = "1.2.826.0.1.3"  # closed, its only trigger dead: goes
PENDING = "1.2.826.0.1.4"  # a trigger not yet dispatched: stays
RUNNING = "1.2.826.0.1.5"  # dispatched, no outcome yet: stays
OPEN = "1.2.826.0.1.6"  # still receiving: stays
FRESH = "1.2.826.0.1.7"  # settled, but closed two hours ago: stays
ORPHAN = "1.2.826.0.1.8"  # no row, old files: listed, removed only on request
YOUNG_ORPHAN = "1.2.826.0.1.9"  # no row, new files: stays even with --include-orphans


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(paths={"var_dir": tmp_path / "var"})


@pytest.fixture
def sessions(settings: Settings) -> sessionmaker[Session]:
    upgrade(settings.database_url)
    return make_sessionmaker(make_engine(settings.database_url))


def spool_study(spool: Spool, uid: str, *, at: datetime, files: int = 3) -> int:
    """Spool `files` instances of one series, dated `at`; returns their bytes."""
    total = 0
    for i in range(files):
        data = f"instance {i} of {uid}".encode() * (i + int(uid.rsplit(".", 1)[1]))
        spool.store(uid, f"{uid}.1", f"{uid}.1.{i}", data)
        total += len(data)
    stamp = at.timestamp()
    for path, dirs, names in os.walk(spool.study_dir(uid)):
        for name in dirs + names:
            os.utime(os.path.join(path, name), (stamp, stamp))
    return total


def add_study(
    sessions: sessionmaker[Session],
    uid: str,
    *,
    state: str = "closed",
    closed_at: datetime | None = OLD,
    trigger: str | None = "dispatched",
    outcome: bool = True,
    at: datetime = OLD,
) -> None:
    with sessions() as session:
        session.add(
            ReceivedStudy(
                study_uid=uid,
                state=state,
                closed_at=closed_at if state == "closed" else None,
                first_received_at=at,
                last_received_at=at,
            )
        )
        if trigger is not None:
            session.add(
                OutboxEntry(
                    idempotency_key=f"stroke_triage:{uid}:champion",
                    source="dicom",
                    pathway="stroke_triage",
                    study_uid=uid,
                    parameters={"study_uid": uid},
                    state=trigger,
                    created_at=at,
                    next_attempt_at=at,
                    dispatched_at=at if trigger == "dispatched" else None,
                    flow_run_id=f"run-{uid}" if trigger == "dispatched" else None,
                )
            )
        if outcome:
            session.add(
                PathwayRun(
                    study_uid=uid,
                    pathway="stroke_triage",
                    model_version="3",
                    outcome="failed",  # an explicit end like any other
                    flow_run_id=f"run-{uid}",
                    finished_at=at + timedelta(minutes=1),
                )
            )
        session.commit()


@pytest.fixture
def world(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[dict[str, int]]:
    """Every kind of study on the spool, with its bytes; and one quarantined object."""
    spool = Spool(settings.spool_dir, settings.quarantine_dir)
    sizes = {uid: spool_study(spool, uid, at=OLD) for uid in (SETTLED, SETTLED_NO_TRIGGER, DEAD)}
    sizes |= {uid: spool_study(spool, uid, at=OLD) for uid in (PENDING, RUNNING, OPEN, ORPHAN)}
    sizes |= {uid: spool_study(spool, uid, at=RECENT) for uid in (FRESH, YOUNG_ORPHAN)}
    add_study(sessions, SETTLED)
    add_study(sessions, SETTLED_NO_TRIGGER, trigger=None, outcome=False)
    add_study(sessions, DEAD, trigger="dead", outcome=False)
    add_study(sessions, PENDING, trigger="pending", outcome=False)
    add_study(sessions, RUNNING, outcome=False)
    add_study(sessions, OPEN, state="open", trigger=None, outcome=False)
    add_study(sessions, FRESH, closed_at=RECENT, at=RECENT)
    spool.quarantine(b"refused", "test", {"calling_aet": "CT1"})
    os.utime(next(settings.quarantine_dir.iterdir()), (OLD.timestamp(), OLD.timestamp()))
    yield sizes


def on_spool(settings: Settings) -> set[str]:
    return {p.name for p in settings.spool_dir.iterdir() if p.name != TRASH}


GOES = {SETTLED, SETTLED_NO_TRIGGER, DEAD}
EVERYTHING = GOES | {PENDING, RUNNING, OPEN, FRESH, ORPHAN, YOUNG_ORPHAN}


def test_dry_run_lists_exactly_the_settled_studies_and_removes_nothing(
    settings: Settings, sessions: sessionmaker[Session], world: dict[str, int]
) -> None:
    report = prune_spool(settings.spool_dir, sessions, retention_days=7, dry_run=True)
    assert {p.study_uid for p in report.removed} == GOES
    assert report.freed_bytes == sum(world[uid] for uid in GOES)
    assert [p.study_uid for p in report.orphans_kept] == [ORPHAN]
    assert report.kept == {
        "trigger pending": 1,
        "awaiting outcome": 1,
        "open": 1,
        "within retention": 1,
        "recent files": 1,
    }
    assert on_spool(settings) == EVERYTHING
    assert not (settings.spool_dir / TRASH).exists()  # a dry run writes nothing


def test_prune_removes_the_settled_studies_only_and_audits_each(
    settings: Settings, sessions: sessionmaker[Session], world: dict[str, int]
) -> None:
    audit = AuditLog(sessions)
    report = prune_spool(settings.spool_dir, sessions, retention_days=7, audit=audit, actor="test")
    assert {p.study_uid for p in report.removed} == GOES
    assert report.freed_bytes == sum(world[uid] for uid in GOES)
    assert on_spool(settings) == EVERYTHING - GOES
    assert list((settings.spool_dir / TRASH).iterdir()) == [settings.spool_dir / TRASH / "lock"]
    assert len(list(settings.quarantine_dir.iterdir())) == 2  # .bin and .json, untouched
    with sessions() as session:
        audited = session.scalars(select(AuditEntry).where(AuditEntry.action == "spool.pruned"))
        assert {(e.subject, e.actor, e.detail["bytes"]) for e in audited} == {
            (u, "test", world[u]) for u in GOES
        }
    # The kept studies are whole.
    assert len(list((settings.spool_dir / RUNNING).rglob("*.dcm"))) == 3


def test_orphans_go_only_with_the_flag_and_only_when_old(
    settings: Settings, sessions: sessionmaker[Session], world: dict[str, int]
) -> None:
    prune_spool(settings.spool_dir, sessions, retention_days=7)
    assert ORPHAN in on_spool(settings)
    report = prune_spool(settings.spool_dir, sessions, retention_days=7, include_orphans=True)
    assert [(p.study_uid, p.orphan) for p in report.removed] == [(ORPHAN, True)]
    assert on_spool(settings) == EVERYTHING - GOES - {ORPHAN}


def test_a_shorter_retention_takes_the_fresh_study_too(
    settings: Settings, sessions: sessionmaker[Session], world: dict[str, int]
) -> None:
    report = prune_spool(settings.spool_dir, sessions, retention_days=1 / 24)  # one hour
    assert {p.study_uid for p in report.removed} == GOES | {FRESH}


def test_retention_zero_keeps_everything(
    settings: Settings, sessions: sessionmaker[Session], world: dict[str, int]
) -> None:
    report = prune_spool(settings.spool_dir, sessions, retention_days=0)
    assert not report.removed and not report.kept
    assert on_spool(settings) == EVERYTHING


def test_outcome_recorded_meanwhile_lets_the_running_study_go(
    settings: Settings, sessions: sessionmaker[Session], world: dict[str, int]
) -> None:
    prune_spool(settings.spool_dir, sessions, retention_days=7)
    assert RUNNING in on_spool(settings)
    with sessions() as session:
        session.add(
            PathwayRun(
                study_uid=RUNNING,
                pathway="stroke_triage",
                model_version="3",
                outcome="routine",
                flow_run_id=f"run-{RUNNING}",
                finished_at=OLD + timedelta(hours=1),
            )
        )
        session.commit()
    report = prune_spool(settings.spool_dir, sessions, retention_days=7)
    assert [p.study_uid for p in report.removed] == [RUNNING]


def test_a_study_reopened_between_decision_and_removal_is_put_back(
    settings: Settings,
    sessions: sessionmaker[Session],
    world: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second look (after the folder is taken aside) sees a late instance's reopen."""
    real = spool_prune.load_records
    calls: list[int] = []

    def late_instance(db: sessionmaker[Session], uids: Any) -> Any:
        calls.append(len(uids))
        if len(calls) == 2:  # the re-check of the first study taken aside
            with db() as session:
                row = session.get(ReceivedStudy, uids[0])
                assert row is not None
                row.state = "open"
                session.commit()
        return real(db, uids)

    monkeypatch.setattr(spool_prune, "load_records", late_instance)
    report = prune_spool(settings.spool_dir, sessions, retention_days=7)
    reopened = sorted(GOES)[0]
    assert {p.study_uid for p in report.removed} == GOES - {reopened}
    assert report.kept["open"] == 2
    assert len(list((settings.spool_dir / reopened).rglob("*.dcm"))) == 3
    assert list((settings.spool_dir / TRASH).iterdir()) == [settings.spool_dir / TRASH / "lock"]


def test_a_file_arriving_while_taken_aside_puts_the_study_back(
    settings: Settings,
    sessions: sessionmaker[Session],
    world: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = spool_prune.measure

    def racing_store(folder: Path) -> Any:
        if folder.parent.name == TRASH and folder.name.startswith(SETTLED + "~"):
            (folder / f"{SETTLED}.1" / "late.dcm").write_bytes(b"late")  # mtime: now
        return real(folder)

    monkeypatch.setattr(spool_prune, "measure", racing_store)
    report = prune_spool(settings.spool_dir, sessions, retention_days=7)
    assert SETTLED not in {p.study_uid for p in report.removed}
    assert report.kept["recent files"] == 2  # YOUNG_ORPHAN and the raced study
    assert len(list((settings.spool_dir / SETTLED).rglob("*.dcm"))) == 4


def test_a_study_folder_made_again_while_taken_aside_is_merged_back(
    settings: Settings,
    sessions: sessionmaker[Session],
    world: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A late instance after the rename makes a fresh folder; both halves end up there."""
    real = spool_prune.measure
    spool = Spool(settings.spool_dir, settings.quarantine_dir)

    def racing_store(folder: Path) -> Any:
        if folder.parent.name == TRASH and folder.name.startswith(SETTLED + "~"):
            spool.store(SETTLED, f"{SETTLED}.2", f"{SETTLED}.2.0", b"late")
            spool.store(SETTLED, f"{SETTLED}.1", f"{SETTLED}.1.0", b"resent")  # a duplicate
        return real(folder)

    monkeypatch.setattr(spool_prune, "measure", racing_store)
    report = prune_spool(settings.spool_dir, sessions, retention_days=7)
    assert SETTLED not in {p.study_uid for p in report.removed}
    files = sorted(p.name for p in (settings.spool_dir / SETTLED).rglob("*.dcm"))
    assert files == [f"{SETTLED}.1.{i}.dcm" for i in range(3)] + [f"{SETTLED}.2.0.dcm"]
    assert (settings.spool_dir / SETTLED / f"{SETTLED}.1" / f"{SETTLED}.1.0.dcm").read_bytes() == (
        b"resent"
    )
    assert sorted(p.name for p in (settings.spool_dir / TRASH).iterdir()) == ["lock"]


def test_an_interrupted_prune_is_put_back_or_finished(
    settings: Settings, sessions: sessionmaker[Session], world: dict[str, int]
) -> None:
    trash = settings.spool_dir / TRASH
    trash.mkdir()
    os.rename(settings.spool_dir / RUNNING, trash / f"{RUNNING}~0001")  # not yet checked
    os.rename(settings.spool_dir / SETTLED, trash / f"{SETTLED}~0002.delete")  # checked
    next((trash / f"{SETTLED}~0002.delete").rglob("*.dcm")).unlink()  # cut short midway
    report = prune_spool(settings.spool_dir, sessions, retention_days=7)
    assert SETTLED not in {p.study_uid for p in report.removed}  # finished, not put back
    assert RUNNING in on_spool(settings)
    assert len(list((settings.spool_dir / RUNNING).rglob("*.dcm"))) == 3
    assert SETTLED not in on_spool(settings)
    assert sorted(p.name for p in trash.iterdir()) == ["lock"]


def test_one_prune_at_a_time(
    settings: Settings, sessions: sessionmaker[Session], world: dict[str, int]
) -> None:
    with _exclusive(settings.spool_dir / TRASH / "lock"), pytest.raises(PruneBusyError):
        prune_spool(settings.spool_dir, sessions, retention_days=7)
    assert on_spool(settings) == EVERYTHING


def test_the_gateway_janitor_prunes_in_the_background(
    settings: Settings, sessions: sessionmaker[Session], world: dict[str, int]
) -> None:
    janitor = SpoolJanitor(settings.spool_dir, sessions, 7, first_after_s=0.01)
    janitor.start()
    try:
        deadline = time.monotonic() + 10
        while on_spool(settings) & GOES and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        janitor.stop()
    assert on_spool(settings) == EVERYTHING - GOES
    with _exclusive(settings.spool_dir / TRASH / "lock"):
        assert janitor.run_once() is None  # busy: skipped, no error


def test_a_study_the_database_cannot_mark_is_put_back_and_the_others_go(
    settings: Settings,
    sessions: sessionmaker[Session],
    world: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mark = spool_prune._mark_pruned

    def busy_for_settled(sessions: sessionmaker[Session], uid: str) -> None:
        if uid == SETTLED:
            raise OperationalError("UPDATE received_studies", {}, Exception("database is locked"))
        mark(sessions, uid)

    monkeypatch.setattr(spool_prune, "_mark_pruned", busy_for_settled)
    report = prune_spool(settings.spool_dir, sessions, retention_days=7)
    assert {p.study_uid for p in report.removed} == GOES - {SETTLED}
    assert report.kept["database error"] == 1
    assert len(list((settings.spool_dir / SETTLED).rglob("*.dcm"))) == 3  # whole again
    with sessions() as session:
        marked = {
            row.study_uid
            for row in session.scalars(select(ReceivedStudy))
            if row.spool_pruned_at is not None
        }
    assert marked == GOES - {SETTLED}


def write_record(records: Path, uid: str, state: str, reported: datetime | None) -> None:
    record: dict[str, Any] = {"transaction_uid": uid, "state": state, "references": []}
    if reported is not None:
        record["reported_at"] = reported.isoformat()
    (records / f"{uid}.json").write_text(json.dumps(record))


def test_finished_storage_commitment_records_go_after_the_retention(tmp_path: Path) -> None:
    records = tmp_path / "storage-commitment"
    records.mkdir()
    write_record(records, "1.1", "delivered", OLD)
    write_record(records, "1.2", "undeliverable", OLD)
    write_record(records, "1.3", "delivered", RECENT)
    write_record(records, "1.4", "pending", OLD)  # a report failed, to be tried again
    (records / "1.5.json").write_text("{half written")
    write_record(records, "1.6", "delivered", OLD.replace(tzinfo=None))  # no zone: UTC
    assert prune_records(records, NOW - timedelta(days=7)) == 3
    assert sorted(p.name for p in records.iterdir()) == ["1.3.json", "1.4.json", "1.5.json"]
    assert prune_records(tmp_path / "absent", NOW) == 0


def test_the_janitor_prunes_commitment_records_with_the_spool(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    records = tmp_path / "storage-commitment"
    records.mkdir()
    write_record(records, "1.1", "delivered", OLD)
    write_record(records, "1.3", "delivered", RECENT)
    SpoolJanitor(settings.spool_dir, sessions, 7, commitment_records=records).run_once()
    assert [p.name for p in records.iterdir()] == ["1.3.json"]


# --- the command line -------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pacsflow")
    spool_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_dry_run_prints_uids_bytes_and_a_summary(
    settings: Settings, world: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(["spool", "prune", "--dry-run"])
    assert args.handler(args, settings) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"would remove {SETTLED}  {world[SETTLED]} bytes" in out
    assert f"orphan       {ORPHAN}  {world[ORPHAN]} bytes  (kept: no database row)" in out
    total = sum(world[uid] for uid in GOES)
    assert out[-1].startswith(f"would remove 3 studies, {total} B ({total} bytes), retention 7")
    assert "kept 5 (1 awaiting outcome, 1 open, 1 recent files" in out[-1]
    assert "1 orphans left" in out[-1]
    assert on_spool(settings) == EVERYTHING
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        assert not session.scalars(select(AuditEntry)).all()


def test_cli_older_than_and_include_orphans(
    settings: Settings, world: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(["spool", "prune", "--older-than", "0.5", "--include-orphans"])
    assert args.handler(args, settings) == 0
    out = capsys.readouterr().out
    assert f"removed      {ORPHAN}" in out and "(orphan)" in out
    assert out.splitlines()[-1].startswith("removed 4 studies")
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        audited = session.scalars(select(AuditEntry).where(AuditEntry.action == "spool.pruned"))
        assert sorted(e.subject for e in audited) == sorted(GOES | {ORPHAN})
    assert on_spool(settings) == EVERYTHING - GOES - {ORPHAN}


def test_cli_refuses_zero_days_and_honours_a_zero_setting(
    tmp_path: Path, world: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(["spool", "prune", "--older-than", "0"])
    forever = load_settings(
        paths={"var_dir": tmp_path / "var"}, gateway={"spool_retention_days": 0}
    )
    args = parse(["spool", "prune"])
    assert args.handler(args, forever) == 0
    assert "kept forever" in capsys.readouterr().out
    assert on_spool(forever) == EVERYTHING


def test_retention_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().gateway.spool_retention_days == 7
    monkeypatch.setenv("PACSFLOW_GATEWAY_SPOOL_RETENTION_DAYS", "2.5")
    assert load_settings().gateway.spool_retention_days == 2.5
    monkeypatch.setenv("PACSFLOW_GATEWAY_SPOOL_RETENTION_DAYS", "-1")
    with pytest.raises(ValueError):
        load_settings()


# --- a run reading a study the prune takes away ---------------------------------------------


class ArchiveDouble:
    def retrieve_series(self, study_uid: str, series_uid: str) -> list[str]:
        return [f"archive:{series_uid}"]


def test_a_run_reading_a_pruned_study_falls_back_to_the_archive(
    settings: Settings, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = StudySource(settings, sessions)
    monkeypatch.setattr(source, "archive", ArchiveDouble())
    # Listed while on the spool, gone by the time it is read.
    monkeypatch.setattr(source, "_spooled", lambda *_a: [settings.spool_dir / "gone.dcm"])
    assert source.series_datasets(SETTLED, "1.2") == (["archive:1.2"], "archive")


def test_an_instance_arriving_after_the_prune_is_not_read_as_the_study(
    settings: Settings, sessions: sessionmaker[Session], world: dict[str, int]
) -> None:
    source = StudySource(settings, sessions)
    source.archive = ArchiveDouble()  # type: ignore[assignment]
    series = f"{SETTLED}.1"
    assert len(source._spooled(SETTLED, series)) == 3  # whole, before the prune
    prune_spool(settings.spool_dir, sessions, retention_days=7)
    # The modality sends one instance again: the spool holds 1 of the study's 3.
    Spool(settings.spool_dir, settings.quarantine_dir).store(SETTLED, series, f"{series}.2", b"x")
    assert len(list((settings.spool_dir / SETTLED).rglob("*.dcm"))) == 1
    assert source._spooled(SETTLED, series) == []
    assert source.series_datasets(SETTLED, series) == ([f"archive:{series}"], "archive")
    # Studies never pruned still read from the spool.
    assert len(source._spooled(RUNNING, f"{RUNNING}.1")) == 3
