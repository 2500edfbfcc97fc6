"""FHIR resources -> ScreeningFacts, the outreach Flag/Task, and the test double's searches."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from pacsflow.errors import InvalidInputError
from pacsflow.fhir.test_server import FhirStore
from pacsflow.pathways.ehr_screening import (
    PROGRAM_SYSTEM,
    facts_from_resources,
    fhir_date,
    outreach_bundle,
    outreach_identifier,
    outreach_resources,
    programs_of,
)
from pacsflow.pathways.screening_rules import (
    ScreeningFacts,
    ScreeningProgram,
    Sex,
    SmokingStatus,
    lung_cancer_screening,
)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1960-03-04"}
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def obs(
    system: str, code: str, when: str | None, status: str = "final", **value: Any
) -> dict[str, Any]:
    o: dict[str, Any] = {
        "resourceType": "Observation",
        "status": status,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/p1"},
        **value,
    }
    if when:
        o["effectiveDateTime"] = when
    return o


def status_obs(snomed: str, when: str, **kw: Any) -> dict[str, Any]:
    value = {"coding": [{"system": SNOMED, "code": snomed}]}
    return obs(LOINC, "72166-2", when, valueCodeableConcept=value, **kw)


def episode(program: str, status: str, system: str = PROGRAM_SYSTEM) -> dict[str, Any]:
    return {
        "resourceType": "EpisodeOfCare",
        "status": status,
        "type": [{"coding": [{"system": system, "code": program}]}],
        "patient": {"reference": "Patient/p1"},
    }


@pytest.mark.parametrize(
    ("text", "latest", "expected"),
    [
        ("2011", False, date(2011, 1, 1)),
        ("2011", True, date(2011, 12, 31)),
        ("2012-02", True, date(2012, 2, 29)),
        ("2011-04-03", True, date(2011, 4, 3)),
        ("2011-04-03T23:30:00+02:00", False, date(2011, 4, 3)),
    ],
)
def test_fhir_date(text: str, latest: bool, expected: date) -> None:
    assert fhir_date(text, latest=latest) == expected


def test_fhir_date_refuses_garbage() -> None:
    with pytest.raises(InvalidInputError):
        fhir_date("yesterday")


def test_latest_usable_smoking_status_wins() -> None:
    observations = [
        status_obs("449868002", "2005-01-01"),  # current, old
        status_obs("8517006", "2020-05-01"),  # former, latest usable
        status_obs("266919005", "2024-01-01", status="entered-in-error"),
        obs(LOINC, "74010-0", "2020-05-01", valueDateTime="2019-07"),
        obs(SNOMED, "401201003", "2020-05-01", valueQuantity={"value": 32}),
    ]
    facts = facts_from_resources(PATIENT, observations)
    assert facts == ScreeningFacts(
        birth_date=date(1960, 3, 4),
        sex=Sex.MALE,
        smoking_status=SmokingStatus.FORMER,
        pack_years=32.0,
        quit_date=date(2019, 7, 31),
    )


def test_quit_date_as_a_component_and_loinc_answers() -> None:
    status = obs(
        LOINC,
        "72166-2",
        "2024-01-01",
        valueCodeableConcept={"coding": [{"system": LOINC, "code": "LA15920-4"}]},
        component=[
            {
                "code": {"coding": [{"system": SNOMED, "code": "160625004"}]},
                "valueDateTime": "2015-09-10",
            }
        ],
    )
    pack = obs(LOINC, "8664-5", "2024-01-01", valueQuantity={"value": 21.5})
    facts = facts_from_resources(PATIENT, [status, pack])
    assert facts.smoking_status == SmokingStatus.FORMER
    assert facts.quit_date == date(2015, 9, 10)
    assert facts.pack_years == 21.5


def test_nothing_recorded_is_unknown_not_never() -> None:
    facts = facts_from_resources({"resourceType": "Patient", "id": "p2", "birthDate": "1958"}, [])
    assert facts.smoking_status == SmokingStatus.UNKNOWN
    assert facts.sex == Sex.UNKNOWN
    assert facts.birth_date is None  # a year-only birth date leaves the age open
    assert facts.pack_years is None and facts.quit_date is None
    assert lung_cancer_screening(facts, date(2026, 1, 1)).eligible is None


def test_smoker_current_status_unknown_maps_to_unknown() -> None:
    facts = facts_from_resources(PATIENT, [status_obs("77176002", "2024-01-01")])
    assert facts.smoking_status == SmokingStatus.UNKNOWN


def test_episodes_of_care_give_enrolled_and_completed_programs() -> None:
    lung, aaa = ScreeningProgram.LUNG_CANCER.value, ScreeningProgram.AAA.value
    enrolled, completed = programs_of(
        [
            episode(lung, "active"),
            episode(aaa, "finished"),
            episode(lung, "cancelled"),
            episode("mammography", "active"),  # not a pacsflow programme
            episode(aaa, "active", system="urn:other"),
        ]
    )
    assert enrolled == {lung}
    assert completed == {aaa}
    assert programs_of([episode(lung, "finished"), episode(lung, "onhold")]) == (
        frozenset({lung}),
        frozenset(),
    )
    assert programs_of([episode(lung, "entered-in-error")]) == (frozenset(), frozenset())


def test_facts_need_a_patient() -> None:
    with pytest.raises(InvalidInputError):
        facts_from_resources({"resourceType": "Practitioner"}, [])


def _eligible() -> Any:
    facts = ScreeningFacts(
        birth_date=date(1960, 1, 1),
        sex=Sex.FEMALE,
        smoking_status=SmokingStatus.CURRENT,
        pack_years=30,
    )
    return lung_cancer_screening(facts, date(2026, 6, 1))


def test_outreach_identifiers_depend_on_patient_and_program_only() -> None:
    a = outreach_resources("p1", _eligible(), authored_on=NOW)
    b = outreach_resources("p1", _eligible(), authored_on=datetime(2027, 1, 1, tzinfo=UTC))
    assert [r["identifier"] for r in a] == [r["identifier"] for r in b]
    assert outreach_identifier("p/1", ScreeningProgram.AAA, "flag")["value"] == (
        "p_1/aaa-ultrasound/flag"
    )
    assert [r["resourceType"] for r in a] == ["Flag", "Task"]
    assert (
        outreach_resources("p1", _eligible(), authored_on=NOW, with_task=False)[0]["resourceType"]
        == "Flag"
    )


def test_outreach_bundle_links_the_task_to_the_flag_entry() -> None:
    bundle = outreach_bundle(outreach_resources("p1", _eligible(), authored_on=NOW))
    flag, task = bundle["entry"]
    assert task["resource"]["focus"]["reference"] == flag["fullUrl"]
    assert flag["request"]["ifNoneExist"].startswith("identifier=urn:pacsflow:screening-outreach|")
    assert task["request"]["ifNoneExist"] != flag["request"]["ifNoneExist"]


def test_outreach_needs_eligibility_and_an_aware_time() -> None:
    facts = ScreeningFacts(birth_date=date(1990, 1, 1), smoking_status=SmokingStatus.NEVER)
    with pytest.raises(InvalidInputError, match="not eligible"):
        outreach_resources("p1", lung_cancer_screening(facts, date(2026, 1, 1)), authored_on=NOW)
    with pytest.raises(InvalidInputError, match="time zone"):
        outreach_resources("p1", _eligible(), authored_on=datetime(2026, 1, 1))


def test_test_double_searches_by_patient_and_code() -> None:
    store = FhirStore()
    store.transact(
        [
            (status_obs("8517006", "2020-01-01"), None, None),
            (obs(LOINC, "8664-5", "2020-01-01", valueQuantity={"value": 3}), None, None),
            ({**status_obs("8517006", "2020-01-01"), "subject": {"reference": "Patient/p2"}},
             None, None),
            (episode(ScreeningProgram.AAA.value, "active"), None, None),
        ]
    )  # fmt: skip

    def found(resource_type: str, **params: str) -> int:
        return len(store.search(resource_type, list(params.items())))

    assert found("Observation", patient="Patient/p1") == 2
    assert found("Observation", patient="p1") == 2
    assert found("Observation", subject="http://ehr.example/fhir/Patient/p1") == 2
    assert found("Observation", patient="Patient/p1", code=f"{LOINC}|72166-2") == 1
    assert found("Observation", patient="p1", code=f"{SNOMED}|1,{LOINC}|8664-5") == 1
    assert found("Observation", code="72166-2") == 2
    assert found("Observation", code=f"{LOINC}|") == 3
    assert found("Observation", code=f"{SNOMED}|72166-2") == 0
    assert found("EpisodeOfCare", patient="Patient/p1") == 1
    assert found("EpisodeOfCare", patient="Patient/p2") == 0


def test_patient_search_only_matches_references_to_patients() -> None:
    store = FhirStore()
    group_flag = {
        "resourceType": "Flag",
        "status": "active",
        "code": {"text": "x"},
        "subject": {"reference": "Group/p1"},
    }
    patient_flag = {**group_flag, "subject": {"reference": "http://ehr.example/Patient/p1"}}
    store.transact([(group_flag, None, None), (patient_flag, None, None)])
    assert len(store.search("Flag", [("patient", "p1")])) == 1
    assert len(store.search("Flag", [("subject", "p1")])) == 2
