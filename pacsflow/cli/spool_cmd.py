"""`pacsflow spool prune`: remove spooled studies past their retention."""

from __future__ import annotations

import argparse

from pacsflow.config import Settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.gateway.spool_prune import PruneReport, prune_spool
from pacsflow.governance.audit import AuditLog, cli_actor


def _days(text: str) -> float:
    value = float(text)
    if not value > 0:  # 0 would read as "everything"; the setting's 0 means "forever"
        raise argparse.ArgumentTypeError(f"DAYS must be more than 0, not {text}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("spool", help="the gateway's spool of received studies")
    ssub = p.add_subparsers(dest="spool_cmd", required=True)
    prune = ssub.add_parser(
        "prune",
        help="remove spooled studies whose work is done and whose retention has passed",
        description="Remove the spooled copy of each study that is closed, has no pending "
        "trigger and has an outcome for each dispatched pathway, and whose last activity "
        "(close, triggers, outcomes) and files are older than the retention. Pathway runs "
        "read a study from the archive once its spool copy is gone. Quarantine is never "
        "touched. A folder with no database row (an orphan) is only listed, unless "
        "--include-orphans is given. Each removal is audited. The running gateway does "
        "the same every hour.",
    )
    prune.add_argument(
        "--older-than",
        type=_days,
        metavar="DAYS",
        help="retention in days, fractions allowed (default: gateway.spool_retention_days; "
        "its 0 keeps everything)",
    )
    prune.add_argument("--dry-run", action="store_true", help="list what would go, remove nothing")
    prune.add_argument(
        "--include-orphans",
        action="store_true",
        help="also remove folders that have no database row, once past the retention",
    )
    prune.set_defaults(handler=run_prune)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def run_prune(args: argparse.Namespace, settings: Settings) -> int:
    days = args.older_than if args.older_than is not None else settings.gateway.spool_retention_days
    if days == 0:
        print("gateway.spool_retention_days is 0: spool kept forever, nothing pruned")
        return 0
    upgrade(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    report = prune_spool(
        settings.spool_dir,
        sessions,
        retention_days=days,
        dry_run=args.dry_run,
        include_orphans=args.include_orphans,
        audit=AuditLog(sessions),
        actor=cli_actor(),
    )
    print_report(report)
    return 0


def print_report(report: PruneReport) -> None:
    """Study UIDs and sizes only: no patient data."""
    verb = "would remove" if report.dry_run else "removed"
    for item in report.removed:
        kind = "  (orphan)" if item.orphan else ""
        print(f"{verb:12} {item.study_uid}  {item.size_bytes} bytes{kind}")
    for item in report.orphans_kept:
        print(f"{'orphan':12} {item.study_uid}  {item.size_bytes} bytes  (kept: no database row)")
    kept = sum(report.kept.values())
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(report.kept.items()))
    summary = (
        f"{verb} {len(report.removed)} stud{'y' if len(report.removed) == 1 else 'ies'}, "
        f"{_size(report.freed_bytes)} "
        f"({report.freed_bytes} bytes), retention {report.retention_days:g} days; "
        f"kept {kept}" + (f" ({reasons})" if reasons else "")
    )
    if report.orphans_kept:
        summary += f"; {len(report.orphans_kept)} orphans left (--include-orphans removes them)"
    print(summary)
