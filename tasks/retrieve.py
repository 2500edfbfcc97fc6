"""Context, series selection and validation of a study (metadata only, no pixels)."""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from pydantic import BaseModel

from pacsflow.domain import OrderContext
from pacsflow.pathways.series_selection import SelectionRules, select_series
from pacsflow.pathways.validation import HeaderSuite, ValidationOutcome, validate_headers
from tasks._runtime import ARCHIVE_RETRY_DELAYS, env, transient_only


class StudyContext(BaseModel):
    study_uid: str
    accession_number: str
    patient_id: str
    study_date: str
    modalities: list[str]
    order: OrderContext | None = None
    priors: list[dict[str, str]] = []
    # Where the priors came from: "prefetched" (by the gateway when the order arrived, so
    # the run started warm), "queried" (QIDO at run time) or "none" (nothing to look for).
    priors_source: str = "none"
    priors_fetched_at: datetime | None = None
    series_count: int = 0


class SeriesSelection(BaseModel):
    series_uid: str | None
    explanation: str
    reasons: list[str]


@task(
    name="study-context",
    retries=len(ARCHIVE_RETRY_DELAYS),
    retry_delay_seconds=ARCHIVE_RETRY_DELAYS,
    retry_condition_fn=transient_only,
)
def study_context(study_uid: str, accession_number: str | None) -> StudyContext:
    e = env()
    headers = e.source.headers(study_uid)
    first = headers[0] if headers else None
    accession = accession_number or (first.accession_number if first else "")
    patient = first.patient_id if first else ""
    date = first.study_date if first else ""
    priors = e.source.prior_studies(patient, date, accession_number=accession)
    # In the run's log: whether the run started warm (priors prefetched with the order).
    get_run_logger().info(
        "study %s: %d prior(s), %s", accession or study_uid, len(priors.studies), priors.source
    )
    return StudyContext(
        study_uid=study_uid,
        accession_number=accession,
        patient_id=patient,
        study_date=date,
        modalities=sorted({h.modality for h in headers}),
        order=e.source.order(accession),
        priors=priors.rows(),
        priors_source=priors.source,
        priors_fetched_at=priors.fetched_at,
        series_count=len({h.series_uid for h in headers}),
    )


@task(
    name="select-series",
    retries=len(ARCHIVE_RETRY_DELAYS),
    retry_delay_seconds=ARCHIVE_RETRY_DELAYS,
    retry_condition_fn=transient_only,
)
def choose_series(study_uid: str, target_thickness_mm: float = 5.0) -> SeriesSelection:
    choice = select_series(
        env().source.headers(study_uid), SelectionRules(target_thickness_mm=target_thickness_mm)
    )
    return SeriesSelection(
        series_uid=choice.series_uid, explanation=choice.explain(), reasons=choice.reasons
    )


@task(
    name="validate-series",
    retries=len(ARCHIVE_RETRY_DELAYS),
    retry_delay_seconds=ARCHIVE_RETRY_DELAYS,
    retry_condition_fn=transient_only,
)
def validate_series(
    study_uid: str, series_uid: str, suite: HeaderSuite | None = None
) -> ValidationOutcome:
    headers = [h for h in env().source.headers(study_uid) if h.series_uid == series_uid]
    return validate_headers(headers, suite or HeaderSuite())
