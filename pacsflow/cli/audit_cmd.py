"""`pacsflow audit verify|export`: check the hash chain; export JSON lines or DICOM audit
messages (PS3.15 A.5), optionally forwarded to a syslog collector (RFC 5424)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from pacsflow.config import Settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.governance.audit import AuditLog, cli_actor
from pacsflow.governance.audit_export import (
    AuditFilter,
    count_entries,
    forward_syslog,
    read_entries,
    write_export,
)
from pacsflow.governance.syslog import SyslogSender, parse_endpoint


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit",
        help="the tamper-evident audit trail: verify the hash chain, export it",
        description="Every inference, result view, decision, override, login, model "
        "approval and export is an entry hash-chained to the previous one.",
    )
    asub = p.add_subparsers(dest="audit_cmd", required=True, metavar="ACTION")

    verify = asub.add_parser(
        "verify",
        help="check the hash chain; exit 1 and name the first broken entry if any",
    )
    verify.set_defaults(handler=run_verify)

    export = asub.add_parser(
        "export",
        help="write the audit trail as JSON lines or DICOM audit messages (ATNA)",
        description="One entry per line: a JSON object (jsonl) or a DICOM PS3.15 A.5 "
        "AuditMessage (atna). With --syslog each entry is also sent as a DICOM audit "
        "message in an RFC 5424 syslog message (facility 10, severity 5, MSGID IHE+RFC-3881).",
    )
    export.add_argument("--format", choices=["jsonl", "atna"], default="jsonl")
    export.add_argument("--out", type=Path, required=True, help="output file")
    export.add_argument("--since", type=datetime.fromisoformat, help="ISO date/time, inclusive")
    export.add_argument("--action", help="only this action (or prefix ending in '.')")
    export.add_argument("--syslog", metavar="HOST:PORT", help="also forward to this collector")
    export.add_argument("--syslog-transport", choices=["udp", "tcp"], default="udp")
    export.set_defaults(handler=run_export)


def _audit(settings: Settings) -> AuditLog:
    upgrade(settings.database_url)
    return AuditLog(make_sessionmaker(make_engine(settings.database_url)))


def run_verify(args: argparse.Namespace, settings: Settings) -> int:
    audit = _audit(settings)
    problems = audit.verify()
    entries = count_entries(audit.sessions)
    if problems:
        print(f"audit chain BROKEN ({entries} entries):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"audit chain intact: {entries} entries")
    return 0


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    audit = _audit(settings)
    where = AuditFilter(action=args.action, since=args.since)
    records = read_entries(audit.sessions, where)
    written = write_export(records, args.format, args.out)
    sent = 0
    destination = None
    if args.syslog:
        host, port = parse_endpoint(args.syslog)
        destination = f"{args.syslog_transport}://{host}:{port}"
        with SyslogSender(host, port, args.syslog_transport) as sender:
            sent = forward_syslog(records, sender)
    audit.append(
        cli_actor(),
        "audit.export",
        "audit_log",
        {
            "format": args.format,
            "file": str(args.out),
            "entries": written,
            "syslog": destination,
            "first_id": records[0].id if records else None,
            "last_id": records[-1].id if records else None,
        },
    )
    print(f"exported {written} entries to {args.out} ({args.format})")
    if destination:
        print(f"sent {sent} audit messages to {destination}")
    return 0
