"""The warm runner: registers pacsflow's deployments and executes their runs in-process.

Prefect's own `serve` starts a fresh subprocess per flow run, which re-imports torch, MONAI
and MLflow and reloads the model every time (several seconds of time-to-flag). This runner
is a long-lived process that claims scheduled runs of its deployments (Pending, as
Prefect's runner does) and runs each in a thread, so models stay loaded between runs.
Runs created while it is down wait in the Prefect server and run when it comes back.

Work pools: each deployment is registered in the Prefect work pool of its pathway's route
(workers.routes: "cpu" or "gpu" -> the pools "pacsflow-cpu", "pacsflow-gpu"). A runner
registers every deployment but claims only the runs of the pools it serves (--pool,
repeatable; default every pool). A runner that serves the gpu pool runs its models on CUDA
when torch sees a device, else on the CPU.

    python -m deployments.serve [--pool cpu|gpu|cpu,gpu ...] [--concurrency N] [--poll S]
"""

from __future__ import annotations

import argparse
import contextvars
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectAlreadyExists
from prefect.flow_engine import run_flow
from prefect.states import Pending, Scheduled

from deployments.catalog import CATALOG, DeploymentSpec
from pacsflow.cli.serve_cmd import add_runner_options
from pacsflow.config import load_settings
from pacsflow.config.settings import WORKER_POOLS, WorkersSettings
from pacsflow.stack.process import pid_alive

log = logging.getLogger("pacsflow.runner")
HOST = socket.gethostname()
OWNER = f"{HOST}:{os.getpid()}"
ORPHAN_CHECK_S = 30.0  # how often a runner looks for runs of dead runners of its host
CLAIM_GRACE_S = 120.0  # a Pending run with no claimant recorded for this long is orphaned


# A prefix keeps pacsflow's pools apart from other teams' pools on a shared Prefect server.
WORK_POOL_PREFIX = "pacsflow-"
# Prefect's built-in worker type: the server accepts it without a worker plugin. No Prefect
# worker polls these pools; the warm runners claim their runs by deployment.
WORK_POOL_TYPE = "process"


def work_pool_name(pool: str) -> str:
    """The Prefect work pool of a pacsflow pool ("cpu" -> "pacsflow-cpu")."""
    return f"{WORK_POOL_PREFIX}{pool}"


@dataclass(frozen=True)
class Registered:
    """A deployment on the Prefect server: its spec and the pool its runs go to."""

    spec: DeploymentSpec
    pool: str

    @property
    def flow(self) -> Flow[..., Any]:
        return self.spec.flow


def ensure_work_pools(client: SyncPrefectClient, pools: Collection[str]) -> None:
    """Create the Prefect work pools that do not exist yet (several runners may race)."""
    for pool in sorted(pools):
        try:
            client.create_work_pool(
                WorkPoolCreate(
                    name=work_pool_name(pool),
                    type=WORK_POOL_TYPE,
                    description=f"pacsflow {pool} pool: claimed by pacsflow's warm runners "
                    f"(deployments.serve --pool {pool})",
                )
            )
            log.info("work pool %s created", work_pool_name(pool))
        except ObjectAlreadyExists:
            pass


def register_in_pools(
    specs: Sequence[DeploymentSpec], workers: WorkersSettings | None = None
) -> dict[UUID, Registered]:
    """Create or update each deployment on the Prefect server, in the work pool of its
    pathway's route (workers.routes); deployment id -> what was registered."""
    workers = workers or WorkersSettings()
    pools = {workers.pool_of(spec.pathway) for spec in specs}
    with get_client(sync_client=True) as client:
        ensure_work_pools(client, pools)
    registered: dict[UUID, Registered] = {}
    for spec in specs:
        pool = workers.pool_of(spec.pathway)
        deployment = spec.flow.to_deployment(
            name=spec.name,
            description=spec.description,
            tags=spec.tags,
            cron=spec.cron,
            work_pool_name=work_pool_name(pool),
        )
        dep_id = deployment.apply()
        registered[dep_id] = Registered(spec, pool)
        log.info("deployment %s registered in pool %s (%s)", spec.full_name, pool, dep_id)
    return registered


def register(
    specs: Sequence[DeploymentSpec], workers: WorkersSettings | None = None
) -> dict[UUID, Flow[..., Any]]:
    """`register_in_pools`, as deployment id -> flow (what a runner of every pool serves)."""
    return {dep_id: r.flow for dep_id, r in register_in_pools(specs, workers).items()}


def served_deployments(pool_of: Mapping[UUID, str], pools: Collection[str]) -> set[UUID]:
    """The deployments whose runs a runner serving `pools` claims."""
    return {dep_id for dep_id, pool in pool_of.items() if pool in pools}


class WarmRunner:
    def __init__(
        self,
        deployments: Mapping[UUID, Flow[..., Any]],
        *,
        concurrency: int = 2,
        poll_s: float = 1.0,
        name: str = "flow-run",
    ) -> None:
        self.deployments = dict(deployments)
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.stop_event = threading.Event()
        # The threads' name prefix tells the runs of runners sharing a process apart.
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=name)
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
        if not self.deployments:
            return 0
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
            why = self._orphaned(run)
            if why is None:
                continue
            client.set_flow_run_state(run.id, Scheduled(), force=True)
            log.warning("flow run %s (%s) %s: rescheduled", run.name, run.id, why)
            rescheduled += 1
        return rescheduled

    def _orphaned(self, run: Any) -> str | None:
        """Why nobody will finish this Pending/Running run, or None if someone may."""
        host, _, pid = (run.infrastructure_pid or "").partition(":")
        if not run.infrastructure_pid:
            # Claimed, but the claimant failed before recording itself (server away).
            since = run.state.timestamp if run.state else None
            stale = (
                since is not None and (datetime.now(UTC) - since).total_seconds() > CLAIM_GRACE_S
            )
            return "claimed by an unknown runner long ago" if stale else None
        if host != HOST or not pid.isdigit():
            return None  # another host's runner: its own host recovers it
        if int(pid) == os.getpid():
            # Ours, yet not executing: the claim failed half-way (server restarting).
            return None if run.id in self._running else "held by this runner but not executing"
        return None if pid_alive(int(pid)) else "orphaned by a dead runner"

    def poll_once(self, client: Any) -> int:
        self._running = {k: f for k, f in self._running.items() if not f.done()}
        free = self.concurrency - len(self._running)
        if free <= 0 or not self.deployments:  # no deployment routed to these pools
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
            # If the server goes away from here on, the next orphan check reschedules it.
            claimed = client.read_flow_run(run.id)  # the client-side schema, now Pending
            log.info("running %s (%s)", claimed.name, claimed.id)
            # The run sees the Prefect settings context the runner runs under.
            context = contextvars.copy_context()
            self._running[run.id] = self._pool.submit(context.run, self._execute, flow, claimed)
            started += 1
        return started

    @staticmethod
    def _execute(flow: Flow[..., Any], run: Any) -> None:
        try:
            run_flow(flow, flow_run=run, return_type="state")
        except BaseException:  # the run's state records the failure; the runner goes on
            log.exception("flow run %s raised", run.id)

    def _recover(self, client: Any) -> None:
        try:
            self.recover_orphans(client)
        except Exception as exc:  # never block serving on the clean-up
            log.warning("orphan recovery skipped: %s", exc)

    def run(self) -> None:
        with get_client(sync_client=True) as client:
            self._recover(client)
            last_recovery = time.monotonic()
            while not self.stop_event.is_set():
                try:
                    self.poll_once(client)
                except Exception as exc:  # server restarting: keep polling
                    log.warning("polling Prefect failed: %s", exc)
                    time.sleep(min(5.0, self.poll_s * 3))
                # Also now and then: a runner of this host that died and is not restarted
                # leaves runs that a surviving runner must pick up.
                if time.monotonic() - last_recovery > ORPHAN_CHECK_S:
                    self._recover(client)
                    last_recovery = time.monotonic()
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


def _choose_device(pools: Collection[str]) -> None:
    """A runner of the gpu pool runs its models on CUDA when there is a device."""
    from tasks.infer import use_device

    device = use_device(prefer_cuda="gpu" in pools)
    log.info("inference device: %s", device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_runner_options(parser)
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls")
    args = parser.parse_args(argv)
    # force: importing Prefect has already configured the root logger (at WARNING).
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    workers = load_settings().workers
    pools = sorted(set(args.pool or WORKER_POOLS))
    concurrency = args.concurrency or workers.concurrency
    registered = register_in_pools(CATALOG, workers)
    ids = served_deployments({i: r.pool for i, r in registered.items()}, pools)
    runner = WarmRunner(
        {i: registered[i].flow for i in ids}, concurrency=concurrency, poll_s=args.poll
    )
    _choose_device(pools)
    threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stop_event.set())
    log.info(
        "serving pool(s) %s: %s; concurrency %d",
        ", ".join(work_pool_name(p) for p in pools),
        ", ".join(sorted(registered[i].spec.full_name for i in ids)) or "no deployment",
        concurrency,
    )
    runner.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
