"""A burst of head CT studies through the whole stack, and the checks that nothing was lost
or written twice (issue 9, "Reliability tests").

The stack is the one `pacsflow stack up` starts (Orthanc, Prefect server, MLflow, gateway and
two warm runners as separate processes) with the recording MLLP RIS, the FHIR R4 test double
and a paging receiver in this process. Studies go the way the field sends them: each by its
own dcmtk `storescu` to the archive and to the gateway, many at once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from deployments.local_stack import LocalStack
from pacsflow.db.tables import OutboxEntry, PathwayRun, ReceivedStudy
from pacsflow.dicom.dicomweb import Archive
from pacsflow.governance.audit import AuditLog
from pacsflow.orchestration.prefect_api import RETRYABLE_STATUSES
from pacsflow.stack import services
from pacsflow.stack.process import ManagedProcess, pid_alive
from pacsflow.synth.truth import StudyTruth
from pacsflow.testing.dicom_factory import write_burst_head_ct

PATHWAY = "stroke_triage"
# At most this many storescu processes at once: below the gateway's 64 associations, as a
# modality fleet sending at the same moment would be.
SENDERS = 48


@dataclass
class Sent:
    truth: StudyTruth
    folder: Path


@dataclass
class Burst:
    local: LocalStack
    studies_dir: Path
    _next_seed: int = 10_000
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- studies ------------------------------------------------------------------------------
    def make_studies(self, count: int) -> list[Sent]:
        """``count`` new studies with seeds no other test of the module used."""
        with self._lock:
            first, self._next_seed = self._next_seed, self._next_seed + count
        made = []
        for seed in range(first, first + count):
            folder = self.studies_dir / f"s{seed}"
            truth = write_burst_head_ct(folder, seed)
            made.append(Sent(truth, folder))
        return made

    def send_all(self, studies: Sequence[Sent], senders: int = SENDERS) -> float:
        """Send every study at once (``senders`` storescu processes in flight); the seconds
        it took. Raises if any was refused: these tests only count accepted studies."""
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=senders) as pool:
            list(pool.map(lambda s: self.local.send(s.folder), studies))
        return time.monotonic() - started

    # -- waiting -----------------------------------------------------------------------------
    def wait_outcomes(self, studies: Sequence[Sent], timeout_s: float) -> dict[str, PathwayRun]:
        """Wait until every study has an outcome row (what is there at the deadline)."""
        return self.local.wait_outcomes([s.truth.study_uid for s in studies], timeout_s)

    def wait_idle(self, timeout_s: float = 120.0) -> int:
        """Wait until Prefect holds no scheduled, pending or running flow run (nothing is
        left that could still write); the number still active at the deadline."""
        url = self.local.settings.prefect.effective_api_url + "/flow_runs/count"
        deadline = time.monotonic() + timeout_s
        active = -1
        while time.monotonic() < deadline:
            due = datetime.now(UTC).isoformat()  # not the crons' runs of later hours
            states = {
                "flow_runs": {
                    "state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING"]}},
                    "expected_start_time": {"before_": due},
                }
            }
            active = int(self.prefect("POST", url, states))
            if active == 0:
                return 0
            time.sleep(1.0)
        return active

    @staticmethod
    def prefect(method: str, url: str, body: Any = None, timeout_s: float = 60.0) -> Any:
        """A read of the Prefect API that outlasts a busy (503) or restarting server, as
        the runners' own client does; the decoded JSON answer."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                response = httpx.request(method, url, json=body, timeout=30)
                if response.status_code not in RETRYABLE_STATUSES:
                    return response.raise_for_status().json()
                problem = f"answered {response.status_code}"
            except httpx.TransportError as exc:
                problem = f"unreachable: {exc}"
            if time.monotonic() > deadline:
                raise AssertionError(f"Prefect API {problem} for {timeout_s} s ({url})")
            time.sleep(1.0)

    def pending(self, studies: Sequence[Sent]) -> int:
        """Studies without an outcome yet."""
        return len(studies) - len(self.local.outcomes([s.truth.study_uid for s in studies]))

    def spanning(
        self, studies: Sequence[Sent], before: str, by: datetime, after: str, since: datetime
    ) -> int:
        """Studies whose ``before`` step happened before ``by`` and whose ``after`` step
        only after ``since``: the ones a fault between the two really held up."""
        outcomes = self.local.outcomes([s.truth.study_uid for s in studies])
        count = 0
        for run in outcomes.values():
            first, then = run.timings.get(before), run.timings.get(after)
            if first and then and at(first) < by and at(then) > since:
                count += 1
        return count

    def running_on(
        self, name: str | None = None, timeout_s: float = 120.0, started_within_s: float = 0.0
    ) -> list[str]:
        """Flow runs being executed right now, by the runner process ``name`` (it records
        host:pid as each run's infrastructure pid) or by any; waits until there is one.
        With ``started_within_s``, only runs that started that recently: surely mid-flow,
        not finishing (a run whose COMPLETED is already on its way to the server still
        reads RUNNING, and killing its runner then changes nothing)."""
        owner = f"{socket.gethostname()}:{self.service(name).pid()}" if name else None
        url = self.local.settings.prefect.effective_api_url + "/flow_runs/filter"
        query = {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}, "limit": 200}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = self.prefect("POST", url, query)
            now = datetime.now(UTC)
            mine = [
                r["id"]
                for r in runs
                if (owner is None or r.get("infrastructure_pid") == owner)
                and (
                    not started_within_s
                    or (
                        r.get("start_time") is not None
                        and (now - at(r["start_time"])).total_seconds() < started_within_s
                    )
                )
            ]
            if mine:
                return mine
            time.sleep(0.1)
        raise AssertionError(f"{name or 'no runner'} ran anything for {timeout_s} s")

    def flow_run(self, run_id: str) -> dict[str, Any]:
        url = f"{self.local.settings.prefect.effective_api_url}/flow_runs/{run_id}"
        run: dict[str, Any] = self.prefect("GET", url)
        return run

    def flow_run_state(self, run_id: str) -> str:
        return str(self.flow_run(run_id)["state"]["type"])

    def gateway_finished(self, studies: Sequence[Sent], crashed: datetime) -> int:
        """Studies the gateway held when it crashed (received, not yet closed; or closed,
        not yet dispatched) and closed or dispatched after: by the new process, since the
        old one was dead by ``crashed``."""
        uids = [s.truth.study_uid for s in studies]
        closed = self._count(
            ReceivedStudy,
            ReceivedStudy.study_uid.in_(uids),
            ReceivedStudy.last_received_at < crashed,
            ReceivedStudy.closed_at > crashed,
        )
        dispatched = self._count(
            OutboxEntry,
            OutboxEntry.study_uid.in_(uids),
            OutboxEntry.created_at < crashed,
            OutboxEntry.dispatched_at > crashed,
        )
        return closed + dispatched

    def _count(self, table: Any, *conditions: Any) -> int:
        with self.local.sessions() as session:
            found = session.scalar(select(func.count()).select_from(table).where(*conditions))
        return int(found or 0)

    # -- services -----------------------------------------------------------------------------
    def service(self, name: str) -> ManagedProcess:
        factories: dict[str, Callable[..., ManagedProcess]] = {
            "orthanc": services.orthanc_service,
            "prefect": services.prefect_service,
            "gateway": services.gateway_service,
        }
        if name in factories:
            return factories[name](self.local.settings)
        return next(w for w in services.worker_services(self.local.settings) if w.name == name)

    def outage(self, name: str, seconds: float) -> None:
        """The service is stopped (SIGTERM, then SIGKILL after its grace time), stays down
        for ``seconds`` and is started again on the same ports and state, ready."""
        assert self.service(name).stop(), f"{name} was not running"
        time.sleep(seconds)
        self.restart(name)

    def restart(self, name: str) -> None:
        proc = self.service(name)
        proc.start()
        proc.wait_ready()

    @staticmethod
    def wait_seconds(seconds: float) -> None:
        time.sleep(seconds)

    def kill(self, name: str) -> None:
        """SIGKILL the service's whole process group: a crash, no clean-up of any kind."""
        pid = self.service(name).pid()
        assert pid is not None, f"{name} was not running"
        os.killpg(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.05)

    # -- checks -------------------------------------------------------------------------------
    def outcome_rows(self, studies: Sequence[Sent]) -> Counter[str]:
        """Outcome rows per study (all model versions): exactly one is expected."""
        uids = [s.truth.study_uid for s in studies]
        with self.local.sessions() as session:
            rows = session.execute(
                select(PathwayRun.study_uid, func.count())
                .where(PathwayRun.study_uid.in_(uids), PathwayRun.pathway == PATHWAY)
                .group_by(PathwayRun.study_uid)
            )
            return Counter({uid: n for uid, n in rows})

    def duplicate_writes(self, studies: Sequence[Sent]) -> list[str]:
        """Every output counted at the receiving system itself, not in pacsflow's ledger:
        SR and SEG instances in the archive, ORUs the RIS accepted, FHIR DiagnosticReports
        the EHR holds, pages received. One line per study and output seen more than once."""
        problems: list[str] = []
        archive = Archive(self.local.settings.orthanc)
        for sent in studies:
            uid = sent.truth.study_uid
            modalities = Counter(
                item.get("00080060", {}).get("Value", ["?"])[0]
                for item in archive.study_metadata(uid)
            )
            for modality in ("SR", "SEG"):
                if modalities[modality] > 1:
                    problems.append(f"{uid}: {modalities[modality]} {modality} instances")
        by_accession = {s.truth.accession_number: s.truth.study_uid for s in studies}
        for kind in ("ORU^R01", "ORM^O01"):
            seen: Counter[str] = Counter()
            for message in self.local.ris.of_type(kind):
                text = message.to_er7()
                seen.update(acc for acc in by_accession if acc and acc in text)
            problems += [
                f"{by_accession[a]}: {n} {kind} accepted" for a, n in seen.items() if n > 1
            ]
        reports: Counter[str] = Counter()
        with self.local.ehr.store.lock:
            stored = list(self.local.ehr.store.resources.get("DiagnosticReport", {}).values())
        for resource in stored:
            text = json.dumps(resource)
            reports.update(s.truth.study_uid for s in studies if s.truth.study_uid in text)
        problems += [f"{u}: {n} DiagnosticReports" for u, n in reports.items() if n > 1]
        pages: Counter[str] = Counter()
        for body in list(self.local.pager.received):
            text = json.dumps(body)
            pages.update(s.truth.study_uid for s in studies if s.truth.study_uid in text)
        problems += [f"{u}: {n} pages" for u, n in pages.items() if n > 1]
        return problems

    def prefect_log_hits(self, pattern: re.Pattern[str]) -> list[str]:
        """Matches in the flow-run logs the runners sent to the Prefect server."""
        url = self.local.settings.prefect.effective_api_url + "/logs/filter"
        hits: list[str] = []
        offset = 0
        while True:
            page = self.prefect("POST", url, {"offset": offset, "limit": 200})
            hits += [m.group(0) for entry in page if (m := pattern.search(entry["message"]))]
            if len(page) < 200:
                return hits
            offset += len(page)

    def audit_problems(self) -> list[str]:
        return AuditLog(self.local.sessions).verify()


def at(value: str) -> datetime:
    """An ISO 8601 time from Prefect or a run's timings, always timezone-aware."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def phi_pattern(studies: Sequence[Sent]) -> re.Pattern[str]:
    """Patient names (each name part of 4+ letters) and birth dates of the studies, as a
    log line could carry them: DICOM DA and ISO 8601 (digits standing alone, so a UID that
    happens to contain the same digits is not a hit)."""
    words: set[str] = set()
    dates: set[str] = set()
    for sent in studies:
        words.update(p for p in re.split(r"[\^ ]", sent.truth.patient_name) if len(p) >= 4)
        da = sent.truth.patient_birth_date.replace("-", "")
        if len(da) == 8:
            dates.update({da, f"{da[:4]}-{da[4:6]}-{da[6:]}"})
    alternatives = [rf"\b{re.escape(w)}\b" for w in sorted(words)]
    alternatives += [rf"(?<![\d.]){re.escape(d)}(?![\d.])" for d in sorted(dates)]
    return re.compile("|".join(alternatives), flags=re.IGNORECASE)


def log_lines(var_dir: Path) -> Iterator[tuple[Path, int, str]]:
    for path in sorted((var_dir / "log").rglob("*.log")):
        with path.open(errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                yield path, number, line
