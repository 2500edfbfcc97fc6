"""Run bookkeeping every pathway flow shares: waiting for the parallel writebacks with their
finish times, and the explicit "failed" outcome when a run raises."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture

from pacsflow.governance.audit import AuditLog
from pacsflow.pathways.outcomes import record_outcome
from tasks._runtime import env


def now() -> str:
    return datetime.now(UTC).isoformat()


def await_writebacks(
    futures: Mapping[str, PrefectFuture[Any]], timings: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Results of the writebacks that succeeded (each with its finish time in ``timings``
    as "<name>_done") and one line per writeback that failed after its retries."""
    written: dict[str, Any] = {}
    failures: list[str] = []
    for name, future in futures.items():
        future.wait()
        state = future.state
        if state.is_completed():
            written[name] = future.result()
            timings[f"{name}_done"] = state.timestamp.isoformat()  # when it really finished
        else:
            failures.append(f"{name}: {state.message}")
    return written, failures


def record_failure(
    *,
    pathway: str,
    study_uid: str,
    accession_number: str | None,
    model_version: str,
    timings: dict[str, Any],
    run_id: str | None,
    audit: AuditLog,
    error: Exception,
) -> None:
    """Every study ends with an explicit outcome, a failure included."""
    record_outcome(
        env().sessions,
        study_uid=study_uid,
        pathway=pathway,
        model_version=model_version,
        outcome="failed",
        reasons=[f"{type(error).__name__}: {error}"],
        timings=timings,
        features={},
        score=None,
        flow_run_id=run_id,
    )
    audit.append("pacsflow", "pathway.failed", study_uid, {"error": type(error).__name__})
    get_run_logger().error("study %s failed: %s", accession_number or study_uid, error)
