"""Nothing lost, nothing doubled: a 200-study burst, and faults injected during bursts.

One whole stack for the module, the scale-out configuration: two warm runners, and
pacsflow's, the Prefect server's and MLflow's databases on PostgreSQL (with the Prefect
server on SQLite a burst spends most of its time on "database is locked" retries; see
bench/RESULTS.md). Each test has its own studies. Every study must end with exactly one
outcome row; every output is counted at the system that received it (archive, RIS, EHR,
pager), and none may arrive twice. The fault tests send their
burst first ("accepted before the fault"), break one component once the first outcomes are
in, bring it back, and require every study to complete (no "failed" outcome).

The fault bursts are smaller than the first one (FAULT_STUDIES) so the module fits a CI run;
PACSFLOW_FAULT_STUDIES=200 runs each fault with the full burst.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest

from deployments.local_stack import local_stack
from pacsflow.testing.postgres import fresh_databases, stack_overrides

from .burst import Burst, Sent, log_lines, phi_pattern

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.slow,
    pytest.mark.orthanc,
    pytest.mark.prefect,
    pytest.mark.mlflow,
    pytest.mark.dcmtk,
    pytest.mark.postgres,
]

BURST_STUDIES = 200
FAULT_STUDIES = int(os.environ.get("PACSFLOW_FAULT_STUDIES", "24"))
OUTAGE_S = 30.0
WORKERS = 2


@pytest.fixture(scope="module")
def burst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Burst]:
    with ExitStack() as resources:
        # No PostgreSQL is an error, not a skip: CI has one (127.0.0.1:5432).
        databases = resources.enter_context(
            fresh_databases(["pacsflow", "prefect", "mlflow"], prefix="burst")
        )
        local = resources.enter_context(
            local_stack(
                tmp_path_factory.mktemp("burst-var"),
                stable_window_s=2.0,
                workers={"count": WORKERS},
                **stack_overrides(databases),
            )
        )
        yield Burst(local, tmp_path_factory.mktemp("burst-studies"))


def _completed_exactly_once(burst: Burst, studies: list[Sent], timeout_s: float) -> None:
    outcomes = burst.wait_outcomes(studies, timeout_s)
    missing = [s.truth.study_uid for s in studies if s.truth.study_uid not in outcomes]
    assert not missing, f"{len(missing)} of {len(studies)} studies have no outcome: {missing[:3]}"
    assert burst.wait_idle() == 0, "flow runs still active after every outcome"
    rows = burst.outcome_rows(studies)
    assert {uid: n for uid, n in rows.items() if n != 1} == {}
    assert burst.duplicate_writes(studies) == []
    assert burst.audit_problems() == []


def _no_failures(burst: Burst, studies: list[Sent]) -> None:
    outcomes = burst.local.outcomes([s.truth.study_uid for s in studies])
    failed = {uid: run.reasons for uid, run in outcomes.items() if run.outcome == "failed"}
    assert failed == {}


def test_burst_of_200_studies_each_ends_once_with_nothing_written_twice(burst: Burst) -> None:
    studies = burst.make_studies(BURST_STUDIES)
    burst.send_all(studies)
    _completed_exactly_once(burst, studies, timeout_s=900)
    outcomes = burst.local.outcomes([s.truth.study_uid for s in studies])
    # Explicit failures would be allowed here, but with every system up there are none,
    # and the model read every study (none "not analysed").
    assert {run.outcome for run in outcomes.values()} <= {"critical", "urgent", "routine", "review"}
    bleeding = [s for s in studies if s.truth.lesions]
    assert any(outcomes[s.truth.study_uid].outcome == "critical" for s in bleeding)
    # Every study that was read got its ORU at the RIS (once, checked above).
    assert len(burst.local.ris.of_type("ORU^R01")) >= len(studies)


def test_no_patient_name_or_birth_date_in_any_service_log_of_the_burst(burst: Burst) -> None:
    studies = burst.make_studies(10)
    burst.send_all(studies)
    _completed_exactly_once(burst, studies, timeout_s=300)
    pattern = phi_pattern(studies)
    hits = [
        f"{path.name}:{number}: {match.group(0)}"
        for path, number, line in log_lines(burst.local.settings.paths.var_dir)
        for match in [pattern.search(line)]
        if match
    ]
    hits += [f"prefect flow-run log: {m}" for m in burst.prefect_log_hits(pattern)]
    assert hits == []


def _clock() -> datetime:
    return datetime.now(UTC)


def _started_burst(burst: Burst) -> list[Sent]:
    """A burst accepted in full and under way: some outcomes in, most still to come."""
    studies = burst.make_studies(FAULT_STUDIES)
    burst.send_all(studies)
    burst.wait_first_outcomes(studies, 2, timeout_s=240)
    assert burst.pending(studies) > 0
    return studies


def test_archive_down_for_30_s_during_a_burst(burst: Burst) -> None:
    studies = _started_burst(burst)
    down = _clock()
    burst.outage("orthanc", OUTAGE_S)
    up = _clock()
    _completed_exactly_once(burst, studies, timeout_s=600)
    _no_failures(burst, studies)
    # Some runs had started before the outage and stored their SR only after it.
    assert burst.spanning(studies, "started", down + timedelta(seconds=5), "archive_done", up)


def test_ris_down_for_30_s_during_a_burst(burst: Burst) -> None:
    studies = _started_burst(burst)
    with burst.local.ris.offline():
        down = _clock()
        refused_from = len(burst.local.ris.received)
        burst.wait_seconds(OUTAGE_S)
        assert len(burst.local.ris.received) == refused_from  # really down
    up = _clock()
    _completed_exactly_once(burst, studies, timeout_s=600)
    _no_failures(burst, studies)
    # Some results were decided early in the outage and reached the RIS only after it.
    assert burst.spanning(studies, "decided", down + timedelta(seconds=5), "ris_done", up)


def test_worker_killed_mid_flow(burst: Burst) -> None:
    studies = _started_burst(burst)
    in_flight = burst.running_on("worker-1")
    burst.kill("worker-1")  # its runs in flight die with it, mid-flow
    burst.wait_seconds(5.0)
    burst.restart("worker-1")  # finds the dead runner's runs and schedules them again
    _completed_exactly_once(burst, studies, timeout_s=600)
    _no_failures(burst, studies)
    assert {run_id: burst.flow_run_state(run_id) for run_id in in_flight} == {
        run_id: "COMPLETED" for run_id in in_flight
    }


def test_prefect_server_restarted_during_a_burst(burst: Burst) -> None:
    studies = _started_burst(burst)
    in_flight = burst.running_on()
    burst.outage("prefect", 5.0)
    _completed_exactly_once(burst, studies, timeout_s=600)
    _no_failures(burst, studies)
    # Runs in flight during the restart went on (task runs need no server) and their final
    # state reached the server once it was back.
    assert {run_id: burst.flow_run_state(run_id) for run_id in in_flight} == {
        run_id: "COMPLETED" for run_id in in_flight
    }


def test_gateway_restarted_during_a_burst(burst: Burst) -> None:
    studies = burst.make_studies(FAULT_STUDIES)
    burst.send_all(studies)
    assert burst.pending(studies) > 0
    down = _clock()
    burst.outage("gateway", 2.0)  # at once: most studies still closing or in the outbox
    up = _clock()
    _completed_exactly_once(burst, studies, timeout_s=600)
    _no_failures(burst, studies)
    # Studies received before the restart were closed (or dispatched) by the new process.
    assert burst.spanning(studies, "received", down, "closed", up) or burst.spanning(
        studies, "closed", down, "started", up
    )
