"""ACK messages: MSH swap, MSA-1/MSA-2, ERR for AE/AR; and reading a peer's ACK."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse

from pacsflow.hl7 import (
    AckCode,
    ErrorCode,
    ErrorLocation,
    Hl7ParseError,
    build_ack,
    parse_ack,
    parse_message,
)

ORIGINAL_251 = "\r".join(
    [
        r"MSH|^~\&|RIS^1.2.3^ISO|HOSP|PACSFLOW|RAD|20260101120000||ORM^O01^ORM_O01|ORIG42|P|2.5.1",
        "PID|1||PAT1",
    ]
)
ORIGINAL_23 = r"MSH|^~\&|RIS|HOSP|PACSFLOW|RAD|20260101120000||ADT^A08|ORIG23|T|2.3"


def _segments(ack: str) -> dict[str, list[str]]:
    assert ack.endswith("\r")
    return {line.split("|", 1)[0]: line.split("|") for line in ack.split("\r") if line}


def test_aa_structure() -> None:
    moment = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
    ack = build_ack(parse_message(ORIGINAL_251), "AA", timestamp=moment, control_id="ACK1")
    message = parse_message(ack)
    assert [s.name for s in message] == ["MSH", "MSA"]
    # Sender and receiver swapped, components kept.
    assert message.msh.field(3) == "PACSFLOW"
    assert message.msh.field(4) == "RAD"
    assert message.msh.field(5) == "RIS^1.2.3^ISO"
    assert message.msh.field(6) == "HOSP"
    assert message.timestamp == "20260203040506+0000"
    assert message.msh.field(9) == "ACK^O01^ACK"
    assert message.control_id == "ACK1"
    assert message.processing_id == "P"
    assert message.version == "2.5.1"
    msa = message.segment("MSA")
    assert (msa.get(1), msa.get(2)) == ("AA", "ORIG42")


def test_new_control_id_differs_and_fits_msh10() -> None:
    first = parse_message(build_ack(ORIGINAL_251, AckCode.ACCEPT))
    second = parse_message(build_ack(ORIGINAL_251, AckCode.ACCEPT))
    assert first.control_id != "ORIG42"
    assert first.control_id != second.control_id
    assert 0 < len(first.control_id) <= 20


def test_ae_with_err_v251() -> None:
    ack = build_ack(
        ORIGINAL_251,
        "AE",
        "PID-3 patient identifier missing",
        "PID^1^3",
        ErrorCode.REQUIRED_FIELD_MISSING,
    )
    fields = _segments(ack)
    assert fields["MSA"][1:3] == ["AE", "ORIG42"]
    assert fields["MSA"][3] == "PID-3 patient identifier missing"
    err = parse_message(ack).segment("ERR")
    assert err.field(1) == ""  # ERR-1 is for v2.3/2.4 receivers only
    assert err.field(2) == "PID^1^3"
    assert err.field(3) == "101^Required field missing^HL70357"
    assert err.field(4) == "E"
    assert err.get(8) == "PID-3 patient identifier missing"


def test_ack_is_conformant_for_hl7apy_strict() -> None:
    ack = build_ack(ORIGINAL_251, "AE", "bad", ErrorLocation("OBR", 2, 18), "101")
    parsed = hl7apy_parse(ack, validation_level=VALIDATION_LEVEL.STRICT)
    assert parsed.validate()
    assert parsed.msa.msa_1.value == "AE"


def test_v23_ack_has_no_structure_component_and_carries_err1() -> None:
    ack = build_ack(ORIGINAL_23, "AE", "bad date", "PID-7", "102")
    message = parse_message(ack)
    assert message.msh.field(9) == "ACK^A08"
    assert message.processing_id == "T"
    assert message.version == "2.3"
    err = message.segment("ERR")
    assert err.field(1) == "PID^1^7^102&Data type error&HL70357"
    assert err.field(3) == "102^Data type error^HL70357"


def test_v23_err1_without_location_still_carries_the_code() -> None:
    err = parse_message(build_ack(ORIGINAL_23, "AE", "boom")).segment("ERR")
    assert err.field(1) == "^^^207&Application internal error&HL70357"


def test_ar_defaults_to_unsupported_message_type() -> None:
    ack = build_ack(ORIGINAL_251, "AR", "SIU^S12 not supported", "MSH^1^9")
    err = parse_message(ack).segment("ERR")
    assert err.get(3) == "200"
    assert err.field(2) == "MSH^1^9"


def test_ae_without_code_is_internal_error_and_aa_has_no_err() -> None:
    assert parse_message(build_ack(ORIGINAL_251, "AE", "boom")).segment("ERR").get(3) == "207"
    assert (
        parse_message(build_ack(ORIGINAL_251, "AA", "fine", "PID-3", "101")).segment("ERR") is None
    )


def test_text_is_escaped_and_msa3_limited() -> None:
    text = "bad | value ^ here & there " + "x" * 200
    ack = build_ack(ORIGINAL_251, "AE", text, None, "102")
    message = parse_message(ack)
    assert len(message.segment("MSA").get(3)) <= 80
    assert message.segment("MSA").get(3).startswith("bad | value ^ here & there")
    assert message.segment("ERR").get(8) == text


def test_ack_uses_the_messages_own_delimiters() -> None:
    original = "MSH#*@!$#RIS#HOSP#PACSFLOW#RAD#20260101##ORM*O01#C9#P#2.5"
    ack = build_ack(original, "AE", "a*b", "PID-3", "101")
    assert ack.startswith("MSH#*@!$#PACSFLOW#RAD#RIS#HOSP#")
    message = parse_message(ack)
    assert message.segment("MSA").get(3) == "a*b"
    assert message.segment("ERR").field(2) == "PID*1*3"


def test_parse_ack_round_trip() -> None:
    ack = parse_ack(build_ack(ORIGINAL_251, "AE", "try later", "OBR^1^18", "101"))
    assert ack.code is AckCode.ERROR
    assert ack.acknowledged_control_id == "ORIG42"
    assert ack.text == "try later"
    assert ack.error_code == "101"
    assert ack.error_location == "OBR^1^18"
    assert ack.retryable and not ack.accepted and not ack.rejected


def test_parse_v23_ack_with_err1_only() -> None:
    text = "MSH|^~\\&|RIS|H|PACSFLOW|H|20260101||ACK|A9|P|2.3\rMSA|AR|ORIG9|no\rERR|OBR^1^4^103"
    ack = parse_ack(text)
    assert ack.rejected
    assert ack.error_code == "103"
    assert ack.error_location == "OBR^1^4"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("MSH|^~\\&|RIS|H|P|H|2026||ACK|A1|P|2.5\rERR|x", "no MSA"),
        ("MSH|^~\\&|RIS|H|P|H|2026||ACK|A1|P|2.5\rMSA|OK|X", "table 0008"),
        ("garbage", "MSH"),
    ],
)
def test_parse_ack_refuses_non_acks(text: str, reason: str) -> None:
    with pytest.raises(Hl7ParseError, match=reason):
        parse_ack(text)


def test_ack_declares_the_character_set_of_the_message() -> None:
    latin = ORIGINAL_251.replace("|P|2.5.1", "|P|2.5.1||||||8859/1", 1)
    msh = _segments(build_ack(parse_message(latin), "AE", "x"))["MSH"]
    assert len(msh) == 18 and msh[17] == "8859/1"  # MSH-18 (MSH-1 is the separator)
    plain = _segments(build_ack(parse_message(ORIGINAL_251), "AA"))["MSH"]
    assert len(plain) == 12  # nothing after MSH-12 when the message named no charset
