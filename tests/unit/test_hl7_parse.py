"""Parsing and interpreting inbound HL7 v2: tolerance to real-world variants, and
validation errors that name the field at fault."""

from __future__ import annotations

from datetime import date

import pytest

from pacsflow.domain import OrderContext
from pacsflow.hl7 import (
    AckCode,
    ErrorCode,
    ErrorLocation,
    Hl7ParseError,
    Hl7ValidationError,
    MergeMessage,
    OrderMessage,
    PatientUpdate,
    interpret,
    parse_header,
    parse_message,
)
from pacsflow.hl7.encoding import Encoding
from pacsflow.hl7.message import decode_payload


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment with values at HL7 field positions (SEG-n), so tests read like the standard."""
    top = max(fields)
    return "|".join([name, *(fields.get(i, "") for i in range(1, top + 1))])


def msh(message_type: str, control_id: str = "CTRL1", version: str = "2.5.1") -> str:
    return (
        rf"MSH|^~\&|RIS|HOSP|PACSFLOW|HOSP|20260101120000||{message_type}|{control_id}|P|{version}"
    )


PID = r"PID|1||PAT123^^^HOSP^MR~OLD77^^^OTHER||Doe^Jane^Q||19700131|F"


def orm_v23(endings: str = "\r") -> str:
    """ORM^O01 as a v2.3 RIS sends it: priority in ORC-7 / OBR-27 (TQ.6), a Z-segment."""
    return (
        endings.join(
            [
                msh("ORM^O01", "ORM0001", "2.3"),
                PID,
                r"PV1|1|E",
                r"ZPI|custom^value|with\F\pipe",
                seg(
                    "ORC",
                    {
                        1: "NW",
                        2: "PL1^RIS",
                        3: "FI1^PACS",
                        5: "SC",
                        7: "^^^^^S",
                        12: "1234^House^Greg",
                    },
                ),
                seg(
                    "OBR",
                    {
                        1: "1",
                        2: "PL1",
                        3: "FI1",
                        4: "CTHEAD^CT head without contrast^L",
                        16: "999^Other^Doc",
                        18: "ACC001",
                        27: "^^^^^S",
                        31: "^Sudden weakness \\T\\ aphasia",
                    },
                ),
                "ZDS|1.2.840.99.1^^Application^DICOM",
            ]
        )
        + endings
    )


def omi_v251() -> str:
    """OMI^O23 v2.5.1: TQ1-9 priority, accession in IPC-1 (IHE RAD-4 style)."""
    return "\r".join(
        [
            msh("OMI^O23^OMI_O23", "OMI0001"),
            PID,
            seg("ORC", {1: "NW", 2: "PL2", 3: "FI2", 5: "SC", 12: "55^Grey^Meredith"}),
            seg("TQ1", {1: "1", 9: "A^ASAP^HL70078"}),
            seg("OBR", {1: "1", 2: "PL2", 3: "FI2", 4: "CTCHEST^CT chest^L", 18: "IGNORED"}),
            seg("IPC", {1: "ACC-OMI-9", 2: "RP1", 3: "1.2.3.4", 4: "SPS1", 5: "CT"}),
        ]
    )


# -- parser -----------------------------------------------------------------------------------
@pytest.mark.parametrize("endings", ["\r", "\n", "\r\n"])
def test_segment_endings_parse_the_same(endings: str) -> None:
    message = parse_message(orm_v23(endings))
    assert [s.name for s in message] == ["MSH", "PID", "PV1", "ZPI", "ORC", "OBR", "ZDS"]
    assert message.message_type == "ORM^O01"
    assert message.control_id == "ORM0001"
    assert message.version == "2.3"
    assert message.segment("OBR").get(18) == "ACC001"


def test_msh_fields_are_numbered_like_the_standard() -> None:
    message = parse_message(orm_v23())
    assert message.msh.field(1) == "|"
    assert message.msh.field(2) == "^~\\&"
    assert message.sending_application == "RIS"
    assert message.receiving_application == "PACSFLOW"
    assert message.msh.get(9, 2) == "O01"
    assert message.processing_id == "P"


def test_repetitions_components_and_subcomponents() -> None:
    pid = parse_message(msh("ADT^A08") + "\r" + PID).segment("PID")
    assert pid is not None
    assert pid.get(3) == "PAT123"
    assert pid.get(3, 4) == "HOSP"
    assert pid.get(3, repetition=2) == "OLD77"
    assert pid.get(3, 4, repetition=2) == "OTHER"
    assert pid.get(3, repetition=3) == ""
    assert pid.get(40) == ""
    assert pid.components(5) == ["Doe", "Jane", "Q"]
    sub = parse_message(msh("ADT^A08") + "\rPID|1||A&B^C").segment("PID")
    assert sub is not None and sub.get(3, 1, 2) == "B"


def test_escape_sequences_are_resolved() -> None:
    raw = r"NTE|1||a\F\b\S\c\T\d\R\e\E\f\X41\g\.br\h\H\bold\N\|"
    message = parse_message(msh("ORM^O01") + "\r" + raw)
    assert message.segment("NTE").get(3) == "a|b^c&d~e\\fAg\nhbold"


def test_escape_round_trip() -> None:
    enc = Encoding()
    text = "volume | 12^3 & more ~ \\ end\nnext line"
    assert enc.unescape_text(enc.escape_text(text)) == text
    assert "|" not in enc.escape_text(text)


def test_custom_encoding_characters_from_msh() -> None:
    text = "\r".join(
        [
            "MSH#*@!$#RIS#HOSP#PACSFLOW#HOSP#20260101##ADT*A08#C9#P#2.4",
            "PID#1##ID7*!S!x*$AUTH@ID8##Roe*Ann",
        ]
    )
    message = parse_message(text)
    assert message.encoding == Encoding("#", "*", "@", "!", "$")
    assert message.msh.field(2) == "*@!$"
    assert message.message_type == "ADT^A08"
    pid = message.segment("PID")
    assert pid.get(3) == "ID7"
    assert pid.get(3, 2) == "*x"  # !S! is this message's component separator, "*"
    assert pid.get(3, repetition=2) == "ID8"
    update = interpret(message)
    assert isinstance(update, PatientUpdate) and update.patient_id == "ID7"


def test_z_segments_are_kept_and_do_not_break_order_groups() -> None:
    message = parse_message(orm_v23())
    assert message.segment("ZDS").get(1) == "1.2.840.99.1"
    assert message.segment("ZPI").get(2) == "with|pipe"
    content = interpret(message)
    assert isinstance(content, OrderMessage) and len(content.orders) == 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("PID|1||X", "does not start with an MSH"),
        ("", "does not start with an MSH"),
        ("MSH|^^~\\|RIS", "distinct"),
        (msh("ORM^O01") + "\rpid|1||x", "not a segment name"),
        (msh("ORM^O01") + "\r12|x", "not a segment name"),
    ],
)
def test_parse_errors(text: str, reason: str) -> None:
    with pytest.raises(Hl7ParseError, match=reason):
        parse_message(text)


def test_parse_header_survives_a_broken_body() -> None:
    text = msh("ORM^O01", "HDR1") + "\r!!garbage"
    with pytest.raises(Hl7ParseError):
        parse_message(text)
    assert parse_header(text).control_id == "HDR1"


def test_decode_payload_charsets() -> None:
    assert decode_payload("MSH|^~\\&|Zoë".encode()) == ("MSH|^~\\&|Zoë", "utf-8")
    latin = "MSH|^~\\&|A|B|C|D|||ADT^A08|1|P|2.5|||||8859/1\rPID|1||X||Zoë".encode("latin-1")
    assert decode_payload(latin)[1] == "latin-1"
    assert decode_payload(b"MSH|\xe9\xff")[0].endswith("éÿ")  # not UTF-8: Latin-1 fallback
    # A UTF-8 byte order mark before a Latin-1 message: dropped, the MSH comes first.
    assert decode_payload(b"\xef\xbb\xbf" + latin) == decode_payload(latin)


# -- orders -----------------------------------------------------------------------------------
def test_orm_v23_order_context() -> None:
    content = interpret(parse_message(orm_v23("\n")))
    assert isinstance(content, OrderMessage)
    assert content.header.control_id == "ORM0001"
    assert content.header.version == "2.3"
    assert content.patient_id == "PAT123"
    (event,) = content.orders
    assert event.order_control == "NW"
    assert event.ordering_provider is not None and event.ordering_provider.id == "1234"
    assert event.order == OrderContext(
        accession_number="ACC001",
        patient_id="PAT123",
        placer_order_number="PL1",
        filler_order_number="FI1",
        procedure_code="CTHEAD",
        procedure_text="CT head without contrast",
        indication="Sudden weakness & aphasia",
        priority="S",
        ordering_provider="House, Greg (1234)",
        order_status="SC",
    )
    assert not event.is_complete


def test_omi_v251_accession_from_ipc_and_priority_from_tq1() -> None:
    content = interpret(parse_message(omi_v251()))
    assert isinstance(content, OrderMessage)
    (event,) = content.orders
    assert event.order.accession_number == "ACC-OMI-9"
    assert event.order.priority == "A"
    assert event.order.procedure_code == "CTCHEST"
    assert event.order.ordering_provider == "Grey, Meredith (55)"


def test_order_status_complete_and_several_orders() -> None:
    text = "\r".join(
        [
            msh("ORM^O01"),
            PID,
            seg("ORC", {1: "SC", 2: "P1", 5: "CM"}),
            seg("OBR", {1: "1", 4: "CT1", 18: "ACC-A", 16: "77^Ref^Doc"}),
            seg("ORC", {1: "CA", 2: "P2", 5: "CA", 16: "^patient refused"}),
            seg("OBR", {1: "2", 4: "CT2", 18: "ACC-B", 5: "R"}),
        ]
    )
    content = interpret(parse_message(text))
    assert isinstance(content, OrderMessage)
    first, second = content.orders
    assert first.is_complete and first.order.accession_number == "ACC-A"
    assert first.order.ordering_provider == "Ref, Doc (77)"  # OBR-16 when ORC-12 is empty
    assert second.is_cancel and second.order.accession_number == "ACC-B"
    assert second.order.indication == "patient refused"  # ORC-16 when OBR-31 is empty
    assert second.order.priority == "R"  # v2.3 OBR-5


# -- patients -------------------------------------------------------------------------------
@pytest.mark.parametrize("event", ["A01", "A04", "A08"])
def test_adt_patient_update(event: str) -> None:
    content = interpret(parse_message(msh(f"ADT^{event}^ADT_A01") + "\r" + PID + "\rPV1|1|O"))
    assert isinstance(content, PatientUpdate)
    assert content.event == event
    assert content.patient_id == "PAT123"
    assert content.issuer == "HOSP"
    assert (content.family_name, content.given_name) == ("Doe", "Jane")
    assert content.birth_date == date(1970, 1, 31)
    assert content.sex == "F"
    shown = repr(content)
    assert "Doe" not in shown and "Jane" not in shown and "1970" not in shown


def test_adt_a40_merge_with_two_pairs() -> None:
    text = "\r".join(
        [
            msh("ADT^A40^ADT_A39", "MRG1", "2.3"),
            "EVN|A40|20260101",
            "PID|1||NEW1^^^HOSP",
            "MRG|OLD1^^^HOSP",
            "PID|2||NEW2^^^HOSP",
            "PV1|1|N",
            "MRG|OLD2",
        ]
    )
    content = interpret(parse_message(text))
    assert isinstance(content, MergeMessage)
    assert [(m.surviving_patient_id, m.prior_patient_id) for m in content.merges] == [
        ("NEW1", "OLD1"),
        ("NEW2", "OLD2"),
    ]


# -- validation errors name the field -----------------------------------------------------------
def _error(text: str) -> Hl7ValidationError:
    with pytest.raises(Hl7ValidationError) as caught:
        interpret(parse_message(text))
    return caught.value


def test_missing_control_id() -> None:
    error = _error(msh("ORM^O01", control_id="") + "\r" + PID)
    assert str(error) == "MSH-10 message control id missing"
    assert error.location == ErrorLocation("MSH", 1, 10)
    assert error.error_code is ErrorCode.REQUIRED_FIELD_MISSING
    assert error.ack_code is AckCode.ERROR


def test_missing_pid3() -> None:
    text = orm_v23().replace(PID, "PID|1||||Doe^Jane")
    error = _error(text)
    assert str(error) == "PID-3 patient identifier missing"
    assert error.location == ErrorLocation("PID", 1, 3)
    assert error.ack_code is AckCode.ERROR


def test_missing_pid_segment_in_adt() -> None:
    error = _error(msh("ADT^A04") + "\rPV1|1")
    assert error.location == ErrorLocation("PID", 1, 3)


def test_missing_accession_names_obr18_and_its_occurrence() -> None:
    text = "\r".join(
        [
            msh("ORM^O01"),
            PID,
            seg("ORC", {1: "NW"}),
            seg("OBR", {1: "1", 18: "ACC1"}),
            seg("ORC", {1: "NW"}),
            seg("OBR", {1: "2", 4: "CT"}),
        ]
    )
    error = _error(text)
    assert str(error) == "OBR-18 accession number missing"
    assert error.location == ErrorLocation("OBR", 2, 18)
    assert error.error_code is ErrorCode.REQUIRED_FIELD_MISSING


def test_omi_missing_accession_names_ipc1() -> None:
    text = omi_v251().replace("IPC|ACC-OMI-9", "IPC|").replace("|IGNORED", "|")
    error = _error(text)
    assert str(error).startswith("IPC-1 accession identifier")
    assert error.location == ErrorLocation("IPC", 1, 1)


def test_order_without_order_segments() -> None:
    error = _error(msh("ORM^O01") + "\r" + PID)
    assert error.error_code is ErrorCode.SEGMENT_SEQUENCE_ERROR


@pytest.mark.parametrize(
    ("message_type", "code"),
    [
        ("SIU^S12", ErrorCode.UNSUPPORTED_MESSAGE_TYPE),
        ("ORU^R01", ErrorCode.UNSUPPORTED_MESSAGE_TYPE),
        ("ADT^A03", ErrorCode.UNSUPPORTED_EVENT_CODE),
        ("ORM^O02", ErrorCode.UNSUPPORTED_EVENT_CODE),
    ],
)
def test_unsupported_message_type_is_rejected(message_type: str, code: ErrorCode) -> None:
    error = _error(msh(message_type) + "\r" + PID)
    assert error.ack_code is AckCode.REJECT
    assert error.error_code is code
    assert error.location == ErrorLocation("MSH", 1, 9)
    assert message_type in str(error)


def test_missing_message_type_and_version() -> None:
    assert _error(msh("") + "\r" + PID).location == ErrorLocation("MSH", 1, 9)
    assert _error(msh("ADT^A08", version="") + "\r" + PID).location == ErrorLocation("MSH", 1, 12)
    wrong = _error(msh("ADT^A08", version="3.0") + "\r" + PID)
    assert wrong.ack_code is AckCode.REJECT
    assert wrong.error_code is ErrorCode.UNSUPPORTED_VERSION_ID


def test_bad_birth_date_is_a_data_type_error() -> None:
    error = _error(msh("ADT^A08") + "\r" + PID.replace("19700131", "1970-01-31"))
    assert error.location == ErrorLocation("PID", 1, 7)
    assert error.error_code is ErrorCode.DATA_TYPE_ERROR


def test_merge_without_prior_id() -> None:
    error = _error(msh("ADT^A40") + "\rPID|1||NEW1\rMRG|")
    assert str(error) == "MRG-1 prior patient identifier missing"
    assert error.location == ErrorLocation("MRG", 1, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PID^1^3", ErrorLocation("PID", 1, 3)),
        ("OBR^2^18", ErrorLocation("OBR", 2, 18)),
        ("PID-3", ErrorLocation("PID", 1, 3)),
        ("MSH", ErrorLocation("MSH", 1, None)),
        ("MSH^1", ErrorLocation("MSH", 1, None)),
    ],
)
def test_error_location_parse(text: str, expected: ErrorLocation) -> None:
    assert ErrorLocation.parse(text) == expected


@pytest.mark.parametrize("text", ["pid-3", "PID^x^3", "PID-three", ""])
def test_error_location_parse_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="error location"):
        ErrorLocation.parse(text)
