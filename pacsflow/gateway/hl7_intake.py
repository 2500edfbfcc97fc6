"""What the gateway does with each inbound HL7 message, before it answers AA.

Orders (ORM^O01, OMI^O23) become order-context rows keyed by accession, so a pathway run
starts warm even when the order arrives before the images; an order saying the exam is
complete (ORC-5 = CM) closes its study; an open order for a pathway that compares with
priors also queues a prior prefetch (pacsflow.gateway.prefetch). ADT updates keep birth
date and sex (never names); A40 merges link the retired identifier to the surviving one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import Order, Patient, PatientLink
from pacsflow.gateway.assembly import StudyAssembler
from pacsflow.gateway.prefetch import PriorPrefetcher
from pacsflow.hl7.interpret import interpret
from pacsflow.hl7.message import Hl7Message
from pacsflow.hl7.records import AckResult, MergeMessage, OrderMessage, PatientUpdate

log = logging.getLogger(__name__)


class Hl7Intake:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        assembler: StudyAssembler,
        prefetcher: PriorPrefetcher | None = None,
    ) -> None:
        self.sessions = sessions
        self.assembler = assembler
        self.prefetcher = prefetcher

    async def handle(self, message: Hl7Message) -> AckResult:
        content = interpret(message, received_at=datetime.now(UTC))
        # Database work is blocking: keep the event loop free for other connections.
        return await asyncio.to_thread(self.store, content)

    def store(self, content: OrderMessage | PatientUpdate | MergeMessage) -> AckResult:
        if isinstance(content, OrderMessage):
            return self._orders(content)
        if isinstance(content, MergeMessage):
            return self._merge(content)
        return self._patient(content)

    def _orders(self, msg: OrderMessage) -> AckResult:
        completed: list[str] = []
        with self.sessions() as session:
            for event in msg.orders:
                ctx = event.order
                row = session.get(Order, ctx.accession_number)
                data = ctx.model_dump(mode="json", exclude_none=True)
                if event.order_control:
                    data["order_control"] = event.order_control
                if row is None:
                    session.add(
                        Order(
                            accession_number=ctx.accession_number,
                            patient_id=ctx.patient_id,
                            context=data,
                        )
                    )
                else:
                    row.context = {**(row.context or {}), **data}
                    row.patient_id = ctx.patient_id
                    row.updated_at = datetime.now(UTC)
                if event.is_complete:
                    completed.append(ctx.accession_number)
            session.commit()
        for accession in completed:
            self.assembler.close_by_accession(accession, "hl7-order-complete")
        if self.prefetcher is not None:
            for event in msg.orders:  # queued only: the ACK does not wait for the archive
                self.prefetcher.submit(event)
        log.info("order(s) stored: %s", [o.order.accession_number for o in msg.orders])
        return AckResult.accept()

    def _patient(self, msg: PatientUpdate) -> AckResult:
        with self.sessions() as session:
            row = session.get(Patient, msg.patient_id) or Patient(patient_id=msg.patient_id)
            row.birth_date = msg.birth_date.strftime("%Y%m%d") if msg.birth_date else None
            row.sex = msg.sex[:1] or None
            row.updated_at = datetime.now(UTC)
            session.merge(row)
            session.commit()
        log.info("patient %s updated (%s)", msg.patient_id, msg.event)
        return AckResult.accept()

    def _merge(self, msg: MergeMessage) -> AckResult:
        with self.sessions() as session:
            for merge in msg.merges:
                session.merge(
                    PatientLink(
                        prior_patient_id=merge.prior_patient_id,
                        patient_id=merge.surviving_patient_id,
                        updated_at=datetime.now(UTC),
                    )
                )
                for order in session.query(Order).filter_by(patient_id=merge.prior_patient_id):
                    order.patient_id = merge.surviving_patient_id
            session.commit()
        log.info("merged %s", [(m.prior_patient_id, m.surviving_patient_id) for m in msg.merges])
        return AckResult.accept()
