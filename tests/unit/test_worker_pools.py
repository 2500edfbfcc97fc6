"""Work pools: the `workers` settings, which deployments a runner serves, the runner
processes of the local stack, and the inference device a runner picks."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4

import pytest
import torch

from pacsflow.cli.main import build_parser
from pacsflow.config import Settings, load_settings
from pacsflow.config.settings import DEFAULT_WORKER_ROUTES, settings_to_toml
from pacsflow.errors import ConfigError
from pacsflow.stack import stack
from pacsflow.stack.process import ManagedProcess, pid_alive
from pacsflow.stack.services import worker_services

# --- settings -----------------------------------------------------------------------------


def test_defaults_one_runner_of_every_pool_and_inference_on_gpu() -> None:
    w = load_settings().workers
    assert (w.count, w.gpu_count, w.concurrency) == (1, 0, 2)
    assert w.pool_of("stroke_triage") == w.pool_of("nodule_followup") == "gpu"
    for pathway in ("drift_monitor", "screening_cohort", "archive_sweep"):
        assert w.pool_of(pathway) == "cpu"
    assert w.pool_of("a_pathway_nobody_routed") == "cpu"


def test_routes_given_are_merged_over_the_defaults() -> None:
    w = load_settings(workers={"routes": {"stroke_triage": "cpu"}}).workers
    assert w.pool_of("stroke_triage") == "cpu"
    assert w.pool_of("nodule_followup") == "gpu"  # still the default
    assert set(w.routes) == set(DEFAULT_WORKER_ROUTES)


def test_a_pool_other_than_cpu_or_gpu_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"workers\.routes.*'stroke_triage': 'tpu'"):
        load_settings(workers={"routes": {"stroke_triage": "tpu"}})


@pytest.mark.parametrize(
    ("count", "gpu_count", "message"),
    [
        (0, 0, "at least 1"),
        (-1, 2, "greater than or equal to 0"),
        (1, -1, "greater than or equal to 0"),
    ],
)
def test_runner_counts_are_checked(count: int, gpu_count: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(workers={"count": count, "gpu_count": gpu_count})


def test_gpu_runners_alone_are_allowed() -> None:
    w = load_settings(workers={"count": 0, "gpu_count": 2}).workers
    assert (w.count, w.gpu_count) == (0, 2)


def test_concurrency_is_at_least_one() -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        load_settings(workers={"concurrency": 0})


def test_environment_sets_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACSFLOW_WORKERS_GPU_COUNT", "2")
    monkeypatch.setenv("PACSFLOW_WORKERS_ROUTES", '{"drift_monitor": "gpu"}')
    w = load_settings().workers
    assert w.gpu_count == 2
    assert w.pool_of("drift_monitor") == "gpu"
    assert w.pool_of("stroke_triage") == "gpu"


def test_workers_survive_the_effective_toml(tmp_path: Path) -> None:
    settings = load_settings(workers={"count": 3, "routes": {"archive_sweep": "gpu"}})
    text = settings_to_toml(settings)
    assert tomllib.loads(text)["workers"]["routes"]["archive_sweep"] == "gpu"
    path = tmp_path / "effective.toml"
    path.write_text(text)
    again = load_settings(path).workers
    assert again == settings.workers


# --- which deployments a runner serves ------------------------------------------------------


def test_a_runner_serves_only_the_deployments_of_its_pools() -> None:
    from deployments.serve import served_deployments

    cpu_a, cpu_b, gpu = uuid4(), uuid4(), uuid4()
    pool_of = {cpu_a: "cpu", cpu_b: "cpu", gpu: "gpu"}
    assert served_deployments(pool_of, ["cpu"]) == {cpu_a, cpu_b}
    assert served_deployments(pool_of, ["gpu"]) == {gpu}
    assert served_deployments(pool_of, ["cpu", "gpu"]) == {cpu_a, cpu_b, gpu}
    assert served_deployments(pool_of, []) == set()
    assert served_deployments({}, ["cpu"]) == set()


def test_prefect_work_pools_are_prefixed() -> None:
    from deployments.serve import work_pool_name

    assert work_pool_name("cpu") == "pacsflow-cpu"
    assert work_pool_name("gpu") == "pacsflow-gpu"


def test_runner_refuses_an_unknown_pool_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from deployments.serve import main

    with pytest.raises(SystemExit) as exited:
        main(["--pool", "tpu"])
    assert exited.value.code == 2
    assert "invalid pool 'tpu'" in capsys.readouterr().err


def test_cli_serve_takes_repeated_pools_and_web_a_port() -> None:
    parser = build_parser()
    serve = parser.parse_args(["serve", "--pool", "cpu", "--pool", "gpu"])
    assert serve.pool == ["cpu", "gpu"] and serve.concurrency is None
    assert parser.parse_args(["serve", "--pool", "cpu,gpu"]).pool == ["cpu", "gpu"]
    assert parser.parse_args(["serve"]).pool is None
    web = parser.parse_args(["web", "--port", "9443"])
    assert (web.port, web.host) == (9443, None)
    for bad in ("tpu", "cpu,tpu", ","):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "--pool", bad])


# --- runner processes of the local stack --------------------------------------------------


def _settings(tmp_path: Path, **workers: int) -> Settings:
    return load_settings(paths={"var_dir": tmp_path / "var"}, workers=workers)


def test_worker_services_name_every_runner_and_its_pools(tmp_path: Path) -> None:
    procs = worker_services(_settings(tmp_path, count=2, gpu_count=1, concurrency=3))
    assert [p.name for p in procs] == ["worker-1", "worker-2", "worker-gpu-1"]
    assert len({p.pid_file for p in procs}) == len({p.log_file for p in procs}) == 3
    every, _, gpu = procs
    assert list(every.argv[1:]) == [
        "-m",
        "deployments.serve",
        "--pool",
        "cpu",
        "--pool",
        "gpu",
        "--concurrency",
        "3",
    ]
    assert list(gpu.argv[1:]) == ["-m", "deployments.serve", "--pool", "gpu", "--concurrency", "3"]
    config = Path(every.env["PACSFLOW_CONFIG_FILE"])
    assert load_settings(config).workers.gpu_count == 1


def test_stack_urls_list_every_configured_runner(tmp_path: Path) -> None:
    urls = stack.service_urls(_settings(tmp_path, count=1, gpu_count=2))
    assert {"worker-1", "worker-gpu-1", "worker-gpu-2"} <= set(urls)
    assert "worker-2" not in urls


def _sleeper(settings: Settings, name: str) -> ManagedProcess:
    return ManagedProcess(
        name=name,
        argv=[sys.executable, "-c", "import time; time.sleep(60)"],
        run_dir=settings.paths.run_dir,
        log_dir=settings.paths.log_dir,
        ports=[],
        ready=lambda: True,
        stop_timeout_s=5,
    )


def test_down_also_stops_runners_the_configuration_no_longer_names(tmp_path: Path) -> None:
    settings = _settings(tmp_path, count=1)
    # The single runner before work pools, and a third runner of an earlier configuration.
    legacy, extra = _sleeper(settings, "worker"), _sleeper(settings, "worker-3")
    pids = [legacy.start(), extra.start()]
    (settings.paths.run_dir / "workerbee.pid").write_text(str(pids[0]))  # not a runner name
    try:
        rows = {row.name: row for row in stack.status(settings)}
        assert rows["worker"].running and rows["worker-3"].running
        assert not rows["worker-1"].running
        assert "workerbee" not in rows
        said: list[str] = []
        stack.down(settings, echo=said.append)
        assert "worker: stopped" in said and "worker-3: stopped" in said
        assert "worker-1: not running" in said
        assert not any(pid_alive(pid) for pid in pids)
        assert {r.name for r in stack.status(settings)}.isdisjoint({"worker", "worker-3"})
    finally:
        legacy.stop()
        extra.stop()


# --- inference device -------------------------------------------------------------------


def test_the_device_is_cuda_only_when_asked_for_and_present() -> None:
    from models.device import inference_device

    assert inference_device(prefer_cuda=False) == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert inference_device(prefer_cuda=True) == expected


def test_a_gpu_runner_without_cuda_infers_on_the_cpu() -> None:
    from tasks.infer import current_device, use_device

    try:
        chosen = use_device(prefer_cuda=True)
        assert chosen == current_device()
        assert chosen == ("cuda" if torch.cuda.is_available() else "cpu")
    finally:
        use_device(prefer_cuda=False)
    assert current_device() == "cpu"


def _run(infrastructure_pid: str | None, state_age_s: float = 0.0) -> SimpleNamespace:
    stamp = datetime.now(UTC) - timedelta(seconds=state_age_s)
    return SimpleNamespace(
        id=uuid4(), infrastructure_pid=infrastructure_pid, state=SimpleNamespace(timestamp=stamp)
    )


def test_orphaned_runs_are_those_nobody_will_finish() -> None:
    from deployments.serve import CLAIM_GRACE_S, HOST, WarmRunner

    runner = WarmRunner({}, concurrency=1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    executing = _run(f"{HOST}:{os.getpid()}")
    runner._running[executing.id] = Future()
    assert runner._orphaned(executing) is None  # ours and running
    assert runner._orphaned(_run(f"{HOST}:{os.getpid()}")) is not None  # ours, half-claimed
    assert runner._orphaned(_run(f"{HOST}:{dead.pid}")) is not None  # its runner died
    assert runner._orphaned(_run(f"{HOST}:1")) is None  # a live process of this host
    assert runner._orphaned(_run("other-host:123")) is None  # another host recovers it
    assert runner._orphaned(_run(None)) is None  # claimed a moment ago
    assert runner._orphaned(_run(None, CLAIM_GRACE_S + 5)) is not None  # claimant never said
