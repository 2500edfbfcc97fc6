"""FHIR R4 result Bundle and coordinator Task, validated with fhir.resources' R4B models."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from pacsflow.domain import Finding, Location, ModelRef, Priority
from pacsflow.errors import InvalidInputError
from pacsflow.fhir.resources import (
    build_result_bundle,
    build_task,
    transaction_bundle,
    validate_resource,
)

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
MODEL = ModelRef(name="ich-segresnet", version="7")
ISSUED = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
BLEED = Finding(
    kind="hemorrhage",
    subtype="subdural",
    probability=0.96,
    volume_ml=23.4,
    diameter_mm=41.0,
    location=Location(side="right", compartment="supratentorial", region="parietal"),
)


def _bundle(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "study_uid": STUDY_UID,
        "accession_number": "ACC-7",
        "patient_id": "PAT-7",
        "findings": [BLEED],
        "model": MODEL,
        "priority": Priority.CRITICAL,
        "report_text": "AI: right subdural hemorrhage, 23.4 mL.",
        "issued": ISSUED,
    }
    arguments.update(overrides)
    return build_result_bundle(**arguments)


def _resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type
    ]


def _codes(concepts: list[dict[str, Any]]) -> set[str]:
    return {coding["code"] for concept in concepts for coding in concept.get("coding", [])}


def test_result_bundle_is_a_valid_r4_transaction() -> None:
    bundle = _bundle()

    parsed = Bundle.model_validate(bundle)
    assert parsed.type == "transaction"
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "DiagnosticReport",
        "Observation",
        "Flag",
    ]


def test_diagnostic_report_carries_status_category_code_study_and_conclusion() -> None:
    (report,) = _resources(_bundle(), "DiagnosticReport")

    assert report["status"] == "preliminary"
    assert _codes(report["category"]) == {"RAD"}
    assert report["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "24725-4",
        "display": "CT Head",
    }
    assert report["conclusion"] == "AI: right subdural hemorrhage, 23.4 mL."
    assert report["imagingStudy"][0]["identifier"] == {
        "system": "urn:dicom:uid",
        "value": f"urn:oid:{STUDY_UID}",
    }
    assert {"ACSN"} <= {
        c["code"] for i in report["identifier"] if "type" in i for c in i["type"]["coding"]
    }
    assert report["issued"].startswith("2026-03-01T08:30:00")
    assert report["subject"] == {"type": "Patient", "identifier": {"value": "PAT-7"}}


def test_observation_has_volume_in_ml_critical_interpretation_and_model() -> None:
    bundle = _bundle()
    (observation,) = _resources(bundle, "Observation")

    assert observation["valueQuantity"] == {
        "value": 23.4,
        "unit": "mL",
        "system": "http://unitsofmeasure.org",
        "code": "mL",
    }
    assert _codes(observation["interpretation"]) == {"AA"}
    assert observation["interpretation"][0]["coding"][0]["system"] == (
        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
    )
    assert "ich-segresnet" in observation["device"]["display"]
    assert "7" in observation["device"]["display"]
    diameters = [c for c in observation["component"] if _codes([c["code"]]) == {"81827009"}]
    assert diameters[0]["valueQuantity"]["code"] == "mm"
    # The report points at the observation through the entry's full URL.
    (report,) = _resources(bundle, "DiagnosticReport")
    observation_url = next(
        e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    )
    assert report["result"] == [{"reference": observation_url}]


def test_flag_only_for_a_critical_priority() -> None:
    (flag,) = _resources(_bundle(), "Flag")
    assert flag["status"] == "active"
    assert _codes(flag["category"]) == {"clinical"}
    assert flag["code"]["text"] == "Critical finding: intracranial hemorrhage (AI)"

    for priority in (Priority.URGENT, Priority.REVIEW, Priority.ROUTINE):
        bundle = _bundle(priority=priority)
        assert _resources(bundle, "Flag") == []
        (observation,) = _resources(bundle, "Observation")
        assert _codes(observation["interpretation"]) == {"A"}


def test_every_entry_is_a_conditional_create_with_stable_identifiers() -> None:
    first = _bundle()
    later = _bundle(issued=ISSUED + timedelta(hours=1), report_text="edited")

    for entry in first["entry"]:
        request = entry["request"]
        assert request["method"] == "POST"
        assert request["url"] == entry["resource"]["resourceType"]
        identifier = entry["resource"]["identifier"][0]
        assert request["ifNoneExist"] == (
            f"identifier={identifier['system']}|{identifier['value']}"
        )
        assert STUDY_UID in identifier["value"] and "/7/" in identifier["value"]
    assert [e["request"] for e in later["entry"]] == [e["request"] for e in first["entry"]]
    assert [e["fullUrl"] for e in later["entry"]] == [e["fullUrl"] for e in first["entry"]]
    other_version = _bundle(model=MODEL.model_copy(update={"version": "8"}))
    assert other_version["entry"][0]["request"] != first["entry"][0]["request"]


def test_normal_study_gets_one_normal_observation_and_no_flag() -> None:
    bundle = _bundle(findings=[], priority=Priority.ROUTINE, report_text="No hemorrhage (AI).")

    (observation,) = _resources(bundle, "Observation")
    assert _codes(observation["interpretation"]) == {"N"}
    assert _codes([observation["valueCodeableConcept"]]) == {"272519000"}
    assert _resources(bundle, "Flag") == []


def test_study_not_analysed_gets_a_report_only() -> None:
    bundle = _bundle(findings=[], priority=Priority.NOT_ANALYSED, report_text="Not analysed.")

    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["DiagnosticReport"]
    assert "result" not in bundle["entry"][0]["resource"]


def test_nodule_bundle_uses_ct_chest_and_its_own_flag_text() -> None:
    nodule = Finding(kind="nodule", probability=0.7, diameter_mm=9.0)
    bundle = _bundle(findings=[nodule], model=ModelRef(name="nodule-net", version="2"))

    (report,) = _resources(bundle, "DiagnosticReport")
    assert _codes([report["code"]]) == {"24627-2"}
    (observation,) = _resources(bundle, "Observation")
    assert "valueQuantity" not in observation  # no volume: the finding is coded Present
    assert _codes([observation["valueCodeableConcept"]]) == {"52101004"}
    (flag,) = _resources(bundle, "Flag")
    assert flag["code"]["text"] == "Critical finding: pulmonary nodule (AI)"


def test_ehr_patient_reference_is_used_as_subject() -> None:
    bundle = _bundle(ehr_patient_reference="Patient/ehr-42")
    for entry in bundle["entry"]:
        assert entry["resource"]["subject"] == {"reference": "Patient/ehr-42"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"issued": datetime(2026, 3, 1, 8, 30)}, "time zone"),
        ({"findings": [Finding(kind="fracture", probability=0.5)]}, "fracture"),
        ({"priority": Priority.NOT_ANALYSED}, "not analysed"),
    ],
)
def test_result_bundle_refuses_bad_input(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _bundle(**overrides)


def test_validation_failure_is_an_invalid_input_error() -> None:
    with pytest.raises(InvalidInputError, match="Observation"):
        validate_resource({"resourceType": "Observation", "status": "final", "colour": "red"})
    with pytest.raises(InvalidInputError, match="unknown FHIR R4 resource type"):
        validate_resource({"resourceType": "Quantity", "value": 1})
    with pytest.raises(InvalidInputError, match="no identifier"):
        transaction_bundle([{"resourceType": "Flag", "status": "active", "code": {"text": "x"}}])


def test_task_for_the_coordinator() -> None:
    task = build_task(
        study_uid=STUDY_UID,
        patient_id="PAT-7",
        model=MODEL,
        description="Lung-RADS 4A: follow-up low-dose CT in 3 months",
        due=date(2026, 6, 1),
        authored_on=ISSUED,
        ehr_patient_reference="Patient/ehr-42",
        priority="urgent",
    )

    assert (task["status"], task["intent"], task["priority"]) == ("requested", "order", "urgent")
    assert task["restriction"]["period"]["end"] == "2026-06-01"
    assert task["for"] == {"reference": "Patient/ehr-42"}
    bundle = transaction_bundle([task])
    assert bundle["entry"][0]["request"]["ifNoneExist"].endswith("/7/task-follow-up")
    Bundle.model_validate(bundle)
    with pytest.raises(InvalidInputError, match="priority"):
        build_task(
            study_uid=STUDY_UID,
            patient_id="PAT-7",
            model=MODEL,
            description="x",
            due=date(2026, 6, 1),
            authored_on=ISSUED,
            priority="whenever",
        )
