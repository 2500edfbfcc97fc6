"""Screening cohort: chest CTs in the archive -> their patients -> what the EHR knows ->
USPSTF lung cancer (2021) and AAA (2019) screening rules -> outreach flags in the EHR, the
overdue list and the coordinator's report.

Scheduled nightly (deployments/catalog.py). Each run continues the sweep where the last one
stopped (checkpoint + cohort ledger under ``sweeps.checkpoint_dir``), then judges the whole
cohort found so far: eligible, not enrolled patients get a FHIR Flag (and Task), once per
patient and programme; enrolled patients whose next lung screening CT is overdue (last chest
CT + the Lung-RADS interval of the nodule pathway's result) are listed for outreach.

Outputs: ``var/reports/screening/<run>/cohort.csv`` and ``report.html`` (patient data, for
the coordinator), counts as Prefect artifacts and in the return value. Logs carry counts and
identifiers only.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from pacsflow.config import load_settings
from pacsflow.errors import ConfigError
from pacsflow.pathways.cohort import (
    CohortCounts,
    cohort_counts,
    load_ledger,
    resolve_window,
)
from pacsflow.pathways.screening_report import reports_dir, write_report
from pacsflow.pathways.screening_rules import ScreeningProgram
from tasks.progress import ProgressReporter, artifact_key
from tasks.screening import assess_cohort_task, sweep_cohort

DEFAULT_SWEEP = "screening-chest-ct"


def _run_name() -> str:
    params = flow_run.parameters or {}
    as_of = params.get("as_of") or datetime.now(UTC).date()
    return f"screening-cohort-{as_of}"


def _counts_markdown(counts: CohortCounts, tally: dict[str, Any], report: str) -> str:
    lines = [
        "# Screening cohort",
        "",
        f"Sweep `{tally['window']['name']}`: StudyDate {tally['window']['start']} to "
        f"{tally['window']['end']}; {tally['studies']} chest CT(s) new in this run, "
        f"{tally['patients_updated']} patient(s) added or updated, cohort {counts.patients}.",
        "",
        "| programme | eligible | not eligible | undecided | enrolled | needs outreach "
        "| flagged now | already flagged |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for program, c in counts.programs.items():
        lines.append(
            f"| {program.value} | {c.eligible} | {c.not_eligible} | {c.undecidable} | "
            f"{c.enrolled} | {c.needs_outreach} | {c.flagged_now} | {c.already_flagged} |"
        )
    lines += [
        "",
        f"Enrolled, next lung CT overdue (listed): {counts.overdue_listed}. "
        f"Not in the EHR: {counts.not_in_ehr}; refused by the EHR: {counts.ehr_refused}.",
        "",
        f"Coordinator report (patient data, on the worker): `{report}`",
    ]
    return "\n".join(lines)


@flow(name="screening-cohort", flow_run_name=_run_name, log_prints=False, persist_result=False)
def screening_cohort(
    start: date | None = None,
    end: date | None = None,
    last_days: int | None = None,
    sweep: str = DEFAULT_SWEEP,
    as_of: date | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Sweep chest CTs from ``start`` (or the last ``last_days`` days) to ``end`` (default:
    yesterday), judge the cohort as of ``as_of`` (default: today) and flag for outreach
    (not with ``dry_run``). Without dates the nightly sweep continues where it stopped."""
    log = get_run_logger()
    settings = load_settings()
    if not settings.ehr.fhir_base_url:  # refuse before sweeping, not after
        raise ConfigError("the screening cohort needs ehr.fhir_base_url (a FHIR R4 server)")
    today = as_of or datetime.now(UTC).date()
    ledger = load_ledger(settings.sweep_checkpoint_dir, sweep) if last_days is None else None
    window = resolve_window(
        sweep=sweep,
        as_of=today,
        start=start,
        end=end,
        last_days=last_days,
        anchored_start=ledger.start if ledger else None,
        lookback_days=settings.screening.lookback_days,
    )
    log.info(
        "screening cohort as of %s: sweep %s, %s..%s", today, window.name, window.start, window.end
    )
    progress = ProgressReporter(f"chest CT sweep {window.name}")
    tally = sweep_cohort(window, on_progress=progress)
    progress.finish()
    rows = assess_cohort_task(window, today, datetime.now(UTC), dry_run)
    counts = cohort_counts(rows, today)
    run_label = str(flow_run.id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S"))
    files = write_report(
        rows,
        counts,
        reports_dir(settings) / run_label,
        window=window,
        as_of=today,
        run_label=run_label,
        dry_run=dry_run,
    )
    flat = counts.flat()
    create_table_artifact(
        [{"count": name, "value": value} for name, value in flat.items()],
        key=artifact_key("screening-cohort-counts", window.name),
        description=f"Screening cohort counts as of {today} (no patient data)",
    )
    summary = tally.model_dump(mode="json")
    create_markdown_artifact(
        _counts_markdown(counts, summary, str(files.html)),
        key=artifact_key("screening-cohort", window.name),
        description="Screening cohort summary",
    )
    lung = counts.programs[ScreeningProgram.LUNG_CANCER]
    aaa = counts.programs[ScreeningProgram.AAA]
    log.info(
        "cohort %d patients (%d assessed, %d not in EHR): lung eligible %d, flagged now %d; "
        "AAA eligible %d, flagged now %d; overdue listed %d",
        counts.patients,
        counts.assessed,
        counts.not_in_ehr,
        lung.eligible,
        lung.flagged_now,
        aaa.eligible,
        aaa.flagged_now,
        counts.overdue_listed,
    )
    return {
        "as_of": today.isoformat(),
        "sweep": summary,
        "counts": flat,
        "flagged_now": lung.flagged_now + aaa.flagged_now,
        "report_html": str(files.html),
        "report_csv": str(files.csv),
    }
