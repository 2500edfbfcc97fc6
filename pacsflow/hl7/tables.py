"""HL7 v2 code tables pacsflow reads or writes (numbers are HL7 table ids, v2.5.1)."""

from __future__ import annotations

from enum import StrEnum


class AckCode(StrEnum):
    """HL7 table 0008, acknowledgment code (MSA-1)."""

    ACCEPT = "AA"  # original mode: application accept
    ERROR = "AE"  # application error: the sender may correct and resend later
    REJECT = "AR"  # application reject: resending the same message will not help
    COMMIT_ACCEPT = "CA"  # enhanced mode commit codes, accepted when parsing a peer's ACK
    COMMIT_ERROR = "CE"
    COMMIT_REJECT = "CR"


class ErrorCode(StrEnum):
    """HL7 table 0357, message error condition codes (ERR-3)."""

    ACCEPTED = "0"
    SEGMENT_SEQUENCE_ERROR = "100"
    REQUIRED_FIELD_MISSING = "101"
    DATA_TYPE_ERROR = "102"
    TABLE_VALUE_NOT_FOUND = "103"
    UNSUPPORTED_MESSAGE_TYPE = "200"
    UNSUPPORTED_EVENT_CODE = "201"
    UNSUPPORTED_PROCESSING_ID = "202"
    UNSUPPORTED_VERSION_ID = "203"
    UNKNOWN_KEY_IDENTIFIER = "204"
    DUPLICATE_KEY_IDENTIFIER = "205"
    APPLICATION_RECORD_LOCKED = "206"
    APPLICATION_INTERNAL_ERROR = "207"

    @property
    def text(self) -> str:
        return _ERROR_TEXT[self]


_ERROR_TEXT = {
    ErrorCode.ACCEPTED: "Message accepted",
    ErrorCode.SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    ErrorCode.REQUIRED_FIELD_MISSING: "Required field missing",
    ErrorCode.DATA_TYPE_ERROR: "Data type error",
    ErrorCode.TABLE_VALUE_NOT_FOUND: "Table value not found",
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    ErrorCode.UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    ErrorCode.UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    ErrorCode.UNSUPPORTED_VERSION_ID: "Unsupported version id",
    ErrorCode.UNKNOWN_KEY_IDENTIFIER: "Unknown key identifier",
    ErrorCode.DUPLICATE_KEY_IDENTIFIER: "Duplicate key identifier",
    ErrorCode.APPLICATION_RECORD_LOCKED: "Application record locked",
    ErrorCode.APPLICATION_INTERNAL_ERROR: "Application internal error",
}


class Severity(StrEnum):
    """HL7 table 0516, error severity (ERR-4)."""

    ERROR = "E"
    WARNING = "W"
    INFORMATION = "I"


class ResultStatus(StrEnum):
    """HL7 table 0123 (OBR-25) restricted to what pacsflow sends; the same letters are valid
    in table 0085 (OBX-11)."""

    PRELIMINARY = "P"
    FINAL = "F"
    CORRECTED = "C"


class AbnormalFlag(StrEnum):
    """HL7 table 0078, abnormal flags (OBX-8), the subset pacsflow uses."""

    NORMAL = "N"
    ABNORMAL = "A"
    CRITICAL = "AA"  # "very abnormal"


class OrderPriority(StrEnum):
    """HL7 table 0027, priority (TQ1-9, TQ.6 in ORC-7 / OBR-27)."""

    STAT = "S"
    ASAP = "A"
    ROUTINE = "R"
    PREOP = "P"
    CALLBACK = "C"
    TIMING_CRITICAL = "T"
    AS_NEEDED = "PRN"


class OrderControl(StrEnum):
    """HL7 table 0119, order control codes (ORC-1), the ones pacsflow reads or writes."""

    NEW = "NW"
    CANCEL = "CA"
    CANCELLED = "CR"
    DISCONTINUE = "DC"
    CHANGE = "XO"
    CHANGED_UNSOLICITED = "XX"
    STATUS_CHANGED = "SC"
    RESULTS = "RE"
    OK = "OK"


class OrderStatus(StrEnum):
    """HL7 table 0038, order status (ORC-5), the common values."""

    COMPLETE = "CM"
    IN_PROCESS = "IP"
    SCHEDULED = "SC"
    CANCELLED = "CA"
    DISCONTINUED = "DC"
    HOLD = "HD"
