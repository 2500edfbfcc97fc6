"""Screening facts read from, and outreach flags written to, the FHIR R4 test double over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import httpx
import pytest

from pacsflow.errors import InvalidInputError, PeerUnavailableError
from pacsflow.fhir.test_server import FhirTestServer, run_fhir_test_server
from pacsflow.pathways.ehr_screening import OUTREACH_SYSTEM, EhrScreening
from pacsflow.pathways.screening_rules import (
    ScreeningProgram,
    evaluate,
    lung_cancer_screening,
    needs_outreach,
)
from pacsflow.stack.process import free_port
from pacsflow.synth.population import (
    MRN_SYSTEM,
    ScreeningPopulation,
    load_population,
    screening_population,
)

AS_OF = date(2026, 6, 1)
NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def fhir() -> Iterator[FhirTestServer]:
    server = run_fhir_test_server("127.0.0.1", 0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def population() -> ScreeningPopulation:
    return screening_population(60, seed=11, as_of=AS_OF)


def _count(base: str, resource_type: str, token: str) -> int:
    r = httpx.get(f"{base}/{resource_type}", params={"identifier": token}, timeout=10)
    assert r.status_code == 200
    return len(r.json().get("entry", []))


def _sweep(ehr: EhrScreening, as_of: date) -> dict[ScreeningProgram, set[str]]:
    """What a cohort run does: read facts, apply the rules, flag; returns created flags."""
    created: dict[ScreeningProgram, set[str]] = {p: set() for p in ScreeningProgram}
    for patient_id in ehr.patient_ids(page_size=7):  # several pages: next links followed
        facts = ehr.screening_facts(patient_id)
        for program, eligibility in evaluate(facts, as_of).items():
            if needs_outreach(facts, eligibility):
                result = ehr.flag_for_outreach(patient_id, eligibility, authored_on=NOW)
                assert result.flag_reference.startswith("Flag/")
                assert result.task_reference and result.task_reference.startswith("Task/")
                if result.created:
                    created[program].add(patient_id)
    return created


def test_facts_read_from_fhir_match_the_ground_truth(
    fhir: FhirTestServer, population: ScreeningPopulation
) -> None:
    ids = load_population(population, fhir.url)
    with EhrScreening(fhir.url, timeout_s=10) as ehr:
        for p in population.patients:
            assert ehr.find_patient_id(MRN_SYSTEM, p.mrn) == ids[p.mrn]
            read = ehr.screening_facts(
                ids[p.mrn],
                last_screening_exam=p.facts.last_screening_exam,
                lungrads_interval_months=p.facts.lungrads_interval_months,
            )
            assert read == p.facts, (p.mrn, p.recording)


def test_loading_the_population_twice_creates_nothing_new(
    fhir: FhirTestServer, population: ScreeningPopulation
) -> None:
    first = load_population(population, fhir.url)
    second = load_population(population, fhir.url)
    assert first == second
    with EhrScreening(fhir.url, timeout_s=10) as ehr:
        paged = list(ehr.patient_ids(page_size=7))
        assert sorted(paged) == sorted(first.values())
        one = list(ehr.patient_ids({"identifier": f"{MRN_SYSTEM}|{population.patients[0].mrn}"}))
        assert one == [first[population.patients[0].mrn]]
    assert _count(fhir.url, "Patient", f"{MRN_SYSTEM}|") == len(population.patients)


def test_flagged_patients_are_the_expected_ones_and_a_second_run_creates_nothing(
    fhir: FhirTestServer, population: ScreeningPopulation
) -> None:
    ids = load_population(population, fhir.url)
    by_id = {patient_id: mrn for mrn, patient_id in ids.items()}
    with EhrScreening(fhir.url, timeout_s=10) as ehr:
        first = _sweep(ehr, AS_OF)
        for program in ScreeningProgram:
            expected = population.expected_outreach(program)
            assert expected, f"the population should have someone to flag for {program}"
            assert {by_id[i] for i in first[program]} == expected
        second = _sweep(ehr, AS_OF)
    assert all(not flagged for flagged in second.values())
    total = sum(len(population.expected_outreach(p)) for p in ScreeningProgram)
    assert _count(fhir.url, "Flag", f"{OUTREACH_SYSTEM}|") == total
    assert _count(fhir.url, "Task", f"{OUTREACH_SYSTEM}|") == total


def test_the_task_points_at_the_flag_and_the_patient(
    fhir: FhirTestServer, population: ScreeningPopulation
) -> None:
    ids = load_population(population, fhir.url)
    mrn = sorted(population.expected_outreach(ScreeningProgram.LUNG_CANCER))[0]
    with EhrScreening(fhir.url, timeout_s=10) as ehr:
        facts = ehr.screening_facts(ids[mrn])
        result = ehr.flag_for_outreach(
            ids[mrn], lung_cancer_screening(facts, AS_OF), authored_on=NOW
        )
        again = ehr.flag_for_outreach(
            ids[mrn], lung_cancer_screening(facts, AS_OF), authored_on=NOW
        )
    assert result.created and not again.created
    assert (again.flag_reference, again.task_reference) == (
        result.flag_reference,
        result.task_reference,
    )
    assert result.task_reference is not None
    task = httpx.get(f"{fhir.url}/{result.task_reference}", timeout=10).json()
    flag = httpx.get(f"{fhir.url}/{result.flag_reference}", timeout=10).json()
    assert task["focus"]["reference"] == result.flag_reference
    assert task["for"]["reference"] == flag["subject"]["reference"] == f"Patient/{ids[mrn]}"
    assert flag["status"] == "active" and task["intent"] == "proposal"
    assert flag["code"]["coding"][0]["code"] == ScreeningProgram.LUNG_CANCER.value


def test_an_ineligible_patient_is_not_flagged(
    fhir: FhirTestServer, population: ScreeningPopulation
) -> None:
    ids = load_population(population, fhir.url)
    never = next(p for p in population.patients if p.facts.smoking_status == "never")
    with EhrScreening(fhir.url, timeout_s=10) as ehr:
        eligibility = lung_cancer_screening(ehr.screening_facts(ids[never.mrn]), AS_OF)
        assert eligibility.eligible is False
        with pytest.raises(InvalidInputError, match="not eligible"):
            ehr.flag_for_outreach(ids[never.mrn], eligibility, authored_on=NOW)
    assert _count(fhir.url, "Flag", f"{OUTREACH_SYSTEM}|") == 0


def test_unknown_patient_and_unreachable_server_are_told_apart(fhir: FhirTestServer) -> None:
    with EhrScreening(fhir.url, timeout_s=10) as ehr:
        with pytest.raises(InvalidInputError, match="404"):
            ehr.screening_facts("no-such-patient")
        assert ehr.find_patient_id(MRN_SYSTEM, "NOBODY") is None
    with EhrScreening(f"http://127.0.0.1:{free_port()}", timeout_s=2) as ehr:
        with pytest.raises(PeerUnavailableError):
            ehr.screening_facts("anyone")
