"""HL7 v2 over MLLP: parse and validate inbound orders and patient updates, acknowledge them,
build results (ORU^R01) and priority updates (ORM^O01) for the RIS, and move messages over
MLLP with an asyncio server and client.

The protocol layer knows nothing about storage: `MllpServer` hands each parsed message to
an async handler supplied by the caller and turns the handler's `AckResult` into an ACK.
"""

from pacsflow.hl7.ack import build_ack, parse_ack
from pacsflow.hl7.builder import hl7_timestamp, new_control_id
from pacsflow.hl7.client import MllpConnection, send_message, send_message_sync
from pacsflow.hl7.encoding import Encoding
from pacsflow.hl7.errors import ErrorLocation, Hl7ParseError, Hl7ValidationError
from pacsflow.hl7.interpret import SUPPORTED_TYPES, interpret, validate_header
from pacsflow.hl7.message import Hl7Message, Segment, parse_header, parse_message
from pacsflow.hl7.orm import build_priority_update, order_priority
from pacsflow.hl7.oru import build_oru_r01
from pacsflow.hl7.records import (
    Ack,
    AckResult,
    CodedValue,
    Hl7Content,
    MergeMessage,
    MessageHeader,
    Observation,
    OrderEvent,
    OrderMessage,
    PatientMerge,
    PatientUpdate,
    Provider,
)
from pacsflow.hl7.server import AbortConnection, MllpServer
from pacsflow.hl7.tables import (
    AbnormalFlag,
    AckCode,
    ErrorCode,
    OrderControl,
    OrderPriority,
    ResultStatus,
    Severity,
)

__all__ = [
    "SUPPORTED_TYPES",
    "AbnormalFlag",
    "AbortConnection",
    "Ack",
    "AckCode",
    "AckResult",
    "CodedValue",
    "Encoding",
    "ErrorCode",
    "ErrorLocation",
    "Hl7Content",
    "Hl7Message",
    "Hl7ParseError",
    "Hl7ValidationError",
    "MergeMessage",
    "MessageHeader",
    "MllpConnection",
    "MllpServer",
    "Observation",
    "OrderControl",
    "OrderEvent",
    "OrderMessage",
    "OrderPriority",
    "PatientMerge",
    "PatientUpdate",
    "Provider",
    "ResultStatus",
    "Segment",
    "Severity",
    "build_ack",
    "build_oru_r01",
    "build_priority_update",
    "hl7_timestamp",
    "interpret",
    "new_control_id",
    "order_priority",
    "parse_ack",
    "parse_header",
    "parse_message",
    "send_message",
    "send_message_sync",
    "validate_header",
]
