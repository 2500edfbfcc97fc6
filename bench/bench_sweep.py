"""Archive sweep throughput over an archive of small synthetic studies in Orthanc.

The archive: a screening population of N patients, one chest CT each (16x16, 2 slices), with
their smoking histories in the FHIR R4 test double, and M tiny head CTs (2 slices) for the
triage sweep, all stored by STOW-RS. A real Prefect server, the ICH model registered as
champion in a real MLflow store (SQLite), the warm runner as separate processes.

1. Screening (metadata only): the screening-cohort flow end to end (chest CT sweep with
   checkpoint and cohort ledger, EHR reads, USPSTF rules, outreach flags, report) with 1 and
   with 2 EHR workers; baseline: bare QIDO-RS paging of the same days (no checkpoint, no
   filter, no EHR). Goal: >= 2,000 studies/hour.
2. Triage sweep (stroke triage over the heads), studies/hour:
   - queried: the sweep with no pathway run to create (query, filter, skip predicate,
     checkpoint);
   - dispatched: flow runs created by the sweep (no runner serving, no cap) against the
     baseline of creating the same number of runs directly through the client;
   - processed: the sweep end to end (queried + dispatched + the pathway run to its
     outcome) with 1 and with 2 runner processes (one run at a time each), max_in_flight
     = 2 x workers. At 16x16 the pathway refuses the series (too few slices): the run goes
     through retrieval, series selection, outcome and writebacks without inference
     (bench_inference measures the model).

    python -m bench.bench_sweep [--patients 1000] [--heads 1000] [--processed 60]
Output: JSON on stdout and bench/results/sweep.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from bench.common import write_result
from pacsflow.config import Settings, load_settings
from pacsflow.config.settings import write_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import PathwayRun
from pacsflow.dicom.dicomweb import Archive
from pacsflow.fhir.test_server import FhirTestServer, run_fhir_test_server
from pacsflow.stack.process import ManagedProcess
from pacsflow.stack.services import app_env, orthanc_service, prefect_service
from pacsflow.synth.population import (
    MRN_SYSTEM,
    ScreeningPopulation,
    load_population,
    screening_population,
)
from pacsflow.testing.dicom_factory import tiny_ct
from pacsflow.testing.services import isolated_settings

AS_OF = date(2041, 1, 1)  # chest CTs on 2039-01 .. 2040-12
HEAD_DAY = date(2042, 3, 1)  # head CTs from here, HEADS_PER_DAY a day
HEADS_PER_DAY = 50


def per_hour(count: int, seconds: float) -> float:
    return round(count * 3600.0 / seconds, 1) if seconds > 0 else float("inf")


def log(message: str) -> None:
    print(f"[bench_sweep {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def stow(archive: Archive, datasets: list[pydicom.Dataset], batch: int = 400) -> None:
    for first in range(0, len(datasets), batch):
        archive.store(datasets[first : first + batch])


def head_studies(count: int) -> tuple[list[pydicom.Dataset], dict[date, list[str]]]:
    """Tiny 2-slice head CTs, HEADS_PER_DAY a day from HEAD_DAY."""
    datasets, days = [], {}
    for k in range(count):
        day = HEAD_DAY + timedelta(days=k // HEADS_PER_DAY)
        study_uid, series_uid = generate_uid(), generate_uid()
        for index in range(2):
            ds = tiny_ct(
                study_uid=study_uid,
                series_uid=series_uid,
                index=index,
                patient_id=f"BENCH-H{k:05d}",
                accession=f"BH{k:06d}",
            )
            ds.StudyDate = f"{day:%Y%m%d}"
            ds.StudyDescription = "CT HEAD WO CONTRAST"
            datasets.append(ds)
        days.setdefault(day, []).append(study_uid)
    return datasets, days


def bare_qido(archive: Archive, first: date, last: date, page_size: int) -> int:
    """Baseline: every study of the days, paged, nothing else."""
    seen, offset = 0, 0
    while True:
        page = archive.search_studies(
            StudyDate=f"{first:%Y%m%d}-{last:%Y%m%d}", limit=page_size, offset=offset
        )
        if not page:
            return seen
        seen += len(page)
        offset += len(page)


def timed_call(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def configure(settings: Settings, work: Path, **groups: dict[str, Any]) -> Settings:
    """The bench process and its flows read one TOML (as the workers do)."""
    merged = settings.model_copy(
        update={
            name: getattr(settings, name).model_copy(update=values)
            for name, values in groups.items()
        }
    )
    path = write_settings(merged, work / "pacsflow.toml")
    os.environ["PACSFLOW_CONFIG_FILE"] = str(path)
    import tasks._runtime

    tasks._runtime._build_env.cache_clear()
    return load_settings()


@contextmanager
def runners(settings: Settings, count: int) -> Iterator[list[ManagedProcess]]:
    """`count` warm runner processes, one flow run at a time each, ready when registered."""
    procs = []
    env = app_env(settings)
    for i in range(count):
        proc = ManagedProcess(
            name=f"bench-runner-{i}",
            argv=[sys.executable, "-m", "deployments.serve", "--concurrency", "1", "--poll", "0.5"],
            env=env,
            run_dir=settings.paths.run_dir,
            log_dir=settings.paths.log_dir,
            ports=[],
            ready=lambda: True,
        )
        proc.start()
        procs.append(proc)
    try:
        for proc in procs:  # ready once its warm-up has loaded the champion (or given up)
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                text = proc.log_file.read_text(errors="replace") if proc.log_file.exists() else ""
                if "models warm" in text or "warm-up skipped" in text:
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"{proc.name} did not start: see {proc.log_file}")
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def outcomes(settings: Settings, uids: list[str]) -> int:
    sessions = make_sessionmaker(make_engine(settings.database_url))
    with sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(PathwayRun)
                .where(PathwayRun.study_uid.in_(uids), PathwayRun.pathway == "stroke_triage")
            )
            or 0
        )


def screening_phase(
    settings: Settings, work: Path, population: ScreeningPopulation, ehr: FhirTestServer
) -> dict[str, Any]:
    from flows.screening_cohort import screening_cohort

    days = [p.study_date for p in population.patients]
    first, last = min(days), max(days)
    archive = Archive(settings.orthanc)
    count, bare_s = timed_call(lambda: bare_qido(archive, first, last, settings.sweeps.page_size))
    out: dict[str, Any] = {
        "studies": len(population.patients),
        "baseline_bare_qido": {
            "studies": count,
            "seconds": round(bare_s, 2),
            "studies_per_hour": per_hour(count, bare_s),
        },
    }
    for workers in (1, 2):
        configure(settings, work, screening={"ehr_concurrency": workers})
        for kind in ("Flag", "Task"):  # each configuration flags everyone anew
            ehr.store.resources.pop(kind, None)
        log(f"screening flow, {workers} EHR worker(s)")
        result, seconds = timed_call(
            lambda w=workers: screening_cohort(
                sweep=f"bench-screening-{w}", start=first, end=last, as_of=AS_OF
            )
        )
        swept = int(result["sweep"]["studies"])
        out[f"flow_{workers}_worker"] = {
            "studies": swept,
            "patients": result["counts"]["patients"],
            "flagged_now": result["flagged_now"],
            "seconds": round(seconds, 2),
            "studies_per_hour": per_hour(swept, seconds),
        }
    one, two = out["flow_1_worker"], out["flow_2_worker"]
    out["ratio_2_to_1_workers"] = round(two["studies_per_hour"] / one["studies_per_hour"], 3)
    out["ratio_flow_to_bare_qido"] = round(
        one["studies_per_hour"] / out["baseline_bare_qido"]["studies_per_hour"], 4
    )
    out["goal_studies_per_hour"] = 2000
    out["goal_met"] = min(one["studies_per_hour"], two["studies_per_hour"]) >= 2000
    return out


def triage_phase(
    settings: Settings, work: Path, days: dict[date, list[str]], processed: int
) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    from flows.archive_sweep import archive_sweep

    ordered = sorted(days)
    all_uids = [uid for day in ordered for uid in days[day]]
    out: dict[str, Any] = {"studies": len(all_uids)}

    # Queried: nothing to create (dispatch off, no challenger): query + skip predicate.
    log(f"triage sweep, queried only: {len(all_uids)} studies")
    result, seconds = timed_call(
        lambda: archive_sweep(
            pathway="stroke_triage",
            start=ordered[0],
            end=ordered[-1],
            sweep="bench-queried",
            dispatch=False,
        )
    )
    out["queried"] = {
        "studies": result["studies"],
        "seconds": round(seconds, 2),
        "studies_per_hour": per_hour(result["studies"], seconds),
    }

    # Processed, with 1 and 2 workers: the sweep end to end over `processed` studies each.
    per_day = HEADS_PER_DAY
    sets = [ordered[i : i + max(1, processed // per_day)] for i in (0, len(ordered) // 3)]
    for workers, chosen in zip((1, 2), sets, strict=True):
        uids = [uid for day in chosen for uid in days[day]]
        with runners(settings, workers):
            log(f"triage sweep, processed: {len(uids)} studies, {workers} worker(s)")
            result, seconds = timed_call(
                lambda c=chosen, w=workers: archive_sweep(
                    pathway="stroke_triage",
                    start=c[0],
                    end=c[-1],
                    sweep=f"bench-processed-{w}",
                    max_in_flight=2 * w,
                )
            )
        done = outcomes(settings, uids)
        out[f"processed_{workers}_worker"] = {
            "studies": len(uids),
            "outcomes": done,
            "dispatched": result["dispatched"],
            "finished": result["finished"],
            "peak_in_flight": result["peak_in_flight"],
            "seconds": round(seconds, 2),
            "seconds_waiting_for_room": result["waiting_seconds"],
            "studies_per_hour": per_hour(done, seconds),
        }
    one, two = out["processed_1_worker"], out["processed_2_worker"]
    out["processed_ratio_2_to_1_workers"] = round(
        two["studies_per_hour"] / one["studies_per_hour"], 3
    )

    # Dispatched: runs created by the sweep with no cap and no runner, against the baseline
    # of creating as many runs directly (same deployment), half before and half after the
    # sweep so that a server slowing down with its backlog weighs on both alike.
    rest = ordered[2 * len(ordered) // 3 :]
    uids = [uid for day in rest for uid in days[day]]
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("stroke-triage/stroke-triage").id

        def create_directly(first: int, count: int) -> float:
            started = time.perf_counter()
            for k in range(first, first + count):
                client.create_flow_run_from_deployment(
                    deployment,
                    parameters={"study_uid": f"2.25.{k}", "requested_by": "bench-baseline"},
                    idempotency_key=f"bench-baseline-{k}",
                    tags=["bench-baseline"],
                )
            return time.perf_counter() - started

        half = len(uids) // 2
        direct_s = create_directly(0, half)
        log(f"triage sweep, dispatch only: {len(uids)} studies")
        result, seconds = timed_call(
            lambda: archive_sweep(
                pathway="stroke_triage",
                start=rest[0],
                end=rest[-1],
                sweep="bench-dispatched",
                max_in_flight=100_000,
                wait_for_runs=False,
            )
        )
        direct_s += create_directly(half, len(uids) - half)
    out["dispatched"] = {
        "studies": result["studies"],
        "runs_created": result["dispatched"],
        "seconds": round(seconds, 2),
        "seconds_creating_runs": result["dispatch_seconds"],
        "studies_per_hour": per_hour(result["dispatched"], seconds),
    }
    out["baseline_direct_create"] = {
        "runs": len(uids),
        "seconds": round(direct_s, 2),
        "runs_per_hour": per_hour(len(uids), direct_s),
    }
    out["ratio_sweep_dispatch_to_direct_create"] = round(
        out["dispatched"]["studies_per_hour"] / out["baseline_direct_create"]["runs_per_hour"], 3
    )
    return out


def drain_prefect_clients() -> None:
    """Send the flows' last logs and events before the Prefect server goes away, so that no
    client thread keeps retrying a server that is gone (and the process can exit)."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker
    except ImportError:
        return
    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=10)
        except Exception as exc:  # the bench's results are written already
            log(f"draining {worker.__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=1000, help="chest CTs (screening)")
    parser.add_argument("--heads", type=int, default=1000, help="head CTs (triage sweep)")
    parser.add_argument("--processed", type=int, default=50, help="studies processed per run")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    # Stopped from outside: still stop the services this run started (finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    work = Path(tempfile.mkdtemp(prefix="pacsflow-bench-sweep-"))
    ehr = run_fhir_test_server("127.0.0.1", 0)
    services: list[ManagedProcess] = []
    try:
        settings = isolated_settings(
            work / "var",
            ehr={"fhir_base_url": ehr.url, "patient_id_system": MRN_SYSTEM},
            sweeps={"window_days": 7, "page_size": 100, "poll_s": 0.5},
        )
        for service in (orthanc_service(settings), prefect_service(settings)):
            service.start()
            services.append(service)
        for service in services:
            service.wait_ready()
        upgrade(settings.database_url)
        os.environ["PREFECT_API_URL"] = settings.prefect.effective_api_url
        settings = configure(settings, work)

        log(f"archive: {args.patients} chest CTs + {args.heads} head CTs")
        archive = Archive(settings.orthanc)
        population = screening_population(args.patients, seed=31, as_of=AS_OF)
        population.write_studies(work / "chest")
        stow(archive, [pydicom.dcmread(f) for f in sorted((work / "chest").rglob("*.dcm"))])
        for first in range(0, args.patients, 200):
            chunk = population.model_copy(
                update={"patients": population.patients[first : first + 200]}
            )
            load_population(chunk, ehr.url, timeout_s=120)
        datasets, days = head_studies(args.heads)
        stow(archive, datasets)

        from models.bootstrap import ensure_model
        from models.catalogue import MODELS
        from models.registry import Registry

        champion = ensure_model(Registry(settings.mlflow_tracking_uri), MODELS["ich"]).version
        screening = screening_phase(settings, work, population, ehr)
        log(f"screening: {screening}")
        triage = triage_phase(settings, work, days, args.processed)
        write_result(
            "sweep",
            {
                "archive": {
                    "chest_ct": args.patients,
                    "head_ct": args.heads,
                    "instances_each": 2,
                    "matrix": "16x16",
                    "stored_by": "STOW-RS",
                },
                "settings": {
                    "page_size": settings.sweeps.page_size,
                    "window_days": settings.sweeps.window_days,
                },
                "champion_version": champion,
                "screening_metadata_sweep": screening,
                "triage_sweep": triage,
            },
        )
        return 0
    finally:
        drain_prefect_clients()
        for service in reversed(services):
            service.stop()
        ehr.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
