"""Turns due outbox rows into Prefect flow runs, with back-off while Prefect is away."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import OutboxEntry
from pacsflow.errors import PermanentError, TransientError
from pacsflow.gateway.outbox import Outbox
from pacsflow.orchestration.prefect_api import PrefectApi

log = logging.getLogger(__name__)

# pathway name -> "flow-name/deployment-name" (deployments/catalog.py registers these; a
# test keeps the two in step). A routed pathway missing here ends as a dead outbox row
# with the reason.
DEPLOYMENTS: dict[str, str] = {
    "stroke_triage": "stroke-triage/stroke-triage",
    "nodule_followup": "nodule-followup/nodule-followup",
}


def run_name(row: OutboxEntry) -> str:
    """A readable run name: accession or study UID, never a patient name."""
    accession = row.parameters.get("accession_number")
    ident = accession or (row.study_uid or "")[-12:]
    return f"{row.pathway}-{ident}-{row.id}"


class Dispatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        prefect: PrefectApi,
        *,
        max_attempts: int = 10,
        deployments: dict[str, str] | None = None,
        on_dispatched: Callable[[OutboxEntry], None] | None = None,
    ) -> None:
        self.outbox = Outbox(sessions)
        self.sessions = sessions
        self.prefect = prefect
        self.max_attempts = max_attempts
        self.deployments = deployments or DEPLOYMENTS
        self.on_dispatched = on_dispatched
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def dispatch_due(self, limit: int = 20) -> int:
        """Dispatch up to `limit` due rows; returns how many got a flow run.

        One row per transaction: on PostgreSQL the row stays locked (FOR UPDATE SKIP LOCKED)
        until its new state is committed, so several dispatchers never take the same row."""
        done = 0
        for _ in range(limit):
            if self._stop.is_set():
                break
            with self.sessions() as session:
                rows = self.outbox.due(session, 1)
                if not rows:
                    break
                if self._dispatch(rows[0]):
                    done += 1
                session.commit()
        return done

    def _dispatch(self, row: OutboxEntry) -> bool:
        deployment = self.deployments.get(row.pathway)
        if deployment is None:
            Outbox.mark_failed(
                row, f"no deployment for pathway {row.pathway!r}", max_attempts=1, permanent=True
            )
            log.error("outbox %s dead: unknown pathway %s", row.id, row.pathway)
            return False
        try:
            run_id = self.prefect.create_flow_run(
                deployment,
                row.parameters,
                idempotency_key=row.idempotency_key,
                name=run_name(row),
                tags=[f"source:{row.source}", f"pathway:{row.pathway}"],
            )
        except TransientError as exc:
            Outbox.mark_failed(row, str(exc), max_attempts=self.max_attempts, permanent=False)
            log.warning("outbox %s: attempt %s failed: %s", row.id, row.attempts, exc)
            return False
        except PermanentError as exc:
            Outbox.mark_failed(row, str(exc), max_attempts=self.max_attempts, permanent=True)
            log.error("outbox %s dead: %s", row.id, exc)
            return False
        Outbox.mark_dispatched(row, run_id)
        log.info("outbox %s -> flow run %s (%s)", row.id, run_id, row.pathway)
        try:
            self.prefect.emit_event(
                "pacsflow.trigger.dispatched",
                f"pacsflow.study.{row.study_uid}",
                {"pathway": row.pathway, "source": row.source, "flow_run_id": run_id},
            )
        except (TransientError, PermanentError) as exc:  # visibility only; never blocks a run
            log.debug("event not recorded: %s", exc)
        if self.on_dispatched:
            self.on_dispatched(row)
        return True

    def wake(self) -> None:
        self._wake.set()

    def start(self, poll_s: float = 1.0) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.dispatch_due()
                except Exception:  # the loop must survive a bad pass (DB busy, ...)
                    log.exception("dispatcher pass failed")
                self._wake.wait(poll_s)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="outbox-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
