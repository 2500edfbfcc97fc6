"""`pacsflow sweep start|cohort|status|reset`: retrospective archive sweeps and the screening
cohort from the command line.

The platform does not import Prefect (the layering of DESIGN.md): `start` and `cohort`
create a flow run of the deployment over Prefect's REST API, as the gateway does, and a
worker runs it; `status` reads the sweeps' checkpoints and cohort ledgers from
``sweeps.checkpoint_dir`` and the latest runs from the Prefect API.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

from pacsflow.config import Settings
from pacsflow.errors import InvalidInputError, PeerUnavailableError
from pacsflow.orchestration.prefect_api import PrefectApi
from pacsflow.pathways.cohort import load_ledger, reset_ledger
from pacsflow.pathways.sweep import SweepCheckpoint, load_checkpoint, reset_sweep

# deployments/catalog.py registers these names (tests/unit/test_sweep_cli.py checks it).
ARCHIVE_SWEEP_DEPLOYMENT = "archive-sweep/archive-sweep"
SCREENING_DEPLOYMENT = "screening-cohort/screening-cohort-nightly"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sweep",
        help="retrospective archive sweeps and the screening cohort: start, status, reset",
        description="Start an archive sweep (a pathway run over the studies of a date range, "
        "with shadow mode while a challenger model exists) or the screening cohort, and "
        "follow their progress. Runs appear in the Prefect UI.",
    )
    ssub = p.add_subparsers(dest="sweep_cmd", required=True, metavar="ACTION")

    start = ssub.add_parser("start", help="start an archive sweep of a pathway")
    start.add_argument("--pathway", required=True, help="stroke_triage | nodule_followup")
    _window_arguments(start)
    start.add_argument("--modality", help="ModalitiesInStudy filter ('' for none)")
    start.add_argument("--description", help="StudyDescription regular expression ('' for none)")
    start.add_argument("--body-part", action="append", help="BodyPartExamined (repeatable)")
    start.add_argument("--max-in-flight", type=int, help="pathway runs at once (default 1)")
    start.add_argument("--no-dispatch", action="store_true", help="shadow reads only")
    start.add_argument("--no-shadow", action="store_true", help="no challenger readings")
    start.add_argument("--truth-dir", help="synthetic studies' ground truth (shadow report)")
    start.set_defaults(handler=run_start)

    cohort = ssub.add_parser("cohort", help="run the screening cohort now")
    _window_arguments(cohort)
    cohort.add_argument("--as-of", type=date.fromisoformat, help="judge as of this day")
    cohort.add_argument("--dry-run", action="store_true", help="flag nothing in the EHR")
    cohort.set_defaults(handler=run_cohort)

    status = ssub.add_parser("status", help="checkpoints of the sweeps and their latest runs")
    status.add_argument("--limit", type=int, default=10, help="runs per deployment")
    status.set_defaults(handler=run_status)

    reset = ssub.add_parser("reset", help="forget a sweep's progress (and its cohort ledger)")
    reset.add_argument("name")
    reset.set_defaults(handler=run_reset)


def _window_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=date.fromisoformat, help="first StudyDate (ISO)")
    parser.add_argument(
        "--end", type=date.fromisoformat, help="last StudyDate (default: yesterday)"
    )
    parser.add_argument("--last-days", type=int, help="instead of --start: the last N days")
    parser.add_argument("--name", help="checkpoint name of the sweep (resume it by name)")


def _window(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key in ("start", "end"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key).isoformat()
    if args.last_days is not None:
        params["last_days"] = args.last_days
    if args.name:
        params["sweep"] = args.name
    return params


def archive_sweep_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The archive-sweep flow's parameters from the command line (only those given)."""
    if args.start is None and args.last_days is None:
        raise InvalidInputError("give --start (and --end) or --last-days")
    params = {"pathway": args.pathway, **_window(args)}
    if args.modality is not None:
        params["modality"] = args.modality
    if args.description is not None:
        params["description_pattern"] = args.description
    if args.body_part:
        params["body_parts"] = args.body_part
    if args.max_in_flight is not None:
        params["max_in_flight"] = args.max_in_flight
    if args.no_dispatch:
        params["dispatch"] = False
    if args.no_shadow:
        params["shadow"] = False
    if args.truth_dir:
        params["truth_dir"] = str(Path(args.truth_dir).resolve())
    return params


def _start(
    settings: Settings,
    deployment: str,
    params: dict[str, Any],
    what: str,
    *,
    attempts: int = 4,
) -> int:
    api = PrefectApi(settings.prefect.effective_api_url)
    key = f"cli:{uuid.uuid4()}"  # each command is a new run; a retry of it is the same run
    try:
        for attempt in range(1, attempts + 1):
            try:
                run_id = api.create_flow_run(
                    deployment, params, idempotency_key=key, tags=["source:cli"]
                )
                break
            except PeerUnavailableError:
                if attempt == attempts:
                    raise
                time.sleep(attempt)  # a busy or restarting server: try again, same key
    finally:
        api.close()
    print(f"{what} started: flow run {run_id}")
    print(f"  {settings.prefect.ui_url}/runs/flow-run/{run_id}")
    print("  progress: the run's Artifacts tab, or `pacsflow sweep status`")
    return 0


def run_start(args: argparse.Namespace, settings: Settings) -> int:
    return _start(
        settings, ARCHIVE_SWEEP_DEPLOYMENT, archive_sweep_parameters(args), "archive sweep"
    )


def run_cohort(args: argparse.Namespace, settings: Settings) -> int:
    params = _window(args)
    if args.as_of is not None:
        params["as_of"] = args.as_of.isoformat()
    if args.dry_run:
        params["dry_run"] = True
    return _start(settings, SCREENING_DEPLOYMENT, params, "screening cohort")


def checkpoints(directory: Path) -> list[SweepCheckpoint]:
    """Every sweep checkpoint in the directory (cohort ledgers and temp files left out)."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.json")):
        if path.name.endswith(".cohort.json"):
            continue
        checkpoint = load_checkpoint(directory, path.stem)
        if checkpoint is not None:
            found.append(checkpoint)
    return found


def describe_checkpoint(checkpoint: SweepCheckpoint, directory: Path) -> str:
    line = (
        f"  {checkpoint.sweep}: next StudyDate {checkpoint.window_start}, "
        f"{checkpoint.yielded} handed out, {checkpoint.skipped} skipped, "
        f"updated {checkpoint.updated_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    ledger = load_ledger(directory, checkpoint.sweep)
    if ledger is not None:
        line += f"; cohort {len(ledger.patients)} patient(s) since {ledger.start}"
    return line


def _state(run: dict[str, Any]) -> str:
    state = run.get("state") or {}
    return str(state.get("name") or run.get("state_name") or "?")


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    directory = settings.sweep_checkpoint_dir
    found = checkpoints(directory)
    print(f"sweep checkpoints in {directory}:")
    for checkpoint in found:
        print(describe_checkpoint(checkpoint, directory))
    if not found:
        print("  none")
    api = PrefectApi(settings.prefect.effective_api_url)
    try:
        for deployment in (ARCHIVE_SWEEP_DEPLOYMENT, SCREENING_DEPLOYMENT):
            try:
                runs = api.flow_runs_of(deployment, limit=200)
            except PeerUnavailableError as exc:
                print(f"{deployment}: Prefect not reachable or not deployed ({exc})")
                continue
            runs.sort(key=lambda r: str(r.get("expected_start_time") or ""), reverse=True)
            print(f"latest runs of {deployment}:")
            for run in runs[: args.limit]:
                params = run.get("parameters") or {}
                what = params.get("sweep") or params.get("pathway") or ""
                print(
                    f"  {run.get('name')}  {_state(run)}  {what}  "
                    f"started {run.get('start_time') or '-'}  id {run.get('id')}"
                )
            if not runs:
                print("  none")
    finally:
        api.close()
    return 0


def run_reset(args: argparse.Namespace, settings: Settings) -> int:
    directory = settings.sweep_checkpoint_dir
    if load_checkpoint(directory, args.name) is None and load_ledger(directory, args.name) is None:
        print(f"no sweep {args.name!r} in {directory}", file=sys.stderr)
        return 1
    reset_sweep(directory, args.name)
    reset_ledger(directory, args.name)
    print(f"sweep {args.name!r} reset: its next run starts from its first day")
    return 0
