"""The screening cohort: the patients an archive sweep found chest CTs for, kept between runs,
and what the screening rules say about each of them.

A nightly sweep sees each study once (its checkpoint), but the cohort has to be judged whole
every night: a patient enrolled two years ago becomes overdue without any new study. So the
sweep records the patient of each chest CT in a ledger beside its checkpoint,
``<checkpoint_dir>/<sweep>.cohort.json`` (PatientID -> latest chest CT: date and UIDs, no
other patient data), rewritten atomically before the study is acknowledged: a sweep killed
half-way loses no patient and the resumed sweep adds the rest.

The ledger also fixes the sweep's first day on its first run, so that a nightly run with
only ``as_of`` moving keeps one checkpoint (the sweep refuses a checkpoint whose start
differs) and each night reads only the days that are new.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pacsflow.durable import replace_durably
from pacsflow.errors import ConfigError, InvalidInputError
from pacsflow.pathways.screening_rules import (
    Eligibility,
    Outcome,
    ScreeningFacts,
    ScreeningProgram,
    evaluate,
    needs_outreach,
    next_due,
    overdue,
)
from pacsflow.pathways.sweep import SweepStudy

LEDGER_VERSION = 1
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"

# Lung-RADS v2022 management (ACR, Lung-RADS v2022 summary table): the screening LDCT
# interval of each category; 0, 4B and 4X book no screening LDCT (diagnostic work-up).
LUNG_RADS_INTERVAL_MONTHS: dict[str, int] = {"1": 12, "2": 12, "3": 6, "4A": 3}
_AVERAGE_MONTH_DAYS = 365.25 / 12


# ---- the window a run sweeps -------------------------------------------------------------


class SweepWindow(BaseModel):
    """The sweep a run continues: checkpoint name and StudyDate range (inclusive)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=_NAME)
    start: date
    end: date


def resolve_window(
    *,
    sweep: str,
    as_of: date,
    start: date | None = None,
    end: date | None = None,
    last_days: int | None = None,
    anchored_start: date | None = None,
    lookback_days: int = 1095,
) -> SweepWindow:
    """Which days a run sweeps.

    ``end`` defaults to the day before ``as_of`` (complete days only: a study stored later
    with a date in a finished window would not be seen). Then, first match wins:

    - ``last_days``: the last N days up to ``end``; a checkpoint of its own per first day
      (name ``<sweep>-<YYYYMMDD>``), so re-running the same window resumes it;
    - ``start``: that day;
    - the first day the sweep was anchored to (its ledger), so a nightly run continues;
    - ``end`` - ``lookback_days`` + 1 on the very first run.
    """
    last = end or as_of - timedelta(days=1)
    name = sweep
    if last_days is not None:
        if last_days < 1:
            raise InvalidInputError(f"last_days must be >= 1, got {last_days}")
        first = last - timedelta(days=last_days - 1)
        name = f"{sweep}-{first:%Y%m%d}"
    elif start is not None:
        first = start
    elif anchored_start is not None:
        first = anchored_start
    else:
        first = last - timedelta(days=lookback_days - 1)
    if last < first:
        raise InvalidInputError(f"nothing to sweep: end {last} is before start {first}")
    try:
        return SweepWindow(name=name, start=first, end=last)
    except ValidationError:
        raise InvalidInputError(f"not a usable sweep name: {name!r}") from None


# ---- the ledger --------------------------------------------------------------------------


class CohortExam(BaseModel):
    """A patient's latest chest CT seen by the sweep (identifiers and its date only)."""

    model_config = ConfigDict(frozen=True)

    study_uid: str
    study_date: date
    accession_number: str | None = None


class CohortLedger(BaseModel):
    version: int = LEDGER_VERSION
    sweep: str
    start: date
    patients: dict[str, CohortExam] = Field(default_factory=dict)  # PatientID -> exam
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def record(self, study: SweepStudy) -> bool:
        """Add one swept study; True when the patient's latest exam changed (save then).

        Recording the same study twice changes nothing, so a study handed out again after
        a crash is harmless. Studies without a PatientID or StudyDate are not recorded.
        """
        if not study.patient_id or study.study_date is None:
            return False
        exam = CohortExam(
            study_uid=study.study_uid,
            study_date=study.study_date,
            accession_number=study.accession_number,
        )
        known = self.patients.get(study.patient_id)
        if known is not None and (known.study_date, known.study_uid) >= (
            exam.study_date,
            exam.study_uid,
        ):
            return False
        self.patients[study.patient_id] = exam
        return True


def ledger_path(directory: Path, name: str) -> Path:
    return Path(directory) / f"{name}.cohort.json"


def load_ledger(directory: Path, name: str) -> CohortLedger | None:
    path = ledger_path(directory, name)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        ledger = CohortLedger.model_validate_json(raw)
    except ValidationError as exc:
        raise ConfigError(f"cohort ledger {path} is unreadable: {exc}") from None
    if ledger.version != LEDGER_VERSION:
        raise ConfigError(f"cohort ledger {path} has version {ledger.version}")
    return ledger


def save_ledger(directory: Path, ledger: CohortLedger) -> Path:
    """A crash leaves the old or the new ledger, never a torn one."""
    ledger.updated_at = datetime.now(UTC)
    path = ledger_path(Path(directory), ledger.sweep)
    replace_durably(path, ledger.model_dump_json(indent=1).encode())
    return path


def reset_ledger(directory: Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        ledger_path(directory, name).unlink()


# ---- Lung-RADS interval of the last exam ---------------------------------------------------


def lungrads_interval_months(features: Mapping[str, Any], exam_date: date) -> int | None:
    """The screening interval the nodule pathway gave an exam (PathwayRun.features).

    ``follow_up_due`` (ISO date) wins, as whole months after the exam (at least 1); else
    the Lung-RADS category's interval (the S modifier does not change it); else None.
    """
    due = features.get("follow_up_due")
    if isinstance(due, str) and due:
        try:
            days = (date.fromisoformat(due[:10]) - exam_date).days
        except ValueError:
            days = None
        if days is not None and days > 0:
            return max(1, round(days / _AVERAGE_MONTH_DAYS))
    category = features.get("category")
    if isinstance(category, str) and category:
        return LUNG_RADS_INTERVAL_MONTHS.get(category.strip().upper().removesuffix("S"))
    return None


# ---- one patient's assessment --------------------------------------------------------------


class PatientStatus(StrEnum):
    ASSESSED = "assessed"
    NOT_IN_EHR = "not in EHR"
    EHR_REFUSED = "EHR refused"  # e.g. two Patients with the same MRN


class OutreachState(StrEnum):
    CREATED = "flagged now"
    EXISTING = "already flagged"
    WOULD_FLAG = "would flag (dry run)"
    NONE = ""


class PatientAssessment(BaseModel):
    """One cohort patient as the coordinator sees it (the report's row). Holds patient
    data: it goes to the coordinator's report files, never to logs or Prefect results."""

    patient_id: str  # the archive's PatientID (MRN)
    ehr_patient_id: str | None = None
    status: PatientStatus
    detail: str = ""
    last_exam: CohortExam
    facts: ScreeningFacts | None = None
    eligibility: dict[ScreeningProgram, Eligibility] = Field(default_factory=dict)
    outreach: dict[ScreeningProgram, OutreachState] = Field(default_factory=dict)
    flag_references: dict[ScreeningProgram, str] = Field(default_factory=dict)
    next_due: date | None = None
    weeks_overdue: int | None = None
    overdue_listed: bool = False

    def needs_outreach(self, program: ScreeningProgram) -> bool:
        eligibility = self.eligibility.get(program)
        return (
            self.facts is not None
            and eligibility is not None
            and needs_outreach(self.facts, eligibility)
        )


def assess_facts(
    patient_id: str,
    ehr_patient_id: str,
    exam: CohortExam,
    facts: ScreeningFacts,
    as_of: date,
    *,
    overdue_weeks_threshold: int,
) -> PatientAssessment:
    """The rules' answers for one patient (outreach states are filled in by the caller)."""
    weeks = overdue(facts, as_of)
    due = next_due(facts)
    listed = (
        weeks is not None and due is not None and due < as_of and weeks >= overdue_weeks_threshold
    )
    return PatientAssessment(
        patient_id=patient_id,
        ehr_patient_id=ehr_patient_id,
        status=PatientStatus.ASSESSED,
        last_exam=exam,
        facts=facts,
        eligibility=evaluate(facts, as_of),
        next_due=due if weeks is not None else None,
        weeks_overdue=weeks,
        overdue_listed=listed,
    )


# ---- counts --------------------------------------------------------------------------------


class ProgramCounts(BaseModel):
    eligible: int = 0
    not_eligible: int = 0
    undecidable: int = 0
    enrolled: int = 0
    completed: int = 0
    needs_outreach: int = 0
    flagged_now: int = 0
    already_flagged: int = 0
    criteria: dict[str, dict[str, int]] = Field(default_factory=dict)  # name -> outcome -> n


class CohortCounts(BaseModel):
    """What a run found, without patient data: safe for logs, artifacts and return values."""

    patients: int = 0
    assessed: int = 0
    not_in_ehr: int = 0
    ehr_refused: int = 0
    overdue_listed: int = 0
    programs: dict[ScreeningProgram, ProgramCounts] = Field(default_factory=dict)
    overdue_weeks: dict[str, int] = Field(default_factory=dict)  # bucket -> patients

    def flat(self) -> dict[str, int]:
        """One level of name -> count (a Prefect table artifact, MLflow-style metrics)."""
        out = {
            "patients": self.patients,
            "assessed": self.assessed,
            "not_in_ehr": self.not_in_ehr,
            "ehr_refused": self.ehr_refused,
            "overdue_listed": self.overdue_listed,
        }
        for program, counts in self.programs.items():
            for key in (
                "eligible",
                "not_eligible",
                "undecidable",
                "enrolled",
                "needs_outreach",
                "flagged_now",
                "already_flagged",
            ):
                out[f"{program.value}.{key}"] = int(getattr(counts, key))
        return out


OVERDUE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("< 1 week", 0, 0),
    ("1-4 weeks", 1, 4),
    ("5-8 weeks", 5, 8),
    ("9-12 weeks", 9, 12),
    ("13-26 weeks", 13, 26),
    ("27-52 weeks", 27, 52),
    ("> 52 weeks", 53, None),
)


def overdue_bucket(weeks: int) -> str:
    for label, low, high in OVERDUE_BUCKETS:
        if weeks >= low and (high is None or weeks <= high):
            return label
    raise InvalidInputError(f"weeks overdue must be >= 0, got {weeks}")


def cohort_counts(rows: Iterable[PatientAssessment], as_of: date) -> CohortCounts:
    counts = CohortCounts(programs={p: ProgramCounts() for p in ScreeningProgram})
    buckets: Counter[str] = Counter()
    for row in rows:
        counts.patients += 1
        if row.status == PatientStatus.NOT_IN_EHR:
            counts.not_in_ehr += 1
            continue
        if row.status == PatientStatus.EHR_REFUSED:
            counts.ehr_refused += 1
            continue
        counts.assessed += 1
        counts.overdue_listed += int(row.overdue_listed)
        if row.next_due is not None and row.next_due < as_of and row.weeks_overdue is not None:
            buckets[overdue_bucket(row.weeks_overdue)] += 1
        facts = row.facts
        for program, eligibility in row.eligibility.items():
            c = counts.programs[program]
            if eligibility.eligible is True:
                c.eligible += 1
            elif eligibility.eligible is False:
                c.not_eligible += 1
            else:
                c.undecidable += 1
            if facts is not None:
                c.enrolled += int(program in facts.enrolled_programs)
                c.completed += int(program in facts.completed_programs)
            c.needs_outreach += int(row.needs_outreach(program))
            state = row.outreach.get(program, OutreachState.NONE)
            c.flagged_now += int(state == OutreachState.CREATED)
            c.already_flagged += int(state == OutreachState.EXISTING)
            for reason in eligibility.reasons:
                per = c.criteria.setdefault(reason.criterion, {o.value: 0 for o in Outcome})
                per[reason.outcome.value] += 1
    counts.overdue_weeks = {label: buckets.get(label, 0) for label, _, _ in OVERDUE_BUCKETS}
    return counts
