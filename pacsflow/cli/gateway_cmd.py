"""`pacsflow gateway` (run the listeners), `pacsflow web` (the web UI/API alone) and
`pacsflow outbox` (what happened to triggers, and another try for those that gave up)."""

from __future__ import annotations

import argparse

from pacsflow.config import Settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.gateway.outbox import DEAD, Outbox
from pacsflow.governance.audit import AuditLog, cli_actor


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gw = sub.add_parser(
        "gateway",
        help="run the ingest gateway (DICOM SCP, HL7 MLLP, webhook) in the foreground",
        description="Runs every listener in one process: the DICOM SCP (C-ECHO, C-STORE, "
        "MPPS), the HL7 v2 MLLP listener, the signed webhook and, if configured, the VNA "
        "change-feed watcher. Accepted triggers go to the durable outbox, and the dispatcher "
        "starts a Prefect flow run for each. `pacsflow stack up` starts it in the background.",
    )
    gw.set_defaults(handler=run_gateway_cmd)

    web = sub.add_parser(
        "web",
        help="run only the clinical web UI and REST API in the foreground",
        description="Serves the web UI and API (what the gateway mounts at /) alone, on "
        "web.host:web.port, over pacsflow's database: no DICOM or MLLP listener, no spool, "
        "no dispatcher, so it scales out (the api image). HTTPS when tls.http is on.",
    )
    web.add_argument("--host", help="listen address (default: web.host)")
    web.add_argument("--port", type=int, help="listen port (default: web.port)")
    web.set_defaults(handler=run_web_cmd)

    ob = sub.add_parser(
        "outbox",
        help="list outbox rows (accepted triggers) and their state; retry dead ones",
        description="Every accepted trigger (a closed study, an HL7 order, a webhook) is an "
        "outbox row: pending until the dispatcher has started its Prefect flow run, then "
        "dispatched; dead when it gave up (a permanent error, or 10 failed tries) with the "
        "reason. Without a subcommand: list the newest rows.",
    )
    ob.add_argument("--state", choices=["pending", "dispatched", "dead"], help="only this state")
    ob.add_argument("--limit", type=int, default=50)
    ob.set_defaults(handler=run_outbox)
    actions = ob.add_subparsers(dest="outbox_action", metavar="{retry}")
    retry = actions.add_parser(
        "retry",
        help="put dead rows back to pending, due now (after fixing the cause)",
        description="Dead rows go back to pending with a fresh count of attempts; the "
        "running gateway's dispatcher starts their flow runs within a second or so. A dead "
        "row never started a flow run, and a study run again is not written back twice. "
        "Each retry is recorded in the audit log.",
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=int, default=[], help="outbox row ids")
    which.add_argument("--all-dead", action="store_true", help="every dead row")
    retry.set_defaults(handler=run_outbox_retry)


def run_gateway_cmd(args: argparse.Namespace, settings: Settings) -> int:
    # Composition root: the registry pages of the web UI get their data through callables
    # built in the models package (the platform itself never imports it).
    from models.web_bindings import registry_callables
    from pacsflow.gateway.service import run_gateway

    model_versions, approve_model = registry_callables(settings.mlflow_tracking_uri)
    run_gateway(settings, model_versions=model_versions, approve_model=approve_model)
    return 0


def run_web_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from models.web_bindings import registry_callables
    from pacsflow.web.standalone import run_web

    model_versions, approve_model = registry_callables(settings.mlflow_tracking_uri)
    run_web(
        settings,
        host=args.host,
        port=args.port,
        model_versions=model_versions,
        approve_model=approve_model,
    )
    return 0


def run_outbox(args: argparse.Namespace, settings: Settings) -> int:
    upgrade(settings.database_url)
    outbox = Outbox(make_sessionmaker(make_engine(settings.database_url)))
    rows = outbox.list(args.state, args.limit)
    if not rows:
        print("outbox is empty" + (f" for state {args.state}" if args.state else ""))
        return 0
    print(f"{'id':>5} {'state':10} {'source':8} {'pathway':16} {'tries':>5}  study / detail")
    for r in rows:
        detail = r.flow_run_id if r.state == "dispatched" else (r.last_error or "")
        print(
            f"{r.id:>5} {r.state:10} {r.source:8} {r.pathway:16} {r.attempts:>5}  "
            f"{r.study_uid}  {detail[:80]}"
        )
    return 0


def run_outbox_retry(args: argparse.Namespace, settings: Settings) -> int:
    upgrade(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    outbox = Outbox(sessions)
    wanted = None if args.all_dead else sorted(set(args.ids))
    revived = outbox.retry(wanted)
    audit = AuditLog(sessions)
    for row in revived:
        audit.append(
            cli_actor(),
            "outbox.retry",
            row.study_uid or f"outbox:{row.id}",
            {
                "outbox_id": row.id,
                "pathway": row.pathway,
                "attempts": row.attempts,
                "last_error": row.last_error,
            },
        )
        print(f"{row.id:>5} {row.pathway:16} {row.study_uid}  pending again")
    problems = 0
    if wanted:
        left = set(wanted) - {row.id for row in revived}
        unknown = left - outbox.existing(sorted(left))
        problems = len(left)
        if unknown:
            print(f"no such outbox rows: {', '.join(map(str, sorted(unknown)))}")
        if left - unknown:
            print(f"not {DEAD}, left as they are: {', '.join(map(str, sorted(left - unknown)))}")
    elif not revived:
        print(f"no {DEAD} rows to retry")
    return 1 if problems else 0
