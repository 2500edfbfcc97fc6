"""`pacsflow stack up | down | status` and `pacsflow db upgrade`."""

from __future__ import annotations

import argparse

from pacsflow.config import Settings
from pacsflow.db.session import upgrade
from pacsflow.stack import stack


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stack",
        help="start, stop or inspect the embedded services on loopback",
        description="The embedded one-machine stack: Orthanc (archive, DICOMweb), the Prefect "
        "server (UI), MLflow (model registry), pacsflow's database, and pacsflow's gateway and "
        "warm flow runners (workers.count serving every work pool, workers.gpu_count serving "
        "only the gpu pool). State lives under the configured var directory.",
    )
    ssub = p.add_subparsers(dest="stack_cmd", required=True)
    up = ssub.add_parser("up", help="start every service that is not running and wait for it")
    up.add_argument(
        "--core-only",
        action="store_true",
        help="only Orthanc, Prefect and MLflow (not the gateway and the flow runners)",
    )
    up.set_defaults(handler=run_up)
    ssub.add_parser("down", help="stop every service started by `stack up`").set_defaults(
        handler=run_down
    )
    ssub.add_parser("status", help="which services run, and their URLs").set_defaults(
        handler=run_status
    )

    db = sub.add_parser("db", help="pacsflow's own database")
    dsub = db.add_subparsers(dest="db_cmd", required=True)
    dsub.add_parser("upgrade", help="apply the Alembic migrations").set_defaults(
        handler=run_db_upgrade
    )


def run_up(args: argparse.Namespace, settings: Settings) -> int:
    stack.up(settings, include_app=not args.core_only)
    return 0


def run_down(args: argparse.Namespace, settings: Settings) -> int:
    stack.down(settings)
    return 0


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    rows = stack.status(settings)
    width = max((len(row.name) for row in rows), default=8)
    for row in rows:
        state = "up" if row.running else ("unhealthy" if row.pid else "down")
        pid = str(row.pid) if row.pid else "-"
        print(f"{row.name:{width}} {state:9} pid {pid:>7}  {row.url}")
    return 0 if all(r.running for r in rows) else 3


def run_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    upgrade(settings.database_url)
    print(f"database at head: {settings.database_url}")
    return 0
