"""USPSTF lung cancer (2021) and AAA (2019) screening rules, and the overdue count: tables."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from pacsflow.pathways.screening_rules import (
    Eligibility,
    Outcome,
    ScreeningFacts,
    ScreeningProgram,
    Sex,
    SmokingStatus,
    aaa_screening,
    add_months,
    age_on,
    evaluate,
    lung_cancer_screening,
    needs_outreach,
    next_due,
    overdue,
)

AS_OF = date(2026, 6, 15)
LUNG = ScreeningProgram.LUNG_CANCER
AAA = ScreeningProgram.AAA
CUR, FORMER, NEVER, UNK = (
    SmokingStatus.CURRENT,
    SmokingStatus.FORMER,
    SmokingStatus.NEVER,
    SmokingStatus.UNKNOWN,
)


def born(age: int, *, days_before_birthday: int = 0) -> date:
    """A birth date giving exactly ``age`` on AS_OF (or that age, n days before the next)."""
    birthday = date(AS_OF.year - age, AS_OF.month, AS_OF.day)
    if days_before_birthday:
        birthday = date(AS_OF.year - age - 1, AS_OF.month, AS_OF.day + days_before_birthday)
    return birthday


def facts(**kw: object) -> ScreeningFacts:
    base: dict[str, object] = {
        "birth_date": born(60),
        "sex": Sex.MALE,
        "smoking_status": CUR,
        "pack_years": 30.0,
    }
    base.update(kw)
    return ScreeningFacts.model_validate(base)


# (id, facts overrides, expected eligible, criterion whose outcome we check, its outcome)
LUNG_TABLE: list[tuple[str, dict[str, object], bool | None, str, Outcome]] = [
    ("age 49", {"birth_date": born(49)}, False, "age 50-80", Outcome.FAILED),
    (
        "age 49, day before 50th",
        {"birth_date": born(49, days_before_birthday=1)},
        False,
        "age 50-80",
        Outcome.FAILED,
    ),
    ("exactly 50", {"birth_date": born(50)}, True, "age 50-80", Outcome.PASSED),
    ("exactly 80", {"birth_date": born(80)}, True, "age 50-80", Outcome.PASSED),
    (
        "80, day before 81st",
        {"birth_date": born(80, days_before_birthday=1)},
        True,
        "age 50-80",
        Outcome.PASSED,
    ),
    ("exactly 81", {"birth_date": born(81)}, False, "age 50-80", Outcome.FAILED),
    ("no birth date", {"birth_date": None}, None, "age 50-80", Outcome.MISSING),
    ("20 pack-years", {"pack_years": 20.0}, True, ">= 20 pack-years", Outcome.PASSED),
    ("19.9 pack-years", {"pack_years": 19.9}, False, ">= 20 pack-years", Outcome.FAILED),
    ("pack-years unknown", {"pack_years": None}, None, ">= 20 pack-years", Outcome.MISSING),
    (
        "pack-years unknown but age 40",
        {"pack_years": None, "birth_date": born(40)},
        False,
        ">= 20 pack-years",
        Outcome.MISSING,
    ),
    (
        "never smoker",
        {"smoking_status": NEVER, "pack_years": None},
        False,
        "smokes or quit <= 15 years ago",
        Outcome.FAILED,
    ),
    (
        "status unknown",
        {"smoking_status": UNK},
        None,
        "smokes or quit <= 15 years ago",
        Outcome.MISSING,
    ),
    ("current smoker", {}, True, "smokes or quit <= 15 years ago", Outcome.PASSED),
    (
        "quit 14 years ago",
        {"smoking_status": FORMER, "quit_date": date(2012, 6, 15)},
        True,
        "smokes or quit <= 15 years ago",
        Outcome.PASSED,
    ),
    (
        "quit exactly 15 years ago",
        {"smoking_status": FORMER, "quit_date": date(2011, 6, 15)},
        True,
        "smokes or quit <= 15 years ago",
        Outcome.PASSED,
    ),
    (
        "quit 15 years and a day ago",
        {"smoking_status": FORMER, "quit_date": date(2011, 6, 14)},
        False,
        "smokes or quit <= 15 years ago",
        Outcome.FAILED,
    ),
    (
        "quit 30 years ago",
        {"smoking_status": FORMER, "quit_date": date(1996, 1, 1)},
        False,
        "smokes or quit <= 15 years ago",
        Outcome.FAILED,
    ),
    (
        "former, quit date unknown",
        {"smoking_status": FORMER, "quit_date": None},
        None,
        "smokes or quit <= 15 years ago",
        Outcome.MISSING,
    ),
    (
        "quit date in the future",
        {"smoking_status": FORMER, "quit_date": date(2027, 1, 1)},
        None,
        "smokes or quit <= 15 years ago",
        Outcome.MISSING,
    ),
    (
        "current smoker with an old quit date (relapse)",
        {"smoking_status": CUR, "quit_date": date(1990, 1, 1)},
        True,
        "smokes or quit <= 15 years ago",
        Outcome.PASSED,
    ),
    ("women are screened too", {"sex": Sex.FEMALE}, True, "age 50-80", Outcome.PASSED),
]


@pytest.mark.parametrize(
    ("overrides", "expected", "criterion", "outcome"),
    [row[1:] for row in LUNG_TABLE],
    ids=[row[0] for row in LUNG_TABLE],
)
def test_lung_cancer_screening_table(
    overrides: dict[str, object], expected: bool | None, criterion: str, outcome: Outcome
) -> None:
    result = lung_cancer_screening(facts(**overrides), AS_OF)
    assert result.program == LUNG
    assert result.eligible is expected, result.summary()
    by_name = {r.criterion: r for r in result.reasons}
    assert set(by_name) == {"age 50-80", ">= 20 pack-years", "smokes or quit <= 15 years ago"}
    assert by_name[criterion].outcome == outcome, result.summary()


def test_undecidable_result_names_what_is_missing() -> None:
    result = lung_cancer_screening(facts(pack_years=None), AS_OF)
    assert result.eligible is None
    assert result.missing() == [">= 20 pack-years"]
    assert "pack-years unknown" in result.summary()
    assert "not decidable" in result.summary()


AAA_TABLE: list[tuple[str, dict[str, object], bool | None, str, Outcome]] = [
    ("man 65 current smoker", {"birth_date": born(65)}, True, "age 65-75", Outcome.PASSED),
    ("man 64", {"birth_date": born(64)}, False, "age 65-75", Outcome.FAILED),
    ("man 75", {"birth_date": born(75)}, True, "age 65-75", Outcome.PASSED),
    ("man 76", {"birth_date": born(76)}, False, "age 65-75", Outcome.FAILED),
    (
        "man 70 former smoker, long ago",
        {
            "birth_date": born(70),
            "smoking_status": FORMER,
            "quit_date": date(1980, 1, 1),
            "pack_years": 2.0,
        },
        True,
        "ever smoked",
        Outcome.PASSED,
    ),
    (
        "man 70 never smoked",
        {"birth_date": born(70), "smoking_status": NEVER},
        False,
        "ever smoked",
        Outcome.FAILED,
    ),
    (
        "man 70 status unknown",
        {"birth_date": born(70), "smoking_status": UNK},
        None,
        "ever smoked",
        Outcome.MISSING,
    ),
    ("woman 70 smoker", {"birth_date": born(70), "sex": Sex.FEMALE}, False, "male", Outcome.FAILED),
    ("sex unknown", {"birth_date": born(70), "sex": Sex.UNKNOWN}, None, "male", Outcome.MISSING),
    (
        "already screened",
        {"birth_date": born(70), "completed_programs": frozenset({"aaa-ultrasound"})},
        False,
        "not screened before",
        Outcome.FAILED,
    ),
    (
        "pack-years do not matter",
        {"birth_date": born(70), "pack_years": None},
        True,
        "ever smoked",
        Outcome.PASSED,
    ),
]


@pytest.mark.parametrize(
    ("overrides", "expected", "criterion", "outcome"),
    [row[1:] for row in AAA_TABLE],
    ids=[row[0] for row in AAA_TABLE],
)
def test_aaa_screening_table(
    overrides: dict[str, object], expected: bool | None, criterion: str, outcome: Outcome
) -> None:
    result = aaa_screening(facts(**overrides), AS_OF)
    assert result.program == AAA
    assert result.eligible is expected, result.summary()
    assert {r.criterion: r.outcome for r in result.reasons}[criterion] == outcome


def test_evaluate_answers_every_program() -> None:
    answers = evaluate(facts(birth_date=born(70)), AS_OF)
    assert set(answers) == {LUNG, AAA}
    assert all(isinstance(a, Eligibility) and a.eligible for a in answers.values())


@pytest.mark.parametrize(
    ("enrolled", "completed", "expected"),
    [
        (frozenset(), frozenset(), True),
        (frozenset({"lung-cancer-ldct"}), frozenset(), False),
        (frozenset(), frozenset({"lung-cancer-ldct"}), False),
        (frozenset({"aaa-ultrasound"}), frozenset(), True),
    ],
)
def test_needs_outreach_only_when_eligible_and_not_enrolled(
    enrolled: frozenset[str], completed: frozenset[str], expected: bool
) -> None:
    f = facts(enrolled_programs=enrolled, completed_programs=completed)
    assert needs_outreach(f, lung_cancer_screening(f, AS_OF)) is expected


def test_no_outreach_when_not_decidable() -> None:
    f = facts(pack_years=None)
    assert needs_outreach(f, lung_cancer_screening(f, AS_OF)) is False


ENROLLED = frozenset({"lung-cancer-ldct"})
OVERDUE_TABLE: list[tuple[str, dict[str, object], int | None]] = [
    ("not enrolled", {"last_screening_exam": date(2024, 1, 1)}, None),
    ("enrolled, no exam yet", {"enrolled_programs": ENROLLED}, None),
    ("due today", {"enrolled_programs": ENROLLED, "last_screening_exam": date(2025, 6, 15)}, 0),
    ("not due yet", {"enrolled_programs": ENROLLED, "last_screening_exam": date(2026, 1, 1)}, 0),
    ("6 days late", {"enrolled_programs": ENROLLED, "last_screening_exam": date(2025, 6, 9)}, 0),
    ("7 days late", {"enrolled_programs": ENROLLED, "last_screening_exam": date(2025, 6, 8)}, 1),
    (
        "default 12 months, a year late",
        {"enrolled_programs": ENROLLED, "last_screening_exam": date(2024, 6, 15)},
        52,
    ),
    (
        "Lung-RADS 3: 6 months",
        {
            "enrolled_programs": ENROLLED,
            "last_screening_exam": date(2025, 12, 15),
            "lungrads_interval_months": 6,
        },
        0,
    ),
    (
        "Lung-RADS 4A: 3 months, 4 weeks late",
        {
            "enrolled_programs": ENROLLED,
            "last_screening_exam": date(2026, 2, 16),
            "lungrads_interval_months": 3,
        },
        4,
    ),
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [row[1:] for row in OVERDUE_TABLE],
    ids=[row[0] for row in OVERDUE_TABLE],
)
def test_overdue_weeks(overrides: dict[str, object], expected: int | None) -> None:
    assert overdue(facts(**overrides), AS_OF) == expected


def test_next_due_uses_the_interval() -> None:
    f = facts(last_screening_exam=date(2026, 1, 31), lungrads_interval_months=1)
    assert next_due(f) == date(2026, 2, 28)
    assert next_due(facts()) is None


@pytest.mark.parametrize(
    ("birth", "on", "age"),
    [
        (date(2000, 2, 29), date(2050, 2, 28), 49),
        (date(2000, 2, 29), date(2050, 3, 1), 50),
        (date(1976, 6, 15), date(2026, 6, 15), 50),
        (date(1976, 6, 16), date(2026, 6, 15), 49),
    ],
)
def test_age_on(birth: date, on: date, age: int) -> None:
    assert age_on(birth, on) == age


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),
        (date(2025, 12, 15), 1, date(2026, 1, 15)),
        (date(2008, 2, 29), 180, date(2023, 2, 28)),
    ],
)
def test_add_months(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected


def test_facts_are_validated() -> None:
    with pytest.raises(ValidationError):
        ScreeningFacts(birth_date=date(1960, 1, 1), pack_years=-1.0)
    with pytest.raises(ValidationError):
        ScreeningFacts(birth_date=date(1960, 1, 1), smoking_status="sometimes")  # type: ignore[arg-type]
