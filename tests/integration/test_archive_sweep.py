"""The archive sweep dispatching real pathway runs: Prefect's test harness with pacsflow's
deployments registered and the warm runner executing them in this process, the stroke
triage pathway with the shipped ICH model as champion (real MLflow store), tiny head CTs in
a real Orthanc (too small to analyse: each run ends "not analysed", quickly), and
`pacsflow sweep start|status` creating and showing runs over the REST API."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from pacsflow.config import Settings, load_settings
from pacsflow.config.settings import write_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import PathwayRun
from pacsflow.dicom.dicomweb import Archive
from pacsflow.testing.dicom_factory import tiny_ct
from pacsflow.testing.services import isolated_settings

pytestmark = [pytest.mark.orthanc, pytest.mark.prefect, pytest.mark.mlflow, pytest.mark.slow]

DAY = date(2036, 7, 1)  # StudyDates no other test uses
CLI_DAY = date(2036, 7, 9)


@dataclass
class World:
    settings: Settings
    studies: dict[date, list[str]]
    champion: str


def _store_heads(orthanc: Settings, day: date, count: int) -> list[str]:
    datasets, uids = [], []
    for k in range(count):
        study_uid, series_uid = generate_uid(), generate_uid()
        for index in range(2):
            ds = tiny_ct(
                study_uid=study_uid,
                series_uid=series_uid,
                index=index,
                patient_id=f"ASW-{day:%m%d}-{k}",
                accession=f"ASW{day:%m%d}{k}",
            )
            ds.StudyDate = f"{day:%Y%m%d}"
            ds.StudyDescription = "CT HEAD WO CONTRAST"
            datasets.append(ds)
        uids.append(study_uid)
    Archive(orthanc.orthanc).store(datasets)
    return uids


@pytest.fixture(scope="module")
def world(orthanc: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    import tasks._runtime
    from deployments.catalog import CATALOG
    from deployments.serve import WarmRunner, register
    from models.bootstrap import ensure_model
    from models.catalogue import MODELS
    from models.registry import Registry

    work = tmp_path_factory.mktemp("archive-sweep")
    studies = {DAY: _store_heads(orthanc, DAY, 4), CLI_DAY: _store_heads(orthanc, CLI_DAY, 2)}
    with prefect_test_harness():
        built = isolated_settings(
            work / "var",
            orthanc={
                "http_port": orthanc.orthanc.http_port,
                "dicom_port": orthanc.orthanc.dicom_port,
            },
            prefect={"api_url": PREFECT_API_URL.value()},
            sweeps={"poll_s": 0.5},
        )
        upgrade(built.database_url)
        champion = ensure_model(Registry(built.mlflow_tracking_uri), MODELS["ich"]).version
        path = write_settings(built, work / "pacsflow.toml")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PACSFLOW_CONFIG_FILE", str(path))
            tasks._runtime._build_env.cache_clear()
            runner = WarmRunner(register(CATALOG), concurrency=2, poll_s=0.5)
            thread = threading.Thread(target=runner.run, name="warm-runner", daemon=True)
            thread.start()
            try:
                yield World(load_settings(), studies, champion)
            finally:
                runner.stop_event.set()
                thread.join(timeout=60)
                tasks._runtime._build_env.cache_clear()


def _sweep_runs(sweep: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        return list(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"sweep:{sweep}"]))
            )
        )


def _outcomes(settings: Settings, uids: list[str]) -> dict[str, PathwayRun]:
    sessions = make_sessionmaker(make_engine(settings.database_url))
    with sessions() as session:
        rows = session.scalars(
            select(PathwayRun).where(
                PathwayRun.study_uid.in_(uids), PathwayRun.pathway == "stroke_triage"
            )
        ).all()
        return {r.study_uid: r for r in rows}


def test_one_run_per_study_never_more_than_max_in_flight(world: World) -> None:
    from flows.archive_sweep import archive_sweep

    uids = world.studies[DAY]
    result = archive_sweep(
        pathway="stroke_triage", start=DAY, end=DAY, sweep="dispatch", max_in_flight=1
    )
    assert result["studies"] == len(uids) and result["skipped"] == 0
    assert result["dispatched"] == len(uids)
    assert result["finished"] == {"COMPLETED": len(uids)}
    assert result["peak_in_flight"] == 1
    assert "challenger_version" not in result  # no challenger: no shadow mode

    outcomes = _outcomes(world.settings, uids)
    assert set(outcomes) == set(uids)
    assert {r.model_version for r in outcomes.values()} == {world.champion}

    runs = _sweep_runs("dispatch")
    assert sorted(r.parameters["study_uid"] for r in runs) == sorted(uids)
    for run in runs:
        study = run.parameters["study_uid"]
        assert run.idempotency_key == f"sweep:stroke_triage:{study}:{world.champion}"
        assert "source:archive-sweep" in run.tags
        assert run.parameters["requested_by"] == "archive-sweep:dispatch"
    # max_in_flight 1: each run started after the one before it had ended.
    ordered = sorted(runs, key=lambda r: r.start_time)
    for before, after in itertools.pairwise(ordered):
        assert before.end_time is not None and after.start_time >= before.end_time


def test_a_second_sweep_skips_what_the_champion_has_processed(world: World) -> None:
    from flows.archive_sweep import archive_sweep

    uids = world.studies[DAY]
    result = archive_sweep(pathway="stroke_triage", start=DAY, end=DAY, sweep="dispatch-again")
    assert result["skipped"] == len(uids) and result["dispatched"] == 0
    assert _sweep_runs("dispatch-again") == []


def test_cli_starts_a_sweep_that_the_worker_runs(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    from pacsflow.cli.main import main

    argv = ["sweep", "start", "--pathway", "stroke_triage", "--start", CLI_DAY.isoformat()]
    argv += ["--end", CLI_DAY.isoformat(), "--name", "from-cli", "--max-in-flight", "1"]
    assert main(argv) == 0
    assert "archive sweep started: flow run" in capsys.readouterr().out
    uids = world.studies[CLI_DAY]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(_outcomes(world.settings, uids)) < len(uids):
        time.sleep(0.5)
    assert set(_outcomes(world.settings, uids)) == set(uids)
    while time.monotonic() < deadline:  # the sweep itself ends once its runs have
        assert main(["sweep", "status"]) == 0
        out = capsys.readouterr().out
        if "Completed  from-cli" in out:
            break
        time.sleep(0.5)
    assert "from-cli: next StudyDate 2036-07-10, 2 handed out, 0 skipped" in out
    assert "Completed  from-cli" in out


def test_screening_is_scheduled_and_the_archive_sweep_runs_on_demand(world: World) -> None:
    from prefect.client.orchestration import get_client

    from deployments.catalog import CATALOG

    by_name = {spec.full_name: spec for spec in CATALOG}
    with get_client(sync_client=True) as client:
        screening = client.read_deployment_by_name("screening-cohort/screening-cohort-nightly")
        sweep = client.read_deployment_by_name("archive-sweep/archive-sweep")
    crons = [s.schedule.cron for s in screening.schedules if s.active]
    assert crons == [by_name["screening-cohort/screening-cohort-nightly"].cron]
    assert not screening.paused
    assert sweep.schedules == [] and "sweep" in sweep.tags
    assert sweep.description and "shadow" in sweep.description
