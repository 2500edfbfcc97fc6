"""ORU^R01 results and ORM^O01 priority updates built for the RIS."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse

from pacsflow.domain import ModelRef, OrderContext, Priority
from pacsflow.errors import InvalidInputError
from pacsflow.hl7 import (
    AbnormalFlag,
    CodedValue,
    Observation,
    build_oru_r01,
    build_priority_update,
    order_priority,
    parse_message,
)

ORDER = OrderContext(
    accession_number="ACC77",
    patient_id="PAT9",
    placer_order_number="PL9",
    filler_order_number="FI9",
    procedure_code="CTHEAD",
    procedure_text="CT head",
)
MODEL = ModelRef(name="ich-segmenter", version="4", run_id="abc123", approved=True)
VOLUME = Observation(
    identifier=CodedValue(code="ICH-VOL", text="Hemorrhage volume"),
    value_type="NM",
    value=23.456,
    units="mL",
    abnormal_flag=AbnormalFlag.CRITICAL,
)
FINDING = Observation(
    identifier=CodedValue(code="ICH-TYPE", text="Hemorrhage type"),
    value_type="CWE",
    value=CodedValue(code="35486000", text="Subdural hemorrhage", system="SCT"),
    abnormal_flag=AbnormalFlag.ABNORMAL,
)
LOCATION = Observation(
    identifier=CodedValue(code="ICH-LOC", text="Location"),
    value_type="ST",
    value="left frontal | supratentorial",
)


def _oru(**overrides: object) -> str:
    arguments: dict[str, object] = {
        "order": ORDER,
        "study_uid": "1.2.826.0.1.99",
        "accession_number": "ACC77",
        "patient_id": "PAT9",
        "observations": [VOLUME, FINDING, LOCATION],
        "report_text": "Acute subdural hemorrhage, left.\nVolume about 23 mL.",
        "algorithm": MODEL,
        "control_id": "ORU1",
        "sending_facility": "HOSP",
        "receiving_application": "RIS",
        "timestamp": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    arguments.update(overrides)
    return build_oru_r01(**arguments)  # type: ignore[arg-type]


def _obx_by_code(text: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for obx in parse_message(text).all("OBX"):
        found.setdefault(obx.get(3), []).append(obx)
    return found


def test_oru_header_and_order_segments() -> None:
    message = parse_message(_oru())
    assert [s.name for s in message][:5] == ["MSH", "PID", "ORC", "OBR", "NTE"]
    assert message.msh.field(9) == "ORU^R01^ORU_R01"
    assert message.control_id == "ORU1"
    assert message.version == "2.5.1"
    assert message.sending_facility == "HOSP"
    assert message.receiving_application == "RIS"
    assert message.segment("PID").get(3) == "PAT9"
    orc = message.segment("ORC")
    assert (orc.get(1), orc.get(2), orc.get(3)) == ("RE", "PL9", "FI9")
    obr = message.segment("OBR")
    assert obr.get(4) == "CTHEAD" and obr.get(4, 2) == "CT head"
    assert obr.get(18) == "ACC77"
    assert obr.get(24) == "RAD"
    assert obr.get(25) == "P"


def test_oru_observations_values_units_flags_status() -> None:
    obx = _obx_by_code(_oru())
    (volume,) = obx["ICH-VOL"]
    assert volume.get(2) == "NM"
    assert volume.get(5) == "23.456"
    assert volume.components(6) == ["mL", "mL", "UCUM"]
    assert volume.get(8) == "AA"
    assert volume.get(11) == "P"
    (finding,) = obx["ICH-TYPE"]
    assert finding.get(2) == "CWE"
    assert finding.components(5) == ["35486000", "Subdural hemorrhage", "SCT"]
    assert finding.get(8) == "A"
    (location,) = obx["ICH-LOC"]
    assert location.get(5) == "left frontal | supratentorial"  # escaped on the wire
    assert "\\F\\" in location.field(5)
    (study,) = obx["113014"]
    assert study.get(5) == "1.2.826.0.1.99"


def test_oru_report_lines_and_provenance() -> None:
    text = _oru()
    obx = _obx_by_code(text)
    report = obx["18782-3"]
    assert [o.get(2) for o in report] == ["TX", "TX"]
    assert [o.get(5) for o in report] == [
        "Acute subdural hemorrhage, left.",
        "Volume about 23 mL.",
    ]
    assert obx["111001"][0].get(5) == "ich-segmenter"
    assert obx["111003"][0].get(5) == "4"
    set_ids = [o.get(1) for o in parse_message(text).all("OBX")]
    assert set_ids == [str(i) for i in range(1, len(set_ids) + 1)]
    notes = [n.get(3) for n in parse_message(text).all("NTE")]
    assert notes[0].startswith("AI-generated, preliminary")
    assert "ich-segmenter version 4, run abc123" in notes[0]
    assert len(notes) == 1  # approved model: no "not approved" note


def test_oru_final_status_and_unapproved_model() -> None:
    text = _oru(result_status="F", algorithm=ModelRef(name="m", version="1"))
    message = parse_message(text)
    assert message.segment("OBR").get(25) == "F"
    assert {o.get(11) for o in message.all("OBX")} == {"F"}
    notes = [n.get(3) for n in message.all("NTE")]
    assert not notes[0].startswith("AI-generated, preliminary")
    assert any("not approved for clinical use" in n for n in notes)


def test_oru_without_order_uses_accession_as_filler_and_default_service() -> None:
    message = parse_message(_oru(order=None, report_text=""))
    assert message.segment("ORC").get(3) == "ACC77"
    assert message.segment("OBR").get(4) == "PACSFLOW-AI"
    assert "18782-3" not in {o.get(3) for o in message.all("OBX")}


def test_oru_groups_parse_in_hl7apy() -> None:
    """An independent parser finds the 2.5.1 ORU_R01 groups where they belong."""
    parsed = hl7apy_parse(_oru(), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=True)
    order_obs = parsed.oru_r01_patient_result.oru_r01_order_observation
    assert order_obs.obr.obr_25.value == "P"
    assert order_obs.obr.obr_18.value == "ACC77"
    assert len(order_obs.oru_r01_observation) == 8


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"result_status": "X"}, "OBR-25"),
        ({"accession_number": ""}, "accession_number"),
        ({"study_uid": " "}, "study_uid"),
        (
            {
                "observations": [
                    Observation(identifier=CodedValue(code="V"), value_type="NM", value="twelve")
                ]
            },
            "not a number",
        ),
        (
            {
                "observations": [
                    Observation(
                        identifier=CodedValue(code="V"), value_type="NM", value=float("nan")
                    )
                ]
            },
            "not finite",
        ),
        (
            {
                "observations": [
                    Observation(identifier=CodedValue(code="C"), value_type="CWE", value="x")
                ]
            },
            "CodedValue",
        ),
    ],
)
def test_oru_refuses_bad_input(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        _oru(**overrides)


def test_nm_values_are_plain_decimals() -> None:
    values = [(12, "12"), (0.5, "0.5"), (1e-7, "0"), (123456789.0, "123456789"), ("7.25", "7.25")]
    for value, expected in values:
        obs = Observation(identifier=CodedValue(code="V"), value_type="NM", value=value)
        text = _oru(observations=[obs])
        assert _obx_by_code(text)["V"][0].get(5) == expected


# -- priority update --------------------------------------------------------------------------
def test_priority_update_structure() -> None:
    text = build_priority_update(
        order=ORDER,
        accession_number="ACC77",
        patient_id="PAT9",
        priority=Priority.CRITICAL,
        control_id="PRI1",
        sending_facility="HOSP",
        receiving_application="RIS",
    )
    message = parse_message(text)
    assert [s.name for s in message] == ["MSH", "PID", "ORC", "OBR"]
    assert message.msh.field(9) == "ORM^O01^ORM_O01"
    orc = message.segment("ORC")
    assert orc.get(1) == "XX"
    assert (orc.get(2), orc.get(3)) == ("PL9", "FI9")
    assert orc.get(7, 6) == "S"
    obr = message.segment("OBR")
    assert obr.get(18) == "ACC77"
    assert obr.get(27, 6) == "S"
    assert obr.get(4) == "CTHEAD"


def test_priority_update_with_tq1_and_round_trip_through_interpret() -> None:
    from pacsflow.hl7 import OrderMessage, interpret

    text = build_priority_update(
        accession_number="ACC5",
        patient_id="PAT5",
        priority="A",
        control_id="PRI2",
        sending_facility="HOSP",
        receiving_application="RIS",
        include_tq1=True,
    )
    message = parse_message(text)
    assert message.segment("TQ1").get(9) == "A"
    content = interpret(message)
    assert isinstance(content, OrderMessage)
    (event,) = content.orders
    assert event.order_control == "XX"
    assert (event.order.accession_number, event.order.priority) == ("ACC5", "A")


def test_order_priority_mapping() -> None:
    assert order_priority(Priority.CRITICAL) == "S"
    assert order_priority("urgent") == "A"
    assert order_priority(Priority.ROUTINE) == "R"
    assert order_priority("s") == "S"
    with pytest.raises(InvalidInputError, match="no RIS priority"):
        order_priority(Priority.REVIEW)
    with pytest.raises(InvalidInputError, match="table 0027"):
        order_priority("Z")
