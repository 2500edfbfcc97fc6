"""Prior prefetch: when the RIS orders an exam before the images exist, fetch the patient's
earlier studies at once, so the pathway run starts warm instead of querying the archive.

Which orders: a new or updated ORM^O01 / OMI^O23 order that is not complete (ORC-5 CM) or
cancelled, whose procedure routes to a pathway that compares with priors
(`pacsflow.pathways.sources.PRIOR_MODALITY`: stroke_triage and nodule_followup, both CT).

How an order is routed: through the gateway's own routing rules, so a site's rule file
decides for orders as it does for studies. An order has no DICOM headers yet, so its
procedure stands in for them (`order_attributes`): the OBR-4 text is the study description,
the OBR-4 code a procedure code, and the modality is read from the procedure (a DICOM
modality code as a word of the text, "CT head", or as the code's prefix, "CTHEAD"). The
default head rule then matches "CT head" through its study-description body-part inference;
rules with a `procedure_code` list match the code itself.

What is fetched: a study-level QIDO for the patient's studies with the pathway's modality
(the query the run would make, without the date bound the run applies when it reads them),
stored with the time fetched, keyed by accession (`PrefetchedContext`). It runs in a small
thread pool and never delays the ACK. If the archive is down the failure is logged with
identifiers only and no row is written: the run then queries the archive itself.
"""

from __future__ import annotations

import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config.settings import OrthancSettings, PriorsSettings
from pacsflow.db.tables import PrefetchedContext
from pacsflow.dicom.dicomweb import Archive
from pacsflow.domain import OrderContext
from pacsflow.errors import PacsflowError
from pacsflow.gateway.routing import RuleSet, StudyAttributes
from pacsflow.hl7.records import OrderEvent
from pacsflow.pathways.sources import PRIOR_MODALITY, query_priors

log = logging.getLogger(__name__)

# Modality defined terms (DICOM PS3.3 C.7.3.1.1.1) that procedure names commonly start with
# or contain, and the usual non-DICOM spellings of two of them.
MODALITY_CODES = ("CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF")
_MODALITY_ALIASES = {"MRI": "MR", "PET": "PT"}
_WORD = re.compile(r"[A-Za-z]+")
# ORC-5 order status (HL7 table 0038): complete, cancelled, discontinued.
_CLOSED_STATUS = {"CM", "CA", "DC"}
_OUTCOMES_KEPT = 1000


def procedure_modality(code: str | None, text: str | None) -> str | None:
    """The DICOM modality an ordered procedure implies, or None when it does not say."""
    for word in _WORD.findall(text or ""):
        upper = word.upper()
        if upper in MODALITY_CODES:
            return upper
        if upper in _MODALITY_ALIASES:
            return _MODALITY_ALIASES[upper]
    prefix = (code or "").strip().upper()
    return next((m for m in MODALITY_CODES if prefix.startswith(m)), None)


def order_attributes(order: OrderContext) -> StudyAttributes:
    """What the routing rules can know of a study from its order alone."""
    modality = procedure_modality(order.procedure_code, order.procedure_text)
    return StudyAttributes(
        modality={modality} if modality else set(),
        study_description=order.procedure_text or None,
        procedure_codes={order.procedure_code} if order.procedure_code else set(),
    )


@dataclass(frozen=True)
class PrefetchPlan:
    accession_number: str
    patient_id: str
    pathway: str
    modality: str  # of the priors to fetch


def plan_prefetch(event: OrderEvent, rules: RuleSet) -> PrefetchPlan | None:
    """The priors to fetch for an order event, or None (closed order, or no pathway of the
    order reads priors)."""
    order = event.order
    if event.is_cancel or (order.order_status or "").upper() in _CLOSED_STATUS:
        return None
    if not order.accession_number or not order.patient_id:
        return None
    for pathway in rules.pathways(order_attributes(order)):
        if pathway in PRIOR_MODALITY:
            return PrefetchPlan(
                order.accession_number, order.patient_id, pathway, PRIOR_MODALITY[pathway]
            )
    return None


class PriorPrefetcher:
    """Fetches priors for orders in background threads; `submit` returns at once."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        orthanc: OrthancSettings,
        rules: RuleSet,
        settings: PriorsSettings,
        *,
        workers: int = 2,
    ) -> None:
        self.sessions = sessions
        self.archive = Archive(orthanc)
        # One try per prefetch, no back-off (dicomweb-client retries errors 5 times, ~30 s):
        # a failed prefetch costs nothing, since the run queries the archive itself.
        self.archive.client.set_http_retry_params(retry=False)
        self.rules = rules
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prior-prefetch")
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._outcomes: dict[str, str] = {}

    def submit(self, event: OrderEvent) -> PrefetchPlan | None:
        """Queue the prefetch an order event calls for; the plan, or None if none."""
        plan = plan_prefetch(event, self.rules)
        if plan is None:
            return None
        with self._lock:
            if plan.accession_number in self._in_flight:
                return plan  # an update of the same order while its fetch is running
            self._in_flight.add(plan.accession_number)
        try:
            self._pool.submit(self._run, plan)
        except RuntimeError:  # shutting down: the run will query the archive itself
            self._finish(plan, "not started: gateway stopping")
            return None
        return plan

    def outcome(self, accession_number: str) -> str | None:
        """How the last prefetch for the accession ended ("stored N", "fresh",
        "failed: <error type>"), None while none has ended."""
        with self._lock:
            return self._outcomes.get(accession_number)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, plan: PrefetchPlan) -> None:
        try:
            outcome = self.prefetch(plan)
        except Exception:  # a bug must not kill the pool thread silently
            log.exception("prior prefetch for accession %s crashed", plan.accession_number)
            outcome = "failed: unexpected error"
        self._finish(plan, outcome)

    def _finish(self, plan: PrefetchPlan, outcome: str) -> None:
        with self._lock:
            self._in_flight.discard(plan.accession_number)
            self._outcomes.pop(plan.accession_number, None)
            self._outcomes[plan.accession_number] = outcome
            while len(self._outcomes) > _OUTCOMES_KEPT:
                self._outcomes.pop(next(iter(self._outcomes)))

    def prefetch(self, plan: PrefetchPlan) -> str:
        """Fetch and store the priors of one order now (the pool calls this)."""
        if self._fresh(plan):
            return "fresh"
        ids = (plan.accession_number, plan.patient_id, plan.pathway)
        try:
            studies = query_priors(
                self.archive, plan.patient_id, plan.modality, limit=self.settings.max_studies
            )
        except PacsflowError as exc:
            log.warning(
                "prior prefetch for accession %s (patient %s, %s) failed: %s; "
                "the run will query the archive",
                *ids,
                type(exc).__name__,
            )
            return f"failed: {type(exc).__name__}"
        row = PrefetchedContext(
            accession_number=plan.accession_number,
            patient_id=plan.patient_id,
            pathway=plan.pathway,
            modality=plan.modality,
            priors=[s.model_dump(mode="json") for s in studies],
            fetched_at=datetime.now(UTC),
        )
        try:
            with self.sessions() as session:
                session.merge(row)
                session.commit()
        except SQLAlchemyError as exc:
            log.warning(
                "prior prefetch for accession %s (patient %s, %s) not stored: %s",
                *ids,
                type(exc).__name__,
            )
            return f"failed: {type(exc).__name__}"
        log.info("prefetched %d prior(s) for accession %s (patient %s, %s)", len(studies), *ids)
        return f"stored {len(studies)}"

    def _fresh(self, plan: PrefetchPlan) -> bool:
        """A row for the same order, patient and modality, young enough to use as it is."""
        with self.sessions() as session:
            row = session.get(PrefetchedContext, plan.accession_number)
            if row is None or (row.patient_id, row.modality) != (plan.patient_id, plan.modality):
                return False
            fetched = (
                row.fetched_at if row.fetched_at.tzinfo else row.fetched_at.replace(tzinfo=UTC)
            )
        # Half the run's limit: a run soon after still finds it fresh.
        return (datetime.now(UTC) - fetched).total_seconds() < self.settings.max_age_s / 2
