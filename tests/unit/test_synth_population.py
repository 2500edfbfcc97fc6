"""The synthetic screening population: deterministic, boundary cases first, loadable studies."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pydicom
import pytest

from pacsflow.errors import InvalidInputError
from pacsflow.pathways.screening_rules import ScreeningProgram, SmokingStatus
from pacsflow.synth.population import MRN_SYSTEM, screening_population

AS_OF = date(2026, 6, 1)
LUNG, AAA = ScreeningProgram.LUNG_CANCER, ScreeningProgram.AAA


def test_same_seed_same_people_other_seed_other_people() -> None:
    a = screening_population(40, seed=5, as_of=AS_OF)
    b = screening_population(40, seed=5, as_of=AS_OF)
    c = screening_population(40, seed=6, as_of=AS_OF)
    assert a == b
    assert a.fhir_bundle() == b.fhir_bundle()
    assert [p.facts for p in a.patients[20:]] != [p.facts for p in c.patients[20:]]


def test_boundary_cases_come_first_with_the_rules_answers() -> None:
    population = screening_population(14, seed=1, as_of=AS_OF)
    answers = [population.eligibility()[p.mrn] for p in population.patients]
    lung = [a[LUNG].eligible for a in answers]
    # 50, 80 (day before 81), 81, 49 (day before 50), 20 py, 19.5 py, py unknown,
    # quit exactly 15 years ago, quit 15 years + 1 day ago, quit 1990 (5 py), never,
    # woman 70 current 40 py, status not recorded, enrolled man 66.
    assert lung == [True, True, False, False, True, False, None, True, False, False,
                    False, True, None, True]  # fmt: skip
    aaa = [a[AAA].eligible for a in answers]
    assert aaa[9] is True  # man 65, former smoker long ago
    assert aaa[10] is False  # man 70, never smoked
    assert aaa[11] is False  # woman
    assert aaa[12] is None  # man 72, smoking not recorded
    assert aaa[13] is False  # already had the one-time ultrasound
    assert population.patients[13].mrn not in population.expected_outreach(LUNG)  # enrolled


def test_a_larger_population_has_every_kind_of_answer() -> None:
    population = screening_population(200, seed=2, as_of=AS_OF)
    statuses = {p.facts.smoking_status for p in population.patients}
    assert statuses == set(SmokingStatus)
    for program in ScreeningProgram:
        answers = {e[program].eligible for e in population.eligibility().values()}
        assert answers == {True, False, None}
        assert population.expected_outreach(program)
    recordings = {p.recording for p in population.patients}
    assert any(r.quit_month_only for r in recordings)
    assert any(r.superseded_status for r in recordings)
    assert {r.status for r in recordings} == {"snomed", "loinc", "absent"}


def test_fhir_bundle_is_a_transaction_of_conditional_creates() -> None:
    bundle = screening_population(20, seed=3, as_of=AS_OF).fhir_bundle()
    assert bundle["type"] == "transaction"
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert kinds == {"Patient", "Observation", "EpisodeOfCare"}
    assert all(e["request"]["ifNoneExist"].startswith("identifier=") for e in bundle["entry"])
    patients = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert len(patients) == 20
    assert patients[0]["resource"]["identifier"][0]["system"] == MRN_SYSTEM


def test_write_studies_gives_each_patient_a_small_chest_ct(tmp_path: Path) -> None:
    population = screening_population(5, seed=4, as_of=AS_OF)
    truths = population.write_studies(tmp_path / "a")
    again = population.write_studies(tmp_path / "b")
    assert [t.study_uid for t in truths] == [t.study_uid for t in again]
    for patient, truth in zip(population.patients, truths, strict=True):
        files = sorted((tmp_path / "a" / patient.mrn).rglob("*.dcm"))
        assert len(files) == 2
        ds = pydicom.dcmread(files[0])
        assert (ds.PatientID, ds.StudyDate, ds.Modality) == (
            patient.mrn,
            f"{patient.study_date:%Y%m%d}",
            "CT",
        )
        assert ds.Rows == 16 and truth.study_uid == ds.StudyInstanceUID
        if patient.facts.last_screening_exam:
            assert patient.study_date == patient.facts.last_screening_exam


def test_population_needs_someone() -> None:
    with pytest.raises(InvalidInputError):
        screening_population(0, seed=1, as_of=AS_OF)
