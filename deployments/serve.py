"""The warm runner: registers pacsflow's deployments and executes their runs in-process.

Prefect's own `serve` starts a fresh subprocess per flow run, which re-imports torch, MONAI
and MLflow and reloads the model every time (several seconds of time-to-flag). This runner
is a long-lived process that claims scheduled runs of its deployments (Pending, as
Prefect's runner does) and runs each in a thread, so models stay loaded between runs.
Runs created while it is down wait in the Prefect server and run when it comes back.

    python -m deployments.serve [--concurrency N] [--poll S]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.flow_engine import run_flow
from prefect.states import Pending, Scheduled

from deployments.catalog import CATALOG, DeploymentSpec
from pacsflow.stack.process import pid_alive

log = logging.getLogger("pacsflow.runner")
HOST = socket.gethostname()
OWNER = f"{HOST}:{os.getpid()}"


def register(specs: list[DeploymentSpec]) -> dict[UUID, Flow[..., Any]]:
    """Create or update each deployment on the Prefect server; id -> flow."""
    registered: dict[UUID, Flow[..., Any]] = {}
    for spec in specs:
        deployment = spec.flow.to_deployment(
            name=spec.name,
            description=spec.description,
            tags=spec.tags,
            cron=spec.cron,
        )
        dep_id = deployment.apply()
        registered[dep_id] = spec.flow
        log.info("deployment %s registered (%s)", spec.full_name, dep_id)
    return registered


class WarmRunner:
    def __init__(
        self, deployments: dict[UUID, Flow[..., Any]], *, concurrency: int = 2, poll_s: float = 1.0
    ) -> None:
        self.deployments = deployments
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.stop_event = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="flow-run")
        self._running: dict[UUID, Future[Any]] = {}

    def _claim(self, client: Any, run_id: UUID) -> bool:
        result = client.set_flow_run_state(run_id, Pending(), force=False)
        if str(result.status.value).upper() != "ACCEPT":
            return False  # another runner claimed it first
        # Who runs it: lets a restarted runner find runs orphaned by a dead one.
        client.update_flow_run(run_id, infrastructure_pid=OWNER)
        return True

    def recover_orphans(self, client: Any) -> int:
        """Runs left Pending/Running by a runner of this host that died go back to
        Scheduled; the writeback ledger makes their re-run safe (nothing is written twice)."""
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=list(self.deployments)),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING])
                ),
            ),
            limit=200,
        )
        rescheduled = 0
        for run in runs:
            host, _, pid = (run.infrastructure_pid or "").partition(":")
            if host != HOST or (pid.isdigit() and pid_alive(int(pid))):
                continue
            client.set_flow_run_state(run.id, Scheduled(), force=True)
            log.warning("flow run %s (%s) orphaned by a dead runner: rescheduled", run.name, run.id)
            rescheduled += 1
        return rescheduled

    def poll_once(self, client: Any) -> int:
        self._running = {k: f for k, f in self._running.items() if not f.done()}
        free = self.concurrency - len(self._running)
        if free <= 0:
            return 0
        runs = client.get_scheduled_flow_runs_for_deployments(
            deployment_ids=list(self.deployments),
            scheduled_before=datetime.now(UTC),
            limit=free,
        )
        started = 0
        for run in runs:
            if run.id in self._running or not self._claim(client, run.id):
                continue
            flow = self.deployments[run.deployment_id]
            claimed = client.read_flow_run(run.id)  # the client-side schema, now Pending
            log.info("running %s (%s)", claimed.name, claimed.id)
            self._running[run.id] = self._pool.submit(self._execute, flow, claimed)
            started += 1
        return started

    @staticmethod
    def _execute(flow: Flow[..., Any], run: Any) -> None:
        try:
            run_flow(flow, flow_run=run, return_type="state")
        except BaseException:  # the run's state records the failure; the runner goes on
            log.exception("flow run %s raised", run.id)

    def run(self) -> None:
        with get_client(sync_client=True) as client:
            try:
                self.recover_orphans(client)
            except Exception as exc:  # never block serving on the clean-up
                log.warning("orphan recovery skipped: %s", exc)
            while not self.stop_event.is_set():
                try:
                    self.poll_once(client)
                except Exception as exc:  # server restarting: keep polling
                    log.warning("polling Prefect failed: %s", exc)
                    time.sleep(min(5.0, self.poll_s * 3))
                self.stop_event.wait(self.poll_s)
        self._pool.shutdown(wait=True)


def _warm_up() -> None:
    """Load models now so the first study does not pay for imports and loading."""
    started = time.perf_counter()
    try:
        from tasks.infer import warm_up

        warm_up()
        log.info("models warm in %.1f s", time.perf_counter() - started)
    except Exception as exc:  # no champion yet: the first run will say so
        log.warning("warm-up skipped: %s", exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=2, help="flow runs at once")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls")
    args = parser.parse_args(argv)
    # force: importing Prefect has already configured the root logger (at WARNING).
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    runner = WarmRunner(register(CATALOG), concurrency=args.concurrency, poll_s=args.poll)
    threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stop_event.set())
    log.info("serving %d deployment(s); concurrency %d", len(CATALOG), args.concurrency)
    runner.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
