"""The screening cohort's pure parts: the window a run sweeps, the cohort ledger, the
Lung-RADS interval of the last exam, one patient's assessment and the run's counts."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from pacsflow.errors import ConfigError, InvalidInputError
from pacsflow.pathways.cohort import (
    CohortExam,
    CohortLedger,
    OutreachState,
    PatientAssessment,
    PatientStatus,
    assess_facts,
    cohort_counts,
    ledger_path,
    load_ledger,
    lungrads_interval_months,
    overdue_bucket,
    reset_ledger,
    resolve_window,
    save_ledger,
)
from pacsflow.pathways.screening_report import csv_row, write_report
from pacsflow.pathways.screening_rules import (
    ScreeningFacts,
    ScreeningProgram,
    Sex,
    SmokingStatus,
)
from pacsflow.pathways.sweep import SweepStudy

AS_OF = date(2026, 6, 1)
LUNG = ScreeningProgram.LUNG_CANCER.value


@pytest.mark.parametrize(
    ("kwargs", "name", "start", "end"),
    [
        ({}, "s", date(2023, 6, 2), date(2026, 5, 31)),  # first run: the lookback
        ({"anchored_start": date(2025, 1, 1)}, "s", date(2025, 1, 1), date(2026, 5, 31)),
        ({"start": date(2026, 1, 1), "end": date(2026, 2, 1)}, "s", date(2026, 1, 1), None),
        ({"last_days": 1}, "s-20260531", date(2026, 5, 31), date(2026, 5, 31)),
        (
            {"last_days": 7, "anchored_start": date(2020, 1, 1)},
            "s-20260525",
            date(2026, 5, 25),
            None,
        ),
        (
            {"start": date(2026, 1, 1), "anchored_start": date(2020, 1, 1)},
            "s",
            date(2026, 1, 1),
            None,
        ),
    ],
    ids=["lookback", "anchored", "explicit", "yesterday", "last-week", "start-wins"],
)
def test_resolve_window(
    kwargs: dict[str, object], name: str, start: date, end: date | None
) -> None:
    window = resolve_window(sweep="s", as_of=AS_OF, lookback_days=1095, **kwargs)  # type: ignore[arg-type]
    assert (window.name, window.start) == (name, start)
    assert window.end == (end or kwargs.get("end") or AS_OF - timedelta(days=1))


@pytest.mark.parametrize(
    "kwargs",
    [{"last_days": 0}, {"start": AS_OF}, {"start": date(2026, 2, 2), "end": date(2026, 2, 1)}],
)
def test_resolve_window_refuses(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        resolve_window(sweep="s", as_of=AS_OF, **kwargs)  # type: ignore[arg-type]


def _study(uid: str, patient: str | None, day: date) -> SweepStudy:
    return SweepStudy(study_uid=uid, patient_id=patient, study_date=day, accession_number="A1")


def test_ledger_keeps_each_patients_latest_chest_ct(tmp_path: Path) -> None:
    ledger = CohortLedger(sweep="nightly", start=date(2025, 1, 1))
    assert ledger.record(_study("1.1", "P1", date(2025, 3, 1)))
    assert ledger.record(_study("1.2", "P1", date(2025, 9, 1)))  # newer: replaces
    assert not ledger.record(_study("1.0", "P1", date(2025, 1, 5)))  # older: ignored
    assert not ledger.record(_study("1.2", "P1", date(2025, 9, 1)))  # again: nothing new
    assert ledger.record(_study("2.1", "P2", date(2025, 2, 1)))
    assert not ledger.record(_study("3.1", None, date(2025, 2, 1)))  # no PatientID
    assert ledger.patients["P1"].study_uid == "1.2"
    save_ledger(tmp_path, ledger)
    assert [p.name for p in tmp_path.iterdir()] == ["nightly.cohort.json"]
    again = load_ledger(tmp_path, "nightly")
    assert again is not None and again.patients == ledger.patients
    assert again.start == date(2025, 1, 1)
    reset_ledger(tmp_path, "nightly")
    assert load_ledger(tmp_path, "nightly") is None


def test_unreadable_ledger_is_refused(tmp_path: Path) -> None:
    ledger_path(tmp_path, "bad").write_text("{")
    with pytest.raises(ConfigError, match="unreadable"):
        load_ledger(tmp_path, "bad")


@pytest.mark.parametrize(
    ("features", "months"),
    [
        ({"category": "2"}, 12),
        ({"category": "1"}, 12),
        ({"category": "3"}, 6),
        ({"category": "4A"}, 3),
        ({"category": "2S"}, 12),  # the S modifier does not change the interval
        ({"category": "4B"}, None),  # diagnostic work-up, no screening LDCT
        ({"category": "0"}, None),
        ({"follow_up_due": "2026-07-01", "category": "2"}, 6),  # the due date wins
        ({"follow_up_due": "2027-01-01"}, 12),
        ({"follow_up_due": "garbage", "category": "3"}, 6),
        ({}, None),
    ],
)
def test_lungrads_interval(features: dict[str, str], months: int | None) -> None:
    assert lungrads_interval_months(features, date(2026, 1, 1)) == months


def test_overdue_buckets() -> None:
    assert [overdue_bucket(w) for w in (0, 1, 4, 5, 13, 52, 53, 200)] == [
        "< 1 week",
        "1-4 weeks",
        "1-4 weeks",
        "5-8 weeks",
        "13-26 weeks",
        "27-52 weeks",
        "> 52 weeks",
        "> 52 weeks",
    ]
    with pytest.raises(InvalidInputError):
        overdue_bucket(-1)


def _facts(**kw: object) -> ScreeningFacts:
    base: dict[str, object] = {
        "birth_date": date(1960, 1, 1),
        "sex": Sex.MALE,
        "smoking_status": SmokingStatus.CURRENT,
        "pack_years": 30.0,
    }
    return ScreeningFacts.model_validate(base | kw)


EXAM = CohortExam(study_uid="1.2.3", study_date=date(2025, 1, 10))


def test_assessment_of_an_eligible_not_enrolled_smoker() -> None:
    row = assess_facts("P1", "pat-1", EXAM, _facts(), AS_OF, overdue_weeks_threshold=1)
    assert row.needs_outreach(ScreeningProgram.LUNG_CANCER)
    assert row.needs_outreach(ScreeningProgram.AAA)  # 66, male, smokes
    assert row.weeks_overdue is None and not row.overdue_listed  # not enrolled


def test_assessment_of_an_enrolled_overdue_patient() -> None:
    facts = _facts(
        enrolled_programs=frozenset({LUNG}),
        last_screening_exam=EXAM.study_date,
        lungrads_interval_months=3,
    )
    row = assess_facts("P1", "pat-1", EXAM, facts, AS_OF, overdue_weeks_threshold=1)
    assert not row.needs_outreach(ScreeningProgram.LUNG_CANCER)
    assert row.next_due == date(2025, 4, 10)
    assert row.weeks_overdue == (AS_OF - date(2025, 4, 10)).days // 7 and row.overdue_listed
    late = assess_facts("P1", "pat-1", EXAM, facts, AS_OF, overdue_weeks_threshold=100)
    assert not late.overdue_listed  # fewer weeks late than the threshold


def test_counts_and_report_rows(tmp_path: Path) -> None:
    eligible = assess_facts("P1", "a", EXAM, _facts(), AS_OF, overdue_weeks_threshold=1)
    eligible.outreach[ScreeningProgram.LUNG_CANCER] = OutreachState.CREATED
    eligible.outreach[ScreeningProgram.AAA] = OutreachState.EXISTING
    unknown = assess_facts(
        "P2",
        "b",
        EXAM,
        _facts(smoking_status=SmokingStatus.UNKNOWN, pack_years=None, sex=Sex.FEMALE),
        AS_OF,
        overdue_weeks_threshold=1,
    )
    enrolled = assess_facts(
        "P3",
        "c",
        EXAM,
        _facts(
            enrolled_programs=frozenset({LUNG}),
            last_screening_exam=EXAM.study_date,
            lungrads_interval_months=12,
        ),
        AS_OF,
        overdue_weeks_threshold=1,
    )
    missing = PatientAssessment(patient_id="P4", status=PatientStatus.NOT_IN_EHR, last_exam=EXAM)
    rows = [eligible, unknown, enrolled, missing]
    counts = cohort_counts(rows, AS_OF)
    assert (counts.patients, counts.assessed, counts.not_in_ehr) == (4, 3, 1)
    lung = counts.programs[ScreeningProgram.LUNG_CANCER]
    assert (lung.eligible, lung.undecidable, lung.enrolled) == (2, 1, 1)
    assert (lung.needs_outreach, lung.flagged_now, lung.already_flagged) == (1, 1, 0)
    assert counts.programs[ScreeningProgram.AAA].already_flagged == 1
    assert lung.criteria["age 50-80"]["passed"] == 3
    assert counts.overdue_listed == 1 and counts.overdue_weeks["13-26 weeks"] == 1
    flat = counts.flat()
    assert flat["lung-cancer-ldct.flagged_now"] == 1 and flat["patients"] == 4
    assert all(isinstance(v, int) for v in flat.values())  # counts only: no patient data

    row = csv_row(eligible, AS_OF)
    assert (row["age"], row["lung_eligible"], row["lung_outreach"]) == (66, "yes", "flagged now")
    files = write_report(
        rows,
        counts,
        tmp_path / "run",
        window=resolve_window(sweep="s", as_of=AS_OF),
        as_of=AS_OF,
        run_label="run",
    )
    assert len(files.csv.read_text().splitlines()) == 5
    page = files.html.read_text()
    assert page.count("<img") == 2 and "P1" in page and "P4" in page
    assert files.html.stat().st_mode & 0o077 == 0  # the coordinator's eyes only
