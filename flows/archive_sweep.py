"""Archive sweep: run a pathway retrospectively over the studies of a date range and filter,
and, while a `challenger` model version exists, read the same studies in shadow mode.

For each study the sweep finds (pacsflow.pathways.sweep: QIDO-RS windows, paging, a
checkpoint so a stopped sweep resumes where it stopped):

- pathway run: unless the pathway already has a result of the current champion version for
  the study (pathway_runs), a flow run of the pathway's deployment is created through the
  Prefect API with the idempotency key ``sweep:<pathway>:<study>:<model version>``; at most
  ``max_in_flight`` of them are scheduled or running at once (tasks/sweep_runs.py says why
  this, not a Prefect concurrency limit), so live clinical work keeps priority;
- shadow mode: champion and challenger both read the study's series here, beside the
  pathway run, and their calls are stored as ``<pathway>:shadow`` results, never written
  back; at the end the agreement report (per study, and sensitivity / specificity where the
  ground truth is given) goes to MLflow, experiment "pacsflow-shadow".

Progress: a progress artifact on the run (Prefect UI), a log line every 50 studies, the
checkpoint (`pacsflow sweep status`). Parameters are identifiers, dates and filters only.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from pacsflow.config import Settings, load_settings
from pacsflow.db.session import make_engine, make_sessionmaker
from pacsflow.dicom.dicomweb import Archive
from pacsflow.domain import ModelRef
from pacsflow.errors import InvalidInputError, PermanentError
from pacsflow.governance.shadow_report import summary_markdown, truth_from_synthetic
from pacsflow.pathways.sweep import SweepSpec, SweepStudy, sweep_studies
from tasks.progress import ProgressReporter, artifact_key
from tasks.shadow import has_reading, model_ref, shadow_agreement, shadow_read
from tasks.sweep_runs import InFlight, PrefectRunLauncher, SweepTarget, processed, sweep_key, target


def _run_name() -> str:
    params = flow_run.parameters or {}
    return f"archive-sweep-{params.get('sweep') or params.get('pathway', 'pathway')}"


def sweep_spec(
    settings: Settings,
    goal: SweepTarget,
    *,
    today: date,
    start: date | None,
    end: date | None,
    last_days: int | None,
    sweep: str | None,
    modality: str | None,
    description_pattern: str | None,
    body_parts: list[str] | None,
) -> SweepSpec:
    """The selection: the pathway's modality and description pattern unless given ("" for
    none); end defaults to yesterday; a name of its own per pathway, range and filters."""
    last = end or today - timedelta(days=1)
    if last_days is not None:
        if last_days < 1:
            raise InvalidInputError(f"last_days must be >= 1, got {last_days}")
        first = last - timedelta(days=last_days - 1)
    elif start is not None:
        first = start
    else:
        raise InvalidInputError("an archive sweep needs start (and end) or last_days")
    values: dict[str, Any] = {
        "name": sweep or "pending",
        "start": first,
        "end": last,
        "window_days": settings.sweeps.window_days,
        "page_size": settings.sweeps.page_size,
        "modality": goal.modality if modality is None else (modality or None),
        "description_pattern": (
            goal.description_pattern if description_pattern is None else description_pattern or None
        ),
        "body_parts": frozenset(body_parts) if body_parts else None,
    }
    try:
        spec = SweepSpec.model_validate(values)
    except ValueError as exc:
        raise InvalidInputError(f"archive sweep parameters: {exc}") from None
    if sweep is None:
        name = f"{goal.pathway}-{first:%Y%m%d}-{last:%Y%m%d}-{spec.selection_fingerprint()[:6]}"
        spec = spec.model_copy(update={"name": name.replace("_", "-")})
    return spec


@flow(name="archive-sweep", flow_run_name=_run_name, log_prints=False, persist_result=False)
def archive_sweep(
    pathway: str = "stroke_triage",
    start: date | None = None,
    end: date | None = None,
    last_days: int | None = None,
    sweep: str | None = None,
    modality: str | None = None,
    description_pattern: str | None = None,
    body_parts: list[str] | None = None,
    max_in_flight: int | None = None,
    dispatch: bool = True,
    shadow: bool = True,
    truth: dict[str, bool] | None = None,
    truth_dir: str | None = None,
    wait_for_runs: bool = True,
) -> dict[str, Any]:
    """Sweep ``pathway``'s studies from ``start`` (or the last ``last_days`` days) to ``end``
    (default yesterday). ``dispatch``: create pathway runs; ``shadow``: read with the
    challenger beside the champion when one exists. ``truth`` (study UID -> finding
    present) or ``truth_dir`` (synthetic studies' ground_truth.json) feed the report.
    ``wait_for_runs`` False: return once the last run is created (up to ``max_in_flight``
    of them may still be queued), e.g. to queue a backlog for the night's workers."""
    log = get_run_logger()
    settings = load_settings()
    goal = target(pathway)
    spec = sweep_spec(
        settings,
        goal,
        today=datetime.now(UTC).date(),
        start=start,
        end=end,
        last_days=last_days,
        sweep=sweep,
        modality=modality,
        description_pattern=description_pattern,
        body_parts=body_parts,
    )
    tracking = settings.mlflow_tracking_uri
    champion = model_ref(tracking, goal.model_name, "champion")
    if champion is None:
        raise InvalidInputError(f"{goal.model_name} has no champion: nothing to sweep with")
    challenger = model_ref(tracking, goal.model_name, "challenger") if shadow else None
    if challenger is not None and challenger.version == champion.version:
        challenger = None  # the champion in shadow of itself: nothing to compare
    sessions = make_sessionmaker(make_engine(settings.database_url))
    run_id = str(flow_run.id) if flow_run.id else None
    log.info(
        "sweep %s: %s %s..%s, champion v%s%s, at most %d in flight%s",
        spec.name,
        pathway,
        spec.start,
        spec.end,
        champion.version,
        f", challenger v{challenger.version} in shadow" if challenger else "",
        max_in_flight or settings.sweeps.max_in_flight,
        "" if dispatch else " (no pathway runs)",
    )

    def needs(study: SweepStudy) -> tuple[bool, list[ModelRef]]:
        run = dispatch and not processed(sessions, pathway, champion.version, study.study_uid)
        readers: list[ModelRef] = []
        if challenger is not None:
            readers = [
                m
                for m in (champion, challenger)
                if not has_reading(sessions, pathway, m.version, study.study_uid)
            ]
        return run, readers

    pending: dict[str, tuple[bool, list[ModelRef]]] = {}

    def skip(study: SweepStudy) -> bool:
        pending[study.study_uid] = needs(study)
        run, readers = pending[study.study_uid]
        return not run and not readers

    with get_client(sync_client=True) as client:
        runs = InFlight(
            PrefectRunLauncher(client),
            max_in_flight or settings.sweeps.max_in_flight,
            poll_s=settings.sweeps.poll_s,
        )
        shadow_reads = shadow_failures = 0
        progress = ProgressReporter(
            f"sweep {spec.name}",
            extra=lambda: {
                "dispatched": runs.created,
                "in flight": len(runs.active),
                "shadow reads": shadow_reads,
            },
        )
        for study in sweep_studies(
            Archive(settings.orthanc),
            spec,
            settings.sweep_checkpoint_dir,
            skip=skip,
            on_progress=progress,
        ):
            run, readers = pending.pop(study.study_uid, None) or needs(study)
            pending.clear()
            if run:
                ident = study.accession_number or study.study_uid[-12:]
                runs.submit(
                    goal.deployment,
                    {
                        "study_uid": study.study_uid,
                        "accession_number": study.accession_number,
                        "requested_by": f"archive-sweep:{spec.name}",
                    },
                    study_uid=study.study_uid,
                    key=sweep_key(pathway, study.study_uid, champion.version),
                    name=f"{pathway.replace('_', '-')}-sweep-{ident}",
                    tags=["source:archive-sweep", f"pathway:{pathway}", f"sweep:{spec.name}"],
                )
            for reader in readers:
                role = "challenger" if reader is challenger else "champion"
                try:
                    shadow_read(pathway, study.study_uid, reader, role, run_id)
                except PermanentError as exc:  # this study only; the next sweep tries again
                    shadow_failures += 1
                    log.warning(
                        "shadow read of %s by %s v%s failed: %s",
                        study.study_uid,
                        reader.name,
                        reader.version,
                        type(exc).__name__,
                    )
                    continue
                shadow_reads += 1
        if wait_for_runs:
            runs.drain()
        progress.finish()

    result: dict[str, Any] = {
        "sweep": spec.name,
        "pathway": pathway,
        "start": spec.start.isoformat(),
        "end": spec.end.isoformat(),
        "champion_version": champion.version,
        "studies": progress.latest.done if progress.latest else 0,
        "skipped": progress.latest.skipped if progress.latest else 0,
        "dispatched": runs.created,
        "earlier_runs": runs.earlier,
        "finished": dict(runs.finished),
        "in_flight": len(runs.active),
        "peak_in_flight": runs.peak,
        "shadow_reads": shadow_reads,
        "shadow_failures": shadow_failures,
        "dispatch_seconds": round(runs.submit_s, 2),
        "waiting_seconds": round(runs.waited_s, 2),
    }
    if challenger is not None:
        result |= _report(settings, pathway, champion, challenger, truth, truth_dir, run_id)
    create_table_artifact(
        [{"count": k, "value": str(v)} for k, v in result.items()],
        key=artifact_key("archive-sweep", spec.name),
        description=f"Archive sweep {spec.name} (counts, no patient data)",
    )
    log.info(
        "sweep %s done: %d studies (%d skipped), %d pathway runs %s, %d shadow reads",
        spec.name,
        result["studies"],
        result["skipped"],
        runs.created,
        dict(runs.finished),
        shadow_reads,
    )
    return result


def _report(
    settings: Settings,
    pathway: str,
    champion: ModelRef,
    challenger: ModelRef,
    truth: dict[str, bool] | None,
    truth_dir: str | None,
    run_id: str | None,
) -> dict[str, Any]:
    known = dict(truth_from_synthetic(Path(truth_dir))) if truth_dir else {}
    known |= truth or {}
    label = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    directory = settings.paths.var_dir / "reports" / "shadow" / label
    report, mlflow_run = shadow_agreement(pathway, champion, challenger, known, directory)
    create_markdown_artifact(
        summary_markdown(report) + f"\n\nMLflow run `{mlflow_run}` (experiment pacsflow-shadow).",
        key=artifact_key("shadow", pathway, f"v{challenger.version}"),
        description="Shadow mode agreement report",
    )
    get_run_logger().info(
        "shadow %s v%s vs v%s: %d studies paired, MLflow run %s",
        champion.name,
        challenger.version,
        champion.version,
        len(report.studies),
        mlflow_run,
    )
    return {
        "challenger_version": challenger.version,
        "shadow_metrics": report.metrics(),
        "shadow_report": str(directory / "agreement.csv"),
        "shadow_mlflow_run": mlflow_run,
    }
