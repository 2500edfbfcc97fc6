"""The pathway runs of a retrospective archive sweep: which studies still need one, the flow
run created for each (through the Prefect API, by deployment name, with an idempotency key
per study and model version), and the cap on how many are in flight at once.

Why a cap in the sweep rather than a Prefect concurrency limit: the sweep's runs are runs of
the same deployments as live clinical work (stroke-triage, nodule-followup), served by the
same workers in the order they were scheduled. Dumping a thousand runs on the server would
put every live study behind them; a deployment concurrency limit would throttle live work
too, and Prefect's tag concurrency limits apply to task runs, not flow runs. So the sweep
keeps at most ``max_in_flight`` of its runs scheduled or running (default 1) and creates the
next only when one has finished: a live study waits for at most that many sweep runs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import PathwayRun
from pacsflow.errors import InvalidInputError
from pacsflow.gateway.dispatcher import DEPLOYMENTS
from pacsflow.pathways.validation import CHEST_DESCRIPTION, HEAD_DESCRIPTION
from tasks.infer import ICH_MODEL, NODULE_MODEL

log = logging.getLogger(__name__)

FINAL_STATES = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
)


@dataclass(frozen=True)
class SweepTarget:
    """A pathway a sweep can run: its deployment, its model, the studies it reads."""

    pathway: str
    deployment: str  # "flow-name/deployment-name"
    model_name: str
    modality: str
    description_pattern: str


TARGETS: dict[str, SweepTarget] = {
    "stroke_triage": SweepTarget(
        "stroke_triage", DEPLOYMENTS["stroke_triage"], ICH_MODEL, "CT", HEAD_DESCRIPTION.pattern
    ),
    "nodule_followup": SweepTarget(
        "nodule_followup",
        DEPLOYMENTS["nodule_followup"],
        NODULE_MODEL,
        "CT",
        CHEST_DESCRIPTION.pattern,
    ),
}


def target(pathway: str) -> SweepTarget:
    try:
        return TARGETS[pathway]
    except KeyError:
        raise InvalidInputError(
            f"no sweepable pathway {pathway!r}; known: {', '.join(sorted(TARGETS))}"
        ) from None


def sweep_key(pathway: str, study_uid: str, model_version: str) -> str:
    """The idempotency key of a sweep's run: one run per study, pathway and model version,
    whatever sweep or retry asks for it again."""
    return f"sweep:{pathway}:{study_uid}:{model_version}"


def processed(
    sessions: sessionmaker[Session], pathway: str, model_version: str, study_uid: str
) -> bool:
    """The pathway has a result (not a failure) of this model version for the study."""
    with sessions() as session:
        found = session.scalar(
            select(PathwayRun.id).where(
                PathwayRun.study_uid == study_uid,
                PathwayRun.pathway == pathway,
                PathwayRun.model_version == model_version,
                PathwayRun.outcome != "failed",
            )
        )
    return found is not None


class RunLauncher(Protocol):
    def submit(
        self,
        deployment: str,
        parameters: dict[str, Any],
        *,
        key: str,
        name: str,
        tags: list[str],
    ) -> tuple[UUID, StateType | None]: ...

    def states(self, run_ids: list[UUID]) -> dict[UUID, StateType | None]: ...


class PrefectRunLauncher:
    """Flow runs of named deployments through Prefect's API client (same key, same run)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._deployments: dict[str, UUID] = {}

    def submit(
        self,
        deployment: str,
        parameters: dict[str, Any],
        *,
        key: str,
        name: str,
        tags: list[str],
    ) -> tuple[UUID, StateType | None]:
        if deployment not in self._deployments:
            self._deployments[deployment] = self.client.read_deployment_by_name(deployment).id
        run = self.client.create_flow_run_from_deployment(
            self._deployments[deployment],
            parameters=parameters,
            idempotency_key=key,
            name=name,
            tags=tags,
        )
        return run.id, run.state.type if run.state else None

    def states(self, run_ids: list[UUID]) -> dict[UUID, StateType | None]:
        runs = self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)), limit=len(run_ids)
        )
        return {run.id: run.state.type if run.state else None for run in runs}


class InFlight:
    """At most ``limit`` of the sweep's runs not finished; ``submit`` waits for room."""

    def __init__(
        self,
        launcher: RunLauncher,
        limit: int,
        *,
        poll_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        warn_after_s: float = 120.0,
    ) -> None:
        if limit < 1:
            raise InvalidInputError(f"max_in_flight must be >= 1, got {limit}")
        self.launcher = launcher
        self.limit = limit
        self.poll_s = poll_s
        self.sleep = sleep
        self.warn_after_s = warn_after_s
        self.active: dict[UUID, str] = {}  # run id -> study UID
        self.created = 0  # new runs
        self.earlier = 0  # runs of an earlier sweep found by their key, already finished
        self.finished: Counter[str] = Counter()  # final state -> runs
        self.peak = 0
        self.waited_s = 0.0  # waiting for room under the cap
        self.submit_s = 0.0  # creating runs (Prefect API round trips)

    def refresh(self) -> None:
        if not self.active:
            return
        states = self.launcher.states(list(self.active))
        for run_id, state in states.items():
            if state in FINAL_STATES and run_id in self.active:
                del self.active[run_id]
                self.finished[str(state.value if state else "unknown")] += 1

    def wait_below(self, count: int) -> None:
        started = time.monotonic()
        warned = started
        while len(self.active) >= count:
            self.refresh()
            if len(self.active) < count:
                break
            if time.monotonic() - warned >= self.warn_after_s:
                warned = time.monotonic()
                log.warning(
                    "sweep waiting for %d run(s) to finish (%.0f s): is a worker serving "
                    "the pathway's deployment?",
                    len(self.active),
                    warned - started,
                )
            self.sleep(self.poll_s)
        self.waited_s += time.monotonic() - started

    def submit(
        self,
        deployment: str,
        parameters: dict[str, Any],
        *,
        study_uid: str,
        key: str,
        name: str,
        tags: list[str],
    ) -> UUID:
        self.wait_below(self.limit)
        started = time.monotonic()
        run_id, state = self.launcher.submit(deployment, parameters, key=key, name=name, tags=tags)
        self.submit_s += time.monotonic() - started
        if state in FINAL_STATES:
            self.earlier += 1
            self.finished[str(state.value if state else "unknown")] += 1
        elif run_id not in self.active:
            self.created += 1
            self.active[run_id] = study_uid
            self.peak = max(self.peak, len(self.active))
        return run_id

    def drain(self) -> None:
        """Wait until every run of the sweep has finished."""
        self.wait_below(1)
