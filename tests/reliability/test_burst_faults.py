"""Nothing lost, nothing doubled: a 200-study burst with faults injected while it runs.

One whole stack for the module, the scale-out configuration: two warm runners, and
pacsflow's, the Prefect server's and MLflow's databases on PostgreSQL (with the Prefect
server on SQLite a burst spends most of its time on "database is locked" retries; see
bench/RESULTS.md).

One burst of 200 studies is sent at once (the module fixture). While it is being worked
through, each fault test breaks one component and brings it back: the gateway crashed
(SIGKILL) and restarted, a runner killed, the Prefect server restarted, the archive down
for 30 s, the RIS down for 30 s, in that order (the file's order), each while work is in
flight (when the burst has run ahead of the faults, a fresh wave of studies is sent, and
accepted, before the fault). Each fault test checks
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

from .burst import Burst, Sent, at, log_lines, phi_pattern

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
TOP_UP_STUDIES = 3 * STILL_TO_DO
RECOVERY_S = 300.0
# A step this long before recovery, and the next one after it: the outage held it up.
HELD = timedelta(seconds=5)


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
    """Make sure the fault meets work: on a fast machine the burst can be done before the
    last faults (seen on a clean clone: 4 studies left after the runner-kill test), so a
    fresh wave is sent then. It joins `studies`, so the final checks cover it too."""
    left = burst.pending(studies)
    if left < STILL_TO_DO:
        wave = burst.make_studies(TOP_UP_STUDIES)
        burst.send_all(wave)
        studies.extend(wave)
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
    burst.kill("gateway")  # a crash: the last studies are still in their stable window
    crashed = _clock()  # the old process is dead by now
    burst.wait_seconds(2.0)
    burst.restart("gateway")
    # The gateway's own tables: studies the old process received but had not closed (or
    # closed but not dispatched) were closed or dispatched by the new one.
    _eventually(
        lambda: burst.gateway_finished(studies, crashed) > 0,
        "a study the crashed gateway held was closed or dispatched by the new process",
        timeout_s=60,
    )
    _no_failures_yet(burst, studies)


KILL_TRIES = 3


def test_runner_killed_mid_flow(burst: Burst, studies: list[Sent]) -> None:
    _still_to_do(burst, studies)
    # A burst study's flow takes about a second, so a run seen RUNNING can still finish
    # before the SIGKILL lands (seen in a clean-clone run); then the kill cut nothing, and
    # the runner is brought back and killed again on a fresher run.
    for _ in range(KILL_TRIES):
        in_flight = burst.running_on("worker-1", started_within_s=0.5)
        burst.kill("worker-1")  # its runs in flight die with it, mid-flow
        killed = _clock()
        cut = [r for r in in_flight if burst.flow_run_state(r) != "COMPLETED"]
        if cut:
            break
        burst.restart("worker-1")
    seen = [
        {k: run.get(k) for k in ("state_type", "start_time", "end_time", "run_count")}
        | {"pid": run.get("infrastructure_pid")}
        for run in map(burst.flow_run, in_flight)
    ]
    assert cut, f"every run of the runner finished before it was killed at {killed}: {seen}"
    burst.wait_seconds(5.0)
    burst.restart("worker-1")  # the dead runner's runs are found and scheduled again
    _eventually(_all_completed(burst, cut), f"the killed runner's {cut} completed")
    # Each was run again from the start, not merely marked finished.
    assert all(burst.flow_run(r)["run_count"] >= 2 for r in cut)
    _no_failures_yet(burst, studies)


def test_prefect_server_restarted_mid_burst(burst: Burst, studies: list[Sent]) -> None:
    _still_to_do(burst, studies)
    in_flight = burst.running_on(started_within_s=0.5)  # a 1 s flow: surely not finishing
    down = _clock()
    burst.outage("prefect", 5.0)
    # Runs in flight during the restart went on (task runs need no server) and their final
    # state reached the server once it was back.
    _eventually(_all_completed(burst, in_flight), f"runs in flight {in_flight} completed")
    ended = [at(burst.flow_run(r)["end_time"]) for r in in_flight]
    assert max(ended) > down, "every run in flight ended before the server went down"
    _no_failures_yet(burst, studies)


def test_archive_down_for_30_s_mid_burst(burst: Burst, studies: list[Sent]) -> None:
    _still_to_do(burst, studies)
    burst.running_on()  # work in flight, not only queued
    burst.outage("orthanc", OUTAGE_S)
    up = _clock()
    # Some runs had started well before the archive came back and stored their SR after it.
    _eventually(
        lambda: bool(burst.spanning(studies, "started", up - HELD, "archive_done", up)),
        "a run started while the archive was down stored its SR after it came back",
    )
    _no_failures_yet(burst, studies)


def test_ris_down_for_30_s_mid_burst(burst: Burst, studies: list[Sent]) -> None:
    _still_to_do(burst, studies)
    burst.running_on()  # work in flight, not only queued
    with burst.local.ris.offline():
        refused_from = len(burst.local.ris.received)
        burst.wait_seconds(OUTAGE_S)
        assert len(burst.local.ris.received) == refused_from  # really down
    up = _clock()
    # Some results were decided well before the RIS came back and reached it only after.
    _eventually(
        lambda: bool(burst.spanning(studies, "decided", up - HELD, "ris_done", up)),
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
