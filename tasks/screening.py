"""The screening cohort's steps: sweep the archive for chest CTs (resumable), read what the
EHR knows about each patient, apply the USPSTF rules, flag eligible not-enrolled patients.

Plain functions do the work (testable without Prefect); the tasks below wrap them with
retries on transient errors. Results that carry patient data are never persisted by Prefect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings, load_settings
from pacsflow.db.session import make_engine, make_sessionmaker
from pacsflow.db.tables import PathwayRun
from pacsflow.dicom.dicomweb import Archive
from pacsflow.errors import ConfigError, InvalidInputError
from pacsflow.pathways.cohort import (
    CohortExam,
    CohortLedger,
    OutreachState,
    PatientAssessment,
    PatientStatus,
    SweepWindow,
    assess_facts,
    load_ledger,
    lungrads_interval_months,
    save_ledger,
)
from pacsflow.pathways.ehr_screening import EhrScreening
from pacsflow.pathways.screening_rules import ScreeningProgram
from pacsflow.pathways.sweep import (
    QidoSource,
    SweepProgress,
    SweepSpec,
    load_checkpoint,
    sweep_studies,
)
from pacsflow.pathways.validation import CHEST_DESCRIPTION
from tasks._runtime import transient_only

log = logging.getLogger(__name__)

NODULE_PATHWAY = "nodule_followup"
CHEST_CT_MODALITY = "CT"


class SweepTally(BaseModel):
    """What one run of the cohort sweep did (counts, no patient data)."""

    window: SweepWindow
    resumed: bool  # a checkpoint of an earlier, unfinished or earlier-ended run existed
    studies: int = 0  # chest CTs handed out by the sweep in this run
    patients_updated: int = 0  # patients new to the cohort or with a newer chest CT
    cohort: int = 0  # patients in the cohort after this run


def chest_ct_spec(settings: Settings, window: SweepWindow) -> SweepSpec:
    """CT studies whose description names the chest (the nodule pathway's own pattern);
    body parts would cost one series query per study and are often left empty."""
    return SweepSpec(
        name=window.name,
        start=window.start,
        end=window.end,
        window_days=settings.sweeps.window_days,
        page_size=settings.sweeps.page_size,
        modality=CHEST_CT_MODALITY,
        description_pattern=CHEST_DESCRIPTION.pattern,
    )


def sweep_chest_cts(
    settings: Settings,
    window: SweepWindow,
    *,
    source: QidoSource | Archive | None = None,
    on_progress: Callable[[SweepProgress], None] | None = None,
) -> SweepTally:
    """Continue the window's sweep; every chest CT's patient goes into the cohort ledger,
    saved before the sweep moves on (a crash loses nothing, a resume adds the rest)."""
    directory = settings.sweep_checkpoint_dir
    ledger = load_ledger(directory, window.name) or CohortLedger(
        sweep=window.name, start=window.start
    )
    if ledger.start != window.start:
        raise ConfigError(
            f"cohort ledger {window.name!r} starts on {ledger.start}, not {window.start}; "
            "give this sweep another name or reset it"
        )
    tally = SweepTally(window=window, resumed=load_checkpoint(directory, window.name) is not None)
    archive = source if source is not None else Archive(settings.orthanc)
    spec = chest_ct_spec(settings, window)
    for study in sweep_studies(archive, spec, directory, on_progress=on_progress):
        tally.studies += 1
        if ledger.record(study):
            tally.patients_updated += 1
            save_ledger(directory, ledger)  # before the sweep acknowledges the study
    save_ledger(directory, ledger)
    tally.cohort = len(ledger.patients)
    return tally


def exam_intervals(
    sessions: sessionmaker[Session], exams: Iterable[CohortExam]
) -> dict[str, int | None]:
    """Lung-RADS interval (months) the nodule pathway gave each exam, by study UID; the
    newest successful result of any model version counts."""
    by_uid = {e.study_uid: e for e in exams}
    uids = sorted(by_uid)
    found: dict[str, int | None] = {}
    with sessions() as session:
        for first in range(0, len(uids), 500):  # stay under SQL parameter limits
            rows = session.scalars(
                select(PathwayRun)
                .where(
                    PathwayRun.study_uid.in_(uids[first : first + 500]),
                    PathwayRun.pathway == NODULE_PATHWAY,
                    PathwayRun.outcome != "failed",
                )
                .order_by(PathwayRun.finished_at, PathwayRun.id)
            )
            for row in rows:  # oldest first: the newest result wins
                months = lungrads_interval_months(
                    row.features or {}, by_uid[row.study_uid].study_date
                )
                if months is not None or row.study_uid not in found:
                    found[row.study_uid] = months
    return found


def ehr_patient_id(ehr: EhrScreening, system: str | None, mrn: str) -> str | None:
    """The EHR's Patient id for the archive's PatientID (in ``system``, or any system)."""
    if system:
        return ehr.find_patient_id(system, mrn)
    found = list(ehr.search("Patient", {"identifier": mrn}))
    if len(found) > 1:
        raise InvalidInputError(f"{len(found)} Patients carry identifier {mrn}")
    return str(found[0]["id"]) if found else None


def assess_patient(
    ehr: EhrScreening,
    settings: Settings,
    mrn: str,
    exam: CohortExam,
    interval_months: int | None,
    *,
    as_of: date,
    authored_on: datetime,
    dry_run: bool = False,
) -> PatientAssessment:
    """Read one patient's facts, apply the rules, flag what needs outreach (idempotent).

    An EHR that refuses a patient (duplicate MRN, malformed record) leaves that patient
    out with the reason; an EHR that is down raises PeerUnavailableError (retry the run).
    """
    try:
        patient_id = ehr_patient_id(ehr, settings.ehr.patient_id_system, mrn)
        if patient_id is None:
            return PatientAssessment(
                patient_id=mrn, status=PatientStatus.NOT_IN_EHR, last_exam=exam
            )
        facts = ehr.screening_facts(
            patient_id,
            last_screening_exam=exam.study_date,
            lungrads_interval_months=interval_months,
        )
    except InvalidInputError as exc:
        log.warning("screening: patient %s refused by the EHR (%s)", mrn, type(exc).__name__)
        return PatientAssessment(
            patient_id=mrn, status=PatientStatus.EHR_REFUSED, detail=str(exc), last_exam=exam
        )
    row = assess_facts(
        mrn,
        patient_id,
        exam,
        facts,
        as_of,
        overdue_weeks_threshold=settings.screening.overdue_weeks_threshold,
    )
    for program in ScreeningProgram:
        if not row.needs_outreach(program):
            continue
        if dry_run:
            row.outreach[program] = OutreachState.WOULD_FLAG
            continue
        result = ehr.flag_for_outreach(
            patient_id,
            row.eligibility[program],
            authored_on=authored_on,
            with_task=settings.screening.create_task,
        )
        row.outreach[program] = OutreachState.CREATED if result.created else OutreachState.EXISTING
        row.flag_references[program] = result.flag_reference
    return row


def assess_cohort(
    settings: Settings,
    ledger: CohortLedger,
    *,
    as_of: date,
    authored_on: datetime,
    dry_run: bool = False,
    sessions: sessionmaker[Session] | None = None,
) -> list[PatientAssessment]:
    """Every cohort patient, read from the EHR ``screening.ehr_concurrency`` at a time."""
    base_url = settings.ehr.fhir_base_url
    if not base_url:
        raise ConfigError("the screening cohort needs ehr.fhir_base_url (the FHIR R4 server)")
    sessions = sessions or make_sessionmaker(make_engine(settings.database_url))
    intervals = exam_intervals(sessions, ledger.patients.values())
    patients = sorted(ledger.patients.items())
    with EhrScreening(base_url, timeout_s=settings.ehr.timeout_s) as ehr:

        def one(item: tuple[str, CohortExam]) -> PatientAssessment:
            mrn, exam = item
            return assess_patient(
                ehr,
                settings,
                mrn,
                exam,
                intervals.get(exam.study_uid),
                as_of=as_of,
                authored_on=authored_on,
                dry_run=dry_run,
            )

        workers = max(1, settings.screening.ehr_concurrency)
        if workers == 1:
            return [one(item) for item in patients]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ehr") as pool:
            return list(pool.map(one, patients))


# ---- Prefect tasks -------------------------------------------------------------------------


@task(
    name="sweep-chest-cts",
    retries=3,
    retry_delay_seconds=[10, 30, 60],
    retry_condition_fn=transient_only,
    cache_policy=NO_CACHE,
)
def sweep_cohort(
    window: SweepWindow, on_progress: Callable[[SweepProgress], None] | None = None
) -> SweepTally:
    """A retry resumes from the checkpoint: nothing is read twice."""
    return sweep_chest_cts(load_settings(), window, on_progress=on_progress)


@task(
    name="assess-cohort",
    retries=3,
    retry_delay_seconds=[10, 30, 60],
    retry_condition_fn=transient_only,
    cache_policy=NO_CACHE,
    persist_result=False,  # patient data: never in Prefect's result storage
)
def assess_cohort_task(
    window: SweepWindow, as_of: date, authored_on: datetime, dry_run: bool = False
) -> list[PatientAssessment]:
    settings = load_settings()
    ledger = load_ledger(settings.sweep_checkpoint_dir, window.name)
    if ledger is None:
        return []
    return assess_cohort(settings, ledger, as_of=as_of, authored_on=authored_on, dry_run=dry_run)
