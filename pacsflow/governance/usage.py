"""Usage and cost of the AI pathways: how many inferences, how much compute, how fast the
flag reached the radiologist, per model version, pathway and department.

Built from pathway_runs (outcome, timings, score), joined to the worklist row of the study
(model name, department) and the order context (a "department" the RIS sent, when it did).

Timings a run records (ISO-8601 stamps unless named *_s): received (last instance at the
gateway), closed, started, inferred, decided, <writeback>_done; and, when the flow records
them, inference_s (wall seconds of the model call) and inference_cpu_s (CPU seconds of it,
measured with `CpuClock`).

Time-to-flag = from the last instance received to the last writeback done (as in
bench/bench_time_to_flag.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import Order, PathwayRun, WorklistItem
from pacsflow.domain import Priority
from pacsflow.governance.feedback_metrics import rows_to_csv

UNKNOWN = "unknown"


class CpuClock:
    """CPU seconds spent inside a `with` block: the whole process's (includes torch's
    intra-op threads, and any other flow run in the process at the same time) and the
    calling thread's (excludes both). With one run at a time, `process_s` is the cost."""

    process_s: float = 0.0
    thread_s: float = 0.0
    wall_s: float = 0.0

    def __enter__(self) -> CpuClock:
        self._p, self._t, self._w = time.process_time(), time.thread_time(), time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.process_s = time.process_time() - self._p
        self.thread_s = time.thread_time() - self._t
        self.wall_s = time.perf_counter() - self._w


def _stamp(timings: Mapping[str, Any], key: str) -> datetime | None:
    value = timings.get(key)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _seconds(timings: Mapping[str, Any], key: str) -> float | None:
    value = timings.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def last_done(timings: Mapping[str, Any]) -> datetime | None:
    stamps = [_stamp(timings, k) for k in timings if k.endswith("_done")]
    found = [s for s in stamps if s is not None]
    return max(found) if found else None


def time_to_flag_s(timings: Mapping[str, Any]) -> float | None:
    """Seconds from the last instance received to the last writeback done."""
    received, done = _stamp(timings, "received"), last_done(timings)
    if received is None or done is None:
        return None
    return max(0.0, (done - received).total_seconds())


def inference_seconds(timings: Mapping[str, Any]) -> float | None:
    """Wall seconds of the model call when recorded, else started -> inferred (which also
    holds retrieval and validation)."""
    recorded = _seconds(timings, "inference_s")
    if recorded is not None:
        return recorded
    started, inferred = _stamp(timings, "started"), _stamp(timings, "inferred")
    if started is None or inferred is None:
        return None
    return max(0.0, (inferred - started).total_seconds())


def flow_seconds(timings: Mapping[str, Any]) -> float | None:
    """Wall seconds of the flow run: started -> last writeback done."""
    started, done = _stamp(timings, "started"), last_done(timings)
    if started is None or done is None:
        return None
    return max(0.0, (done - started).total_seconds())


@dataclass(frozen=True)
class RunRecord:
    """One pathway run with what usage needs (identifiers and times only)."""

    study_uid: str
    pathway: str
    model_name: str
    model_version: str
    department: str
    outcome: str
    timings: Mapping[str, Any]
    inferred: bool
    finished_at: datetime


@dataclass(frozen=True)
class UsageRow:
    model_name: str
    model_version: str
    pathway: str
    department: str
    runs: int
    inferences: int
    failed: int
    not_analysed: int
    inference_s: float  # summed wall seconds of model calls
    cpu_s: float | None  # summed CPU seconds where recorded (cpu_runs of the inferences)
    cpu_runs: int
    flow_s: float  # summed wall seconds of whole runs
    time_to_flag_p50_s: float | None
    time_to_flag_p95_s: float | None
    time_to_flag_n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


USAGE_COLUMNS = tuple(UsageRow.__dataclass_fields__)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def summarize_usage(runs: Iterable[RunRecord]) -> list[UsageRow]:
    """One row per (model name, model version, pathway, department), sorted."""
    groups: dict[tuple[str, str, str, str], list[RunRecord]] = {}
    for run in runs:
        key = (run.model_name, run.model_version, run.pathway, run.department)
        groups.setdefault(key, []).append(run)
    rows = []
    for (name, version, pathway, department), group in sorted(groups.items()):
        inferred = [r for r in group if r.inferred]
        wall = [s for r in inferred if (s := inference_seconds(r.timings)) is not None]
        cpu = [s for r in inferred if (s := _seconds(r.timings, "inference_cpu_s")) is not None]
        flows = [s for r in group if (s := flow_seconds(r.timings)) is not None]
        ttf = [s for r in group if (s := time_to_flag_s(r.timings)) is not None]
        rows.append(
            UsageRow(
                model_name=name,
                model_version=version,
                pathway=pathway,
                department=department,
                runs=len(group),
                inferences=len(inferred),
                failed=sum(r.outcome == "failed" for r in group),
                not_analysed=sum(r.outcome == Priority.NOT_ANALYSED.value for r in group),
                inference_s=round(sum(wall), 3),
                cpu_s=_r(sum(cpu)) if cpu else None,
                cpu_runs=len(cpu),
                flow_s=round(sum(flows), 3),
                time_to_flag_p50_s=_r(percentile(ttf, 50)),
                time_to_flag_p95_s=_r(percentile(ttf, 95)),
                time_to_flag_n=len(ttf),
            )
        )
    return rows


def usage_csv(rows: Sequence[UsageRow]) -> str:
    return rows_to_csv([r.as_dict() for r in rows], USAGE_COLUMNS)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def load_run_records(
    sessions: sessionmaker[Session], since: datetime | None = None
) -> list[RunRecord]:
    """Pathway runs finished since `since` (all when None), with model name and department
    from the study's worklist row and order context ("unknown" when neither says)."""
    with sessions() as session:
        query = select(PathwayRun).order_by(PathwayRun.id)
        if since is not None:
            query = query.where(PathwayRun.finished_at >= since)
        runs = session.scalars(query).all()
        uids = sorted({r.study_uid for r in runs})
        worklist: dict[str, WorklistItem] = {}
        for start in range(0, len(uids), 500):  # stay under SQL parameter limits
            chunk = uids[start : start + 500]
            for item in session.scalars(
                select(WorklistItem).where(WorklistItem.study_uid.in_(chunk))
            ):
                worklist[item.study_uid] = item
        accessions = sorted({w.accession_number for w in worklist.values() if w.accession_number})
        order_department: dict[str, str] = {}
        for start in range(0, len(accessions), 500):
            chunk = accessions[start : start + 500]
            for order in session.scalars(select(Order).where(Order.accession_number.in_(chunk))):
                department = (order.context or {}).get("department")
                if isinstance(department, str) and department.strip():
                    order_department[order.accession_number] = department.strip()
    records = []
    for run in runs:
        item = worklist.get(run.study_uid)
        features = run.features or {}
        department, model_name = UNKNOWN, features.get("model_name")
        if item is not None:
            department = order_department.get(item.accession_number or "", item.department)
            model_name = model_name or item.model_name
        timings = dict(run.timings or {})
        records.append(
            RunRecord(
                study_uid=run.study_uid,
                pathway=run.pathway,
                model_name=str(model_name or UNKNOWN),
                model_version=run.model_version or "",
                department=department or UNKNOWN,
                outcome=run.outcome,
                timings=timings,
                inferred=run.score is not None or "inferred" in timings,
                finished_at=_utc(run.finished_at),
            )
        )
    return records
