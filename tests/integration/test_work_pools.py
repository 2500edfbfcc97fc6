"""Work pools on a real Prefect server: deployments registered in the pool of their route,
and two warm runners of different pools, where each run is claimed by its pool's runner.

The runners are `WarmRunner` objects in threads of this process (what a runner process
runs), each with its own thread name, so the flow can tell which one executed it.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from uuid import UUID

import pytest
from prefect import flow

from pacsflow.config.settings import WorkersSettings

pytestmark = [pytest.mark.prefect]

# A guard so a bug hangs no test run; no assertion depends on timing.
GUARD_S = 45
EXECUTED: list[tuple[str, str]] = []  # (flow name, thread name) of every run


@flow(name="pool-probe-cpu")
def probe_cpu() -> None:
    EXECUTED.append(("pool-probe-cpu", threading.current_thread().name))


@flow(name="pool-probe-gpu")
def probe_gpu() -> None:
    EXECUTED.append(("pool-probe-gpu", threading.current_thread().name))


@pytest.fixture
def prefect_env(prefect_api_url: str) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api_url}):
        yield


def _wait_final(run_id: UUID) -> str:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + GUARD_S
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(run_id).state
            if state is not None and state.is_final():
                return str(state.type.value)
            if time.monotonic() > deadline:
                return f"not final after {GUARD_S} s: {state}"
            time.sleep(0.2)


def test_runs_are_claimed_only_by_the_runner_of_their_pool(prefect_env: None) -> None:
    from prefect.client.orchestration import get_client

    from deployments.catalog import DeploymentSpec
    from deployments.serve import WarmRunner, register_in_pools, served_deployments

    specs = [
        DeploymentSpec("probe_cpu", probe_cpu, "probe", "cpu-routed probe", dispatched=False),
        DeploymentSpec("probe_gpu", probe_gpu, "probe", "gpu-routed probe", dispatched=False),
    ]
    workers = WorkersSettings(routes={"probe_cpu": "cpu", "probe_gpu": "gpu"})
    registered = register_in_pools(specs, workers)
    assert register_in_pools(specs, workers).keys() == registered.keys()  # idempotent
    by_pathway = {r.spec.pathway: dep_id for dep_id, r in registered.items()}
    with get_client(sync_client=True) as client:
        for pathway, pool in (("probe_cpu", "pacsflow-cpu"), ("probe_gpu", "pacsflow-gpu")):
            assert client.read_deployment(by_pathway[pathway]).work_pool_name == pool
            assert client.read_work_pool(pool).type == "process"

    pool_of = {dep_id: r.pool for dep_id, r in registered.items()}
    runners = {
        pool: WarmRunner(
            {i: registered[i].flow for i in served_deployments(pool_of, [pool])},
            concurrency=1,
            poll_s=0.3,
            name=f"runner-{pool}",
        )
        for pool in ("cpu", "gpu")
    }
    assert set(runners["cpu"].deployments) == {by_pathway["probe_cpu"]}
    # Each runner thread (and so its runs) under this test's Prefect settings context.
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(r.run,), daemon=True)
        for r in runners.values()
    ]
    for thread in threads:
        thread.start()
    EXECUTED.clear()
    try:
        with get_client(sync_client=True) as client:
            cpu_run = client.create_flow_run_from_deployment(by_pathway["probe_cpu"]).id
        assert _wait_final(cpu_run) == "COMPLETED"
        assert [(name, thread.split("_")[0]) for name, thread in EXECUTED] == [
            ("pool-probe-cpu", "runner-cpu")
        ]
        with get_client(sync_client=True) as client:
            gpu_run = client.create_flow_run_from_deployment(by_pathway["probe_gpu"]).id
            assert client.read_flow_run(cpu_run).infrastructure_pid  # the claim's owner
        assert _wait_final(gpu_run) == "COMPLETED"
        assert [(name, thread.split("_")[0]) for name, thread in EXECUTED] == [
            ("pool-probe-cpu", "runner-cpu"),
            ("pool-probe-gpu", "runner-gpu"),
        ]
    finally:
        for runner in runners.values():
            runner.stop_event.set()
        for thread in threads:
            thread.join(timeout=GUARD_S)
