"""Who should be screened, and who is late: USPSTF rules as plain, three-valued functions.

Lung cancer, USPSTF 2021 (grade B; JAMA 2021;325(10):962-970): annual low-dose CT for adults
aged 50 to 80 years who have a 20 pack-year smoking history and currently smoke or have quit
within the past 15 years; stop once a person has not smoked for 15 years. Here "quit within
the past 15 years" includes the 15th anniversary of the quit date; the day after, screening
stops.

Abdominal aortic aneurysm, USPSTF 2019 (grade B; JAMA 2019;322(22):2211-2218): one-time
ultrasonography for men aged 65 to 75 years who have ever smoked. Men of that age who never
smoked are a selective offer (grade C) and women are not screened (D / I): both are "not
eligible" for the outreach programme here.

Every rule answers True, False or None (not decidable: a fact is missing), with one reason per
criterion saying whether it passed, failed or was missing. A criterion that fails decides the
answer even when others are missing: an age of 40 is "no" whatever the smoking history.
Ages are whole years (age on the ``as_of`` date), bounds inclusive: 80 is in, 81 is out.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

LUNG_MIN_AGE, LUNG_MAX_AGE = 50, 80
LUNG_MIN_PACK_YEARS = 20.0
LUNG_MAX_YEARS_SINCE_QUIT = 15
AAA_MIN_AGE, AAA_MAX_AGE = 65, 75
DEFAULT_INTERVAL_MONTHS = 12  # Lung-RADS 1 and 2: continue annual screening


class ScreeningProgram(StrEnum):
    """pacsflow's screening programme codes (code system ``urn:pacsflow:screening-program``)."""

    LUNG_CANCER = "lung-cancer-ldct"
    AAA = "aaa-ultrasound"


class SmokingStatus(StrEnum):
    CURRENT = "current"
    FORMER = "former"
    NEVER = "never"
    UNKNOWN = "unknown"


class Sex(StrEnum):
    """FHIR R4 AdministrativeGender (Patient.gender)."""

    MALE = "male"
    FEMALE = "female"
    OTHER = "other"
    UNKNOWN = "unknown"


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    MISSING = "missing"


class ScreeningFacts(BaseModel):
    """What is known about one patient, as of the day the rules run.

    ``enrolled_programs``: programmes with an open enrolment (planned, waiting, active, on
    hold). ``completed_programs``: programmes whose enrolment has finished (for AAA, the
    one-time ultrasound was done). ``last_screening_exam`` and ``lungrads_interval_months``
    concern the lung programme, the only one with a follow-up interval.
    """

    model_config = ConfigDict(frozen=True)

    birth_date: date | None
    sex: Sex = Sex.UNKNOWN
    smoking_status: SmokingStatus = SmokingStatus.UNKNOWN
    pack_years: float | None = Field(None, ge=0)
    quit_date: date | None = None
    enrolled_programs: frozenset[str] = frozenset()
    completed_programs: frozenset[str] = frozenset()
    last_screening_exam: date | None = None
    lungrads_interval_months: int | None = Field(None, ge=1)


class CriterionResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    criterion: str
    outcome: Outcome
    detail: str

    def __str__(self) -> str:
        return f"{self.criterion} {self.outcome}: {self.detail}"


class Eligibility(BaseModel):
    """``eligible`` is None when a missing fact leaves the answer open."""

    model_config = ConfigDict(frozen=True)

    program: ScreeningProgram
    eligible: bool | None
    reasons: list[CriterionResult]

    def missing(self) -> list[str]:
        return [r.criterion for r in self.reasons if r.outcome == Outcome.MISSING]

    def failed(self) -> list[str]:
        return [r.criterion for r in self.reasons if r.outcome == Outcome.FAILED]

    def summary(self) -> str:
        answer = {True: "eligible", False: "not eligible", None: "not decidable"}[self.eligible]
        return f"{self.program}: {answer} ({'; '.join(str(r) for r in self.reasons)})"


# ---- calendar arithmetic -----------------------------------------------------------------


def age_on(birth_date: date, as_of: date) -> int:
    """Age in whole years on ``as_of`` (a 29 February birthday counts from 1 March)."""
    before_birthday = (as_of.month, as_of.day) < (birth_date.month, birth_date.day)
    return as_of.year - birth_date.year - int(before_birthday)


def add_months(day: date, months: int) -> date:
    """``day`` plus whole months, clamped to the end of a shorter month (31 Jan + 1 = 28 Feb)."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


# ---- criteria ----------------------------------------------------------------------------


def _age_criterion(facts: ScreeningFacts, as_of: date, low: int, high: int) -> CriterionResult:
    name = f"age {low}-{high}"
    if facts.birth_date is None:
        return CriterionResult(criterion=name, outcome=Outcome.MISSING, detail="no birth date")
    if facts.birth_date > as_of:
        return CriterionResult(
            criterion=name, outcome=Outcome.MISSING, detail="birth date after the as-of date"
        )
    age = age_on(facts.birth_date, as_of)
    outcome = Outcome.PASSED if low <= age <= high else Outcome.FAILED
    return CriterionResult(criterion=name, outcome=outcome, detail=f"age {age}")


def _pack_years_criterion(facts: ScreeningFacts) -> CriterionResult:
    name = f">= {LUNG_MIN_PACK_YEARS:g} pack-years"
    if facts.smoking_status == SmokingStatus.NEVER:
        return CriterionResult(criterion=name, outcome=Outcome.FAILED, detail="never smoked")
    if facts.pack_years is None:
        return CriterionResult(criterion=name, outcome=Outcome.MISSING, detail="pack-years unknown")
    outcome = Outcome.PASSED if facts.pack_years >= LUNG_MIN_PACK_YEARS else Outcome.FAILED
    return CriterionResult(
        criterion=name, outcome=outcome, detail=f"{facts.pack_years:g} pack-years"
    )


def _recent_smoker_criterion(facts: ScreeningFacts, as_of: date) -> CriterionResult:
    name = f"smokes or quit <= {LUNG_MAX_YEARS_SINCE_QUIT} years ago"
    status = facts.smoking_status
    if status == SmokingStatus.CURRENT:
        return CriterionResult(criterion=name, outcome=Outcome.PASSED, detail="current smoker")
    if status == SmokingStatus.NEVER:
        return CriterionResult(criterion=name, outcome=Outcome.FAILED, detail="never smoked")
    if status == SmokingStatus.UNKNOWN:
        return CriterionResult(
            criterion=name, outcome=Outcome.MISSING, detail="smoking status unknown"
        )
    if facts.quit_date is None:
        return CriterionResult(
            criterion=name, outcome=Outcome.MISSING, detail="former smoker, quit date unknown"
        )
    if facts.quit_date > as_of:
        return CriterionResult(
            criterion=name, outcome=Outcome.MISSING, detail="quit date after the as-of date"
        )
    # The 15th anniversary of the quit date is still "within the past 15 years".
    limit = add_months(facts.quit_date, 12 * LUNG_MAX_YEARS_SINCE_QUIT)
    years = age_on(facts.quit_date, as_of)
    if as_of <= limit:
        return CriterionResult(
            criterion=name, outcome=Outcome.PASSED, detail=f"quit {years} years ago"
        )
    return CriterionResult(
        criterion=name, outcome=Outcome.FAILED, detail=f"quit {years} years ago (> 15)"
    )


def _ever_smoked_criterion(facts: ScreeningFacts) -> CriterionResult:
    name = "ever smoked"
    status = facts.smoking_status
    if status in (SmokingStatus.CURRENT, SmokingStatus.FORMER):
        return CriterionResult(criterion=name, outcome=Outcome.PASSED, detail=f"{status} smoker")
    if status == SmokingStatus.NEVER:
        return CriterionResult(criterion=name, outcome=Outcome.FAILED, detail="never smoked")
    return CriterionResult(criterion=name, outcome=Outcome.MISSING, detail="smoking status unknown")


def _male_criterion(facts: ScreeningFacts) -> CriterionResult:
    name = "male"
    if facts.sex == Sex.MALE:
        return CriterionResult(criterion=name, outcome=Outcome.PASSED, detail="male")
    if facts.sex == Sex.UNKNOWN:
        return CriterionResult(criterion=name, outcome=Outcome.MISSING, detail="sex unknown")
    return CriterionResult(criterion=name, outcome=Outcome.FAILED, detail=str(facts.sex))


def _combine(program: ScreeningProgram, reasons: Iterable[CriterionResult]) -> Eligibility:
    results = list(reasons)
    outcomes = {r.outcome for r in results}
    eligible: bool | None
    if Outcome.FAILED in outcomes:
        eligible = False
    elif Outcome.MISSING in outcomes:
        eligible = None
    else:
        eligible = True
    return Eligibility(program=program, eligible=eligible, reasons=results)


# ---- programmes --------------------------------------------------------------------------


def lung_cancer_screening(facts: ScreeningFacts, as_of: date) -> Eligibility:
    """USPSTF 2021 lung cancer screening with low-dose CT."""
    return _combine(
        ScreeningProgram.LUNG_CANCER,
        [
            _age_criterion(facts, as_of, LUNG_MIN_AGE, LUNG_MAX_AGE),
            _pack_years_criterion(facts),
            _recent_smoker_criterion(facts, as_of),
        ],
    )


def aaa_screening(facts: ScreeningFacts, as_of: date) -> Eligibility:
    """USPSTF 2019 one-time AAA ultrasound: men 65-75 who ever smoked, not yet screened."""
    done = ScreeningProgram.AAA in facts.completed_programs
    once = CriterionResult(
        criterion="not screened before",
        outcome=Outcome.FAILED if done else Outcome.PASSED,
        detail="one-time ultrasound already done" if done else "no completed AAA screening",
    )
    return _combine(
        ScreeningProgram.AAA,
        [
            _male_criterion(facts),
            _age_criterion(facts, as_of, AAA_MIN_AGE, AAA_MAX_AGE),
            _ever_smoked_criterion(facts),
            once,
        ],
    )


def evaluate(facts: ScreeningFacts, as_of: date) -> dict[ScreeningProgram, Eligibility]:
    """Every programme's answer for one patient."""
    return {
        ScreeningProgram.LUNG_CANCER: lung_cancer_screening(facts, as_of),
        ScreeningProgram.AAA: aaa_screening(facts, as_of),
    }


def needs_outreach(facts: ScreeningFacts, eligibility: Eligibility) -> bool:
    """Eligible and neither enrolled in nor done with the programme: flag for the coordinator."""
    program = eligibility.program
    return (
        eligibility.eligible is True
        and program not in facts.enrolled_programs
        and program not in facts.completed_programs
    )


def next_due(facts: ScreeningFacts) -> date | None:
    """Next lung screening CT: last exam + the Lung-RADS interval (default 12 months)."""
    if facts.last_screening_exam is None:
        return None
    months = facts.lungrads_interval_months or DEFAULT_INTERVAL_MONTHS
    return add_months(facts.last_screening_exam, months)


def overdue(facts: ScreeningFacts, as_of: date) -> int | None:
    """Whole weeks past the next lung screening CT, for patients enrolled in the programme.

    None: not enrolled, or no exam to count from (the baseline CT is the programme's job).
    0: not due yet, or less than a full week late.
    """
    if ScreeningProgram.LUNG_CANCER not in facts.enrolled_programs:
        return None
    due = next_due(facts)
    if due is None:
        return None
    return max(0, (as_of - due).days // 7)
