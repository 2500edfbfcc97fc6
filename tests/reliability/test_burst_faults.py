"""Nothing lost, nothing doubled: a 200-study burst with faults injected while it runs.

One whole stack for the module, the scale-out configuration: two warm runners, and
pacsflow's, the Prefect server's and MLflow's databases on PostgreSQL (with the Prefect
server on SQLite a burst spends most of its time on "database is locked" retries; see
bench/RESULTS.md).

One burst of 200 studies is sent at once (the module fixture). While it is being worked
through, each fault test breaks one component and brings it back: the gateway restarted,
a runner killed, the Prefect server restarted, the archive down for 30 s, the RIS down for
30 s, in that order (the file's order), each while work is in flight. Each fault test checks
that its fault really held up work in flight and that this work went on after recovery.
Then the last test waits for the whole burst: every study ends with exactly one outcome
row and none "failed" (everything was accepted before the faults), every output counted at
the system that received it (archive, RIS, EHR, pager) arrived once, and the audit chain
verifies. A fault test run on its own (-k) still has the burst to break.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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
OUTAGE_S = 30.0
WORKERS = 2
# Each fault must find at least this many studies still to do: work in flight and queued.
STILL_TO_DO = 10
RECOVERY_S = 300.0


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


@pytest.fixture(scope="module")
def studies(burst: Burst) -> list[Sent]:
    """The 200 studies, every one accepted by the archive and the gateway before any fault."""
    sent = burst.make_studies(BURST_STUDIES)
    burst.send_all(sent)
    return sent


def _clock() -> datetime:
    return datetime.now(UTC)


def _still_to_do(burst: Burst, studies: list[Sent]) -> None:
    left = burst.pending(studies)
    assert left >= STILL_TO_DO, f"only {left} studies left to break: the burst ran out"


def _eventually(check: Callable[[], bool], what: str, timeout_s: float = RECOVERY_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(1.0)


def _no_failures_yet(burst: Burst, studies: list[Sent]) -> None:
    outcomes = burst.local.outcomes([s.truth.study_uid for s in studies])
    failed = {uid: run.reasons for uid, run in outcomes.items() if run.outcome == "failed"}
    assert failed == {}


def _all_completed(burst: Burst, run_ids: list[str]) -> Callable[[], bool]:
    return lambda: all(burst.flow_run_state(run_id) == "COMPLETED" for run_id in run_ids)


def test_gateway_restarted_as_the_burst_arrives(burst: Burst, studies: list[Sent]) -> None:
    _still_to_do(burst, studies)
    down = _clock()
    burst.outage("gateway", 2.0)  # at once: many studies still closing or in the outbox
    up = _clock()
    # Studies received before the restart were closed, or dispatched, by the new process.
    _eventually(
        lambda: bool(
            burst.spanning(studies, "received", down, "closed", up)
            or burst.spanning(studies, "closed", down, "started", up)
        ),
        "a study the old gateway held was finished by the new one",
    )
    _no_failures_yet(burst, studies)


def test_runner_killed_mid_flow(burst: Burst, studies: list[Sent]) -> None:
    _still_to_do(burst, studies)
    in_flight = burst.running_on("worker-1")
    burst.kill("worker-1")  # its runs in flight die with it, mid-flow
    burst.wait_seconds(5.0)
    burst.restart("worker-1")  # the dead runner's runs are found and scheduled again
    _eventually(_all_completed(burst, in_flight), f"the killed runner's {in_flight} completed")
    _no_failures_yet(burst, studies)


def test_prefect_server_restarted_mid_burst(burst: Burst, studies: list[Sent]) -> None:
    _still_to_do(burst, studies)
    in_flight = burst.running_on()
    burst.outage("prefect", 5.0)
    # Runs in flight during the restart went on (task runs need no server) and their final
    # state reached the server once it was back.
    _eventually(_all_completed(burst, in_flight), f"runs in flight {in_flight} completed")
    _no_failures_yet(burst, studies)


def test_archive_down_for_30_s_mid_burst(burst: Burst, studies: list[Sent]) -> None:
    _still_to_do(burst, studies)
    burst.running_on()  # work in flight, not only queued
    down = _clock()
    burst.outage("orthanc", OUTAGE_S)
    up = _clock()
    # Some runs had started before the outage and stored their SR only after it.
    _eventually(
        lambda: bool(
            burst.spanning(studies, "started", down + timedelta(seconds=5), "archive_done", up)
        ),
        "a run started before the archive went down stored its SR after it came back",
    )
    _no_failures_yet(burst, studies)


def test_ris_down_for_30_s_mid_burst(burst: Burst, studies: list[Sent]) -> None:
    _still_to_do(burst, studies)
    with burst.local.ris.offline():
        down = _clock()
        refused_from = len(burst.local.ris.received)
        burst.wait_seconds(OUTAGE_S)
        assert len(burst.local.ris.received) == refused_from  # really down
    up = _clock()
    # Some results were decided early in the outage and reached the RIS only after it.
    _eventually(
        lambda: bool(
            burst.spanning(studies, "decided", down + timedelta(seconds=5), "ris_done", up)
        ),
        "a result decided while the RIS was down reached it after it came back",
    )
    _no_failures_yet(burst, studies)


def test_every_study_of_the_burst_ends_once_with_nothing_written_twice(
    burst: Burst, studies: list[Sent]
) -> None:
    uids = [s.truth.study_uid for s in studies]
    outcomes = burst.wait_outcomes(studies, timeout_s=1200)
    missing = [uid for uid in uids if uid not in outcomes]
    assert not missing, f"{len(missing)} of {len(studies)} studies have no outcome: {missing[:3]}"
    assert burst.wait_idle() == 0, "flow runs still active after every outcome"
    rows = burst.outcome_rows(studies)
    assert {uid: n for uid, n in rows.items() if n != 1} == {}
    assert burst.duplicate_writes(studies) == []
    assert burst.audit_problems() == []
    # Accepted before every fault, so each must complete: no explicit failures either, and
    # the model read every study (none "not analysed").
    outcomes = burst.local.outcomes(uids)
    assert {run.outcome for run in outcomes.values()} <= {"critical", "urgent", "routine", "review"}
    bleeding = [s for s in studies if s.truth.lesions]
    assert any(outcomes[s.truth.study_uid].outcome == "critical" for s in bleeding)
    # Every study that was read got its ORU at the RIS (once, checked above).
    assert len(burst.local.ris.of_type("ORU^R01")) >= len(studies)


def test_no_patient_name_or_birth_date_in_any_service_log_of_the_burst(
    burst: Burst, studies: list[Sent]
) -> None:
    burst.wait_outcomes(studies, timeout_s=1200)
    pattern = phi_pattern(studies)
    hits = [
        f"{path.name}:{number}: {match.group(0)}"
        for path, number, line in log_lines(burst.local.settings.paths.var_dir)
        for match in [pattern.search(line)]
        if match
    ]
    hits += [f"prefect flow-run log: {m}" for m in burst.prefect_log_hits(pattern)]
    assert hits == []
