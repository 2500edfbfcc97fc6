"""The gateway under test and the known-good traffic that must keep working on each listener.

Every helper here asserts the full promise for good input: HL7 gets AA echoing its control
id and the order is in the database; the webhook gets 202 and the outbox row exists;
DICOM gets 0x0000 and the object is on the spool.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, Verification
from sqlalchemy import select

from pacsflow.config import Settings
from pacsflow.db.tables import Order, OutboxEntry
from pacsflow.gateway.outbox import idempotency_key
from pacsflow.gateway.service import Gateway
from pacsflow.gateway.signing import sign
from pacsflow.hl7.ack import parse_ack
from pacsflow.hl7.message import decode_payload, parse_message
from pacsflow.hl7.records import Ack
from pacsflow.testing.dicom_factory import tiny_ct

from .mllp_peer import RawMllpPeer

# A UID root for test objects; fixed-length suffixes keep byte offsets of mutations stable.
UID_ROOT = "1.2.826.0.1.3680043.10.999"
GOOD_PATHWAY = "stroke_triage"
SUCCESS = 0x0000


def fuzz_uid(kind: int, serial: int) -> str:
    return f"{UID_ROOT}.{kind}.{1_000_000 + serial}"


def good_order(serial: int) -> tuple[str, str, str]:
    """An ORM^O01 pacsflow must accept: (message text, control id, accession)."""
    control_id, accession = f"GOOD{serial:06d}", f"GOOD-{serial:06d}"
    text = "\r".join(
        [
            f"MSH|^~\\&|RIS|HOSP|PACSFLOW|RAD|20261128093000||ORM^O01|{control_id}|P|2.5.1",
            "PID|1||GOOD-PAT^^^HOSP^MR||Doe^Jane||19600101|F",
            f"ORC|NW|PL-{serial}|FL-{serial}||SC",
            f"OBR|1|PL-{serial}|FL-{serial}|CTHEAD^CT head^L|||20261128093000|||||||||"
            f"1234^House^Greg||{accession}",
        ]
    )
    return text + "\r", control_id, accession


def read_ack(payload: bytes) -> tuple[str, Ack]:
    """(MSH-9.1 of the reply, the parsed ACK) of an MLLP reply payload."""
    text, _codec = decode_payload(payload)
    return parse_message(text).message_code, parse_ack(text)


@dataclass
class LiveGateway:
    settings: Settings
    gateway: Gateway
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    good_sent: dict[str, int] = field(default_factory=lambda: {"hl7": 0, "webhook": 0, "dicom": 0})

    @property
    def host(self) -> str:
        return self.settings.gateway.host

    @property
    def webhook_secret(self) -> str:
        return self.settings.gateway.webhook_secret.get_secret_value()

    def next_serial(self) -> int:
        return next(self._serial)

    # -- HL7 ------------------------------------------------------------------------------
    def mllp_peer(self) -> RawMllpPeer:
        return RawMllpPeer(self.host, self.settings.gateway.mllp_port)

    def send_good_hl7(self, peer: RawMllpPeer) -> None:
        text, control_id, accession = good_order(self.next_serial())
        peer.send(b"\x0b" + text.encode("ascii") + b"\x1c\r")
        message_code, ack = read_ack(peer.read_frame())
        assert message_code == "ACK"
        assert (ack.code.value, ack.acknowledged_control_id) == ("AA", control_id), ack.text
        assert self.order_stored(accession), f"order {accession} acknowledged AA but not stored"
        self.good_sent["hl7"] += 1

    def order_stored(self, accession: str) -> bool:
        with self.gateway.sessions() as session:
            return session.get(Order, accession) is not None

    # -- webhook --------------------------------------------------------------------------
    def http_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://{self.host}:{self.settings.gateway.http_port}", timeout=15.0
        )

    def post_good_webhook(self, client: httpx.Client) -> None:
        study_uid = fuzz_uid(2, self.next_serial())
        body = json.dumps({"study_uid": study_uid, "pathway": GOOD_PATHWAY}).encode()
        headers = {"Content-Type": "application/json"}
        headers.update(sign(self.webhook_secret, int(time.time()), body))
        response = client.post("/hooks/studies", content=body, headers=headers)
        assert response.status_code == 202, response.text
        assert response.json()["duplicate"] is False
        assert self.outbox_row_exists(idempotency_key(GOOD_PATHWAY, study_uid))
        self.good_sent["webhook"] += 1

    def outbox_row_exists(self, key: str) -> bool:
        with self.gateway.sessions() as session:
            found = session.scalars(select(OutboxEntry).where(OutboxEntry.idempotency_key == key))
            return found.first() is not None

    # -- DICOM ----------------------------------------------------------------------------
    def associate(self, ae: AE) -> Association:
        g = self.settings.gateway
        assoc = ae.associate(self.host, g.dicom_port, ae_title=g.aet)
        assert assoc.is_established, "the DICOM listener refused or dropped the association"
        return assoc

    def spooled(self, sop_instance_uid: str) -> list[Path]:
        return list(self.settings.spool_dir.glob(f"*/*/{sop_instance_uid}.dcm"))

    def store_good_dicom(self, assoc: Association, study_uid: str) -> None:
        serial = self.next_serial()
        ds = tiny_ct(study_uid=study_uid, series_uid=fuzz_uid(4, serial), index=0, rows=8)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = fuzz_uid(5, serial)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        status = assoc.send_c_store(ds)
        assert "Status" in status, "association dropped on a valid object"
        assert status.Status == SUCCESS, f"valid object refused: 0x{status.Status:04X}"
        assert self.spooled(ds.SOPInstanceUID), "0x0000 answered but the object is not spooled"
        self.good_sent["dicom"] += 1

    # -- all listeners --------------------------------------------------------------------
    def assert_alive(self) -> None:
        """Each listener still takes a new connection and serves good traffic."""
        peer = self.mllp_peer()
        try:
            self.send_good_hl7(peer)
        finally:
            peer.close()
        with self.http_client() as client:
            assert client.get("/health").status_code == 200
            self.post_good_webhook(client)
        ae = AE(ae_title="ALIVECHECK")
        ae.add_requested_context(Verification)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = self.associate(ae)
        try:
            assert assoc.send_c_echo().Status == SUCCESS
            self.store_good_dicom(assoc, fuzz_uid(3, self.next_serial()))
        finally:
            assoc.release()
