"""Typed records the HL7 layer hands to, and takes from, the rest of pacsflow.

Inbound: `OrderMessage` (ORM^O01, OMI^O23), `PatientUpdate` (ADT^A01/A04/A08),
`MergeMessage` of `PatientMerge` (ADT^A40). Outbound: `Observation` lines of an ORU^R01.
ACKs: `AckResult` is what a server handler decides, `Ack` what a peer answered.

Patient names and birth dates are kept out of ``repr`` so a record logged by mistake
shows identifiers only.
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from pacsflow.domain import OrderContext
from pacsflow.hl7.errors import ErrorLocation
from pacsflow.hl7.tables import AbnormalFlag, AckCode, ErrorCode


class MessageHeader(BaseModel):
    """The MSH fields pacsflow keeps for audit and for answering."""

    model_config = ConfigDict(frozen=True)

    control_id: str  # MSH-10
    message_type: str  # MSH-9.1^MSH-9.2, e.g. "ORM^O01"
    version: str  # MSH-12
    sending_application: str = ""  # MSH-3
    sending_facility: str = ""  # MSH-4
    sent_at: str = ""  # MSH-7 as sent (TS)


# -- orders ---------------------------------------------------------------------------------
class Provider(BaseModel):
    """Ordering provider (XCN: ORC-12 / OBR-16): id and name. Staff, not patient data."""

    model_config = ConfigDict(frozen=True)

    id: str = ""
    family_name: str = ""
    given_name: str = ""

    @property
    def display(self) -> str:
        name = ", ".join(p for p in (self.family_name, self.given_name) if p)
        if name and self.id:
            return f"{name} ({self.id})"
        return name or self.id


class OrderEvent(BaseModel):
    """One ORC/OBR group of an order message."""

    order_control: str | None = None  # ORC-1, HL7 table 0119 (NW, CA, XO, SC ...)
    order: OrderContext
    ordering_provider: Provider | None = None

    @property
    def is_complete(self) -> bool:
        """ORC-5 = CM: the exam is done (HL7 table 0038)."""
        return (self.order.order_status or "").upper() == "CM"

    @property
    def is_cancel(self) -> bool:
        return (self.order_control or "").upper() in {"CA", "CR", "DC", "OC", "OD"}


class OrderMessage(BaseModel):
    """ORM^O01 or OMI^O23: one patient, one or more orders."""

    header: MessageHeader
    patient_id: str
    orders: list[OrderEvent] = Field(min_length=1)


# -- patients -------------------------------------------------------------------------------
class PatientUpdate(BaseModel):
    """ADT^A01 / A04 / A08: demographics pacsflow may match on. Never log the names."""

    header: MessageHeader
    event: str  # A01 admit, A04 register, A08 update
    patient_id: str  # PID-3.1, first repetition
    issuer: str = ""  # PID-3.4.1 assigning authority
    family_name: str = Field("", repr=False)  # PID-5.1
    given_name: str = Field("", repr=False)  # PID-5.2
    birth_date: date | None = Field(None, repr=False)  # PID-7
    sex: str = ""  # PID-8, HL7 table 0001


class PatientMerge(BaseModel):
    """One PID/MRG pair of an ADT^A40: the prior id now lives on as the surviving id."""

    surviving_patient_id: str  # PID-3.1
    prior_patient_id: str  # MRG-1.1
    issuer: str = ""


class MergeMessage(BaseModel):
    """ADT^A40, which may carry several PID/MRG pairs."""

    header: MessageHeader
    merges: list[PatientMerge] = Field(min_length=1)


Hl7Content = OrderMessage | PatientUpdate | MergeMessage


# -- results --------------------------------------------------------------------------------
class CodedValue(BaseModel):
    """A coded element (CWE/CE): identifier ^ text ^ name of coding system (table 0396)."""

    model_config = ConfigDict(frozen=True)

    code: str
    text: str = ""
    system: str = "L"  # L = local code; LN = LOINC; DCM = DICOM; UCUM; SCT = SNOMED CT


class Observation(BaseModel):
    """One OBX of a result.

    value_type is HL7 table 0125: NM (number, with UCUM ``units``), ST / TX (text),
    CWE (coded, ``value`` a `CodedValue`).
    """

    model_config = ConfigDict(frozen=True)

    identifier: CodedValue  # OBX-3
    value_type: str = Field(pattern=r"^(NM|ST|TX|FT|CWE|CE)$")  # OBX-2
    value: str | float | int | CodedValue  # OBX-5
    units: str | None = None  # OBX-6, a UCUM code such as "mL"
    reference_range: str | None = None  # OBX-7
    abnormal_flag: AbnormalFlag | None = None  # OBX-8
    sub_id: str | None = None  # OBX-4


# -- acknowledgments ------------------------------------------------------------------------
class AckResult(BaseModel):
    """What a handler decides for a message; the server turns it into an ACK."""

    model_config = ConfigDict(frozen=True)

    code: AckCode = AckCode.ACCEPT
    text: str | None = None
    error_location: ErrorLocation | None = None
    error_code: ErrorCode | None = None

    @classmethod
    def accept(cls, text: str | None = None) -> AckResult:
        return cls(code=AckCode.ACCEPT, text=text)

    @classmethod
    def error(
        cls,
        text: str,
        *,
        error_code: ErrorCode = ErrorCode.APPLICATION_INTERNAL_ERROR,
        error_location: ErrorLocation | None = None,
    ) -> AckResult:
        """AE: the sender should correct or retry later."""
        return cls(
            code=AckCode.ERROR, text=text, error_code=error_code, error_location=error_location
        )

    @classmethod
    def reject(
        cls,
        text: str,
        *,
        error_code: ErrorCode = ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
        error_location: ErrorLocation | None = None,
    ) -> AckResult:
        """AR: resending the same message will not help."""
        return cls(
            code=AckCode.REJECT, text=text, error_code=error_code, error_location=error_location
        )


class Ack(BaseModel):
    """An acknowledgment received from a peer (MSA, and ERR when present)."""

    model_config = ConfigDict(frozen=True)

    code: AckCode  # MSA-1
    acknowledged_control_id: str  # MSA-2: the control id of the message acknowledged
    text: str = ""  # MSA-3
    control_id: str = ""  # MSH-10 of the ACK itself
    error_code: str = ""  # ERR-3.1 (or ERR-1.4.1 in v2.3/2.4)
    error_location: str = ""  # ERR-2 (or ERR-1) as SEG^sequence^field
    raw: str = Field("", repr=False)

    @property
    def accepted(self) -> bool:
        return self.code in (AckCode.ACCEPT, AckCode.COMMIT_ACCEPT)

    @property
    def retryable(self) -> bool:
        """AE / CE: the peer could not process it now; sending again later may work."""
        return self.code in (AckCode.ERROR, AckCode.COMMIT_ERROR)

    @property
    def rejected(self) -> bool:
        """AR / CR: permanent; do not resend the same message."""
        return self.code in (AckCode.REJECT, AckCode.COMMIT_REJECT)
