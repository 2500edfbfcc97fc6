"""Storage Commitment Push Model, SCP role (PS3.4 Annex J).

A modality asks with N-ACTION (Action Type ID 1, Request Storage Commitment) whether the
gateway has taken responsibility for instances it sent; once told so it may delete them.
The request is written to disk and answered at once; a worker thread then checks every
instance and reports with N-EVENT-REPORT: Event Type ID 1 when all are committed, 2 when
some failed (J.3.3). The report goes on a new association from pacsflow to the requester,
whose address comes from ``gateway.dicom_peers``; a requester that is not configured there
(or cannot be reached) gets it on the requesting association if that is still open,
otherwise the transaction is recorded as undeliverable and logged as an error.

"Committed" means: the object is on the spool (written and fsync'd before its C-STORE
success), readable, and of the SOP class the requester names. The spool file is the record:
the gateway keeps no per-instance database rows (the assembler keeps one header per series).
Each transaction leaves a JSON record (state pending, delivered or undeliverable, no patient
data) under the records directory; pending ones are picked up again after a restart, and
finished ones are removed with the spool's retention (`prune_records`).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

import pydicom
from pydicom import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, build_role

from pacsflow.durable import replace_durably
from pacsflow.errors import InvalidInputError
from pacsflow.gateway.spool import is_valid_uid

log = logging.getLogger(__name__)

# PS3.4 J.3 / PS3.6 Annex A: the SOP class and its well-known SOP instance.
STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
# Action Type ID of N-ACTION (PS3.4 J.3.2.1): Request Storage Commitment.
REQUEST_STORAGE_COMMITMENT = 1
# Event Type IDs of N-EVENT-REPORT (PS3.4 J.3.3.1).
ALL_SUCCEEDED = 1
FAILURES_EXIST = 2

# N-ACTION response statuses (PS3.7 10.1.4.1.10, Annex C).
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
INVALID_ARGUMENT_VALUE = 0x0115
INVALID_OBJECT_INSTANCE = 0x0117
NO_SUCH_ACTION = 0x0123
RESOURCE_LIMITATION = 0x0213

# How long a report sent on the requesting association waits for its answer.
SAME_ASSOCIATION_TIMEOUT_S = 5.0


class FailureReason(IntEnum):
    """Failure Reason (0008,1197) of a FailedSOPSequence item (PS3.4 J.3.3.1.2 / PS3.3
    C.14.1.1)."""

    PROCESSING_FAILURE = 0x0110
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    CLASS_INSTANCE_CONFLICT = 0x0119
    REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122
    RESOURCE_LIMITATION = 0x0213
    DUPLICATE_TRANSACTION_UID = 0x0131


class CommitmentRequestError(InvalidInputError):
    """An N-ACTION the SCP refuses; ``status`` is the N-ACTION response status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class SopReference:
    """One ReferencedSOPSequence item: (0008,1150) and (0008,1155)."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class CommitmentRequest:
    transaction_uid: str
    requestor_aet: str
    references: tuple[SopReference, ...]


@dataclass(frozen=True)
class CommitmentResult:
    transaction_uid: str
    committed: tuple[SopReference, ...]
    failed: tuple[tuple[SopReference, FailureReason], ...]

    @property
    def event_type_id(self) -> int:
        return FAILURES_EXIST if self.failed else ALL_SUCCEEDED

    def event_information(self) -> Dataset:
        """The N-EVENT-REPORT Event Information (PS3.4 Tables J.3-2 and J.3-3)."""
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        if self.committed:
            ds.ReferencedSOPSequence = Sequence([_reference_item(ref) for ref in self.committed])
        if self.failed:
            items = []
            for ref, reason in self.failed:
                item = _reference_item(ref)
                item.FailureReason = int(reason)
                items.append(item)
            ds.FailedSOPSequence = Sequence(items)
        return ds


def _reference_item(ref: SopReference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    return item


def parse_commitment_request(action_information: Dataset, requestor_aet: str) -> CommitmentRequest:
    """The N-ACTION Action Information (PS3.4 Table J.3-1) as a typed request."""
    try:
        transaction_uid = str(action_information.get("TransactionUID", "") or "")
        items = list(action_information.get("ReferencedSOPSequence", None) or [])
        references = []
        for number, item in enumerate(items, start=1):
            sop_class = str(item.get("ReferencedSOPClassUID", "") or "")
            sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "")
            if not sop_class or not sop_instance:
                raise CommitmentRequestError(
                    INVALID_ARGUMENT_VALUE,
                    f"ReferencedSOPSequence item {number} lacks its SOP class or instance UID",
                )
            references.append(SopReference(sop_class, sop_instance))
    except CommitmentRequestError:
        raise
    except Exception as exc:  # untrusted bytes, decoded lazily by pydicom
        raise CommitmentRequestError(
            INVALID_ARGUMENT_VALUE, f"unreadable Action Information: {exc}"
        ) from exc
    if not is_valid_uid(transaction_uid):
        raise CommitmentRequestError(INVALID_ARGUMENT_VALUE, "TransactionUID missing or invalid")
    if not references:
        raise CommitmentRequestError(INVALID_ARGUMENT_VALUE, "ReferencedSOPSequence is empty")
    return CommitmentRequest(transaction_uid, requestor_aet, tuple(references))


class SpoolInstanceIndex:
    """Where SOP instances lie on the spool (<study>/<series>/<sop>.dcm).

    The receiver tells it each instance it spools (the most recent ``capacity`` are kept);
    an instance it does not know (after a restart) is looked for by one walk of the spool."""

    def __init__(self, spool_root: Path, capacity: int = 100_000) -> None:
        self.spool_root = spool_root
        self.capacity = capacity
        self._paths: OrderedDict[str, str] = OrderedDict()  # strings: lighter than Paths
        self._lock = threading.Lock()

    def remember(self, sop_instance_uid: str, path: Path) -> None:
        with self._lock:
            self._paths[sop_instance_uid] = str(path)
            self._paths.move_to_end(sop_instance_uid)
            while len(self._paths) > self.capacity:
                self._paths.popitem(last=False)

    def locate(self, sop_instance_uids: Iterable[str]) -> dict[str, Path]:
        """The spool path of each instance found there; absent ones are left out."""
        wanted = {uid for uid in sop_instance_uids if is_valid_uid(uid)}
        found: dict[str, Path] = {}
        with self._lock:
            for uid in wanted:
                known = self._paths.get(uid)
                if known is not None:
                    found[uid] = Path(known)
        missing = {f"{uid}.dcm": uid for uid in wanted if uid not in found}
        if missing:
            found.update(self._walk(missing))
        return {uid: path for uid, path in found.items() if path.is_file()}

    def _walk(self, missing: dict[str, str]) -> dict[str, Path]:
        found: dict[str, Path] = {}
        if not self.spool_root.is_dir():
            return found
        for study in os.scandir(self.spool_root):
            if not study.is_dir():
                continue
            for series in os.scandir(study.path):
                if not series.is_dir():
                    continue
                for entry in os.scandir(series.path):
                    uid = missing.pop(entry.name, None)
                    if uid is not None:
                        found[uid] = Path(entry.path)
                        self.remember(uid, found[uid])
                if not missing:
                    return found
        return found


def check_commitment(request: CommitmentRequest, located: dict[str, Path]) -> CommitmentResult:
    """Which referenced instances the gateway holds, given where the spool has them."""
    committed: list[SopReference] = []
    failed: list[tuple[SopReference, FailureReason]] = []
    for ref in request.references:
        path = located.get(ref.sop_instance_uid)
        if path is None:
            failed.append((ref, FailureReason.NO_SUCH_OBJECT_INSTANCE))
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            stored_class = str(ds.SOPClassUID)
        except Exception as exc:  # a spooled file that cannot be read is not committed
            log.error("storage commitment: cannot read spooled %s: %s", ref.sop_instance_uid, exc)
            failed.append((ref, FailureReason.PROCESSING_FAILURE))
            continue
        if stored_class != ref.sop_class_uid:
            failed.append((ref, FailureReason.CLASS_INSTANCE_CONFLICT))
        else:
            committed.append(ref)
    return CommitmentResult(request.transaction_uid, tuple(committed), tuple(failed))


def prune_records(records_dir: Path, before: datetime) -> int:
    """Remove the records of transactions reported before `before` (delivered or
    undeliverable); pending and unreadable records stay. Returns how many went."""
    removed = 0
    if not records_dir.is_dir():
        return 0
    for path in records_dir.glob("*.json"):
        try:
            record = json.loads(path.read_text())
            reported = datetime.fromisoformat(record["reported_at"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # pending (no report yet), being written, or not ours to judge
        if reported.tzinfo is None:  # written by hand or by another tool: take it as UTC
            reported = reported.replace(tzinfo=UTC)
        if record.get("state") == "pending" or reported >= before:
            continue
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def _status(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def _write_json_durably(path: Path, data: dict[str, Any]) -> None:
    """Replace path atomically with data, fsync'd (file and directory)."""
    replace_durably(path, json.dumps(data, indent=2).encode())


@dataclass
class _Job:
    request: CommitmentRequest
    requested_at: str
    assoc: Any = None  # the requesting association, while it may still be open
    record: dict[str, Any] = field(default_factory=dict)


# Where a requester listens: AE title -> (host, port), None when not configured.
PeerResolver = Callable[[str], tuple[str, int] | None]


class StorageCommitmentScp:
    """Answers Storage Commitment requests and reports their results from a worker thread.

    ``peers`` maps the requester's AE title to its address; ``tls`` (a client context)
    puts the report associations under TLS; ``attempts`` tries are made to reach a peer,
    ``retry_delay_s`` apart."""

    def __init__(
        self,
        index: SpoolInstanceIndex,
        *,
        aet: str,
        peers: PeerResolver,
        records_dir: Path,
        tls: ssl.SSLContext | None = None,
        attempts: int = 3,
        retry_delay_s: float = 5.0,
        max_pending: int = 1000,
        timeout_s: float = 30.0,
    ) -> None:
        self.index = index
        self.aet = aet
        self.peers = peers
        self.records_dir = records_dir
        self.tls = tls
        self.attempts = attempts
        self.retry_delay_s = retry_delay_s
        self.timeout_s = timeout_s
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_pending)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the N-ACTION ------------------------------------------------------------------
    def answer_n_action(self, event: Any) -> tuple[Dataset, None]:
        """The N-ACTION response for a pynetdicom EVT_N_ACTION event; never blocks on the
        commitment itself, which the worker does."""
        request = event.request
        if str(request.RequestedSOPInstanceUID) != STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE:
            return _status(INVALID_OBJECT_INSTANCE, "not the Storage Commitment instance"), None
        if event.action_type != REQUEST_STORAGE_COMMITMENT:
            return _status(NO_SUCH_ACTION, f"Action Type ID {event.action_type}"), None
        requestor = event.assoc.requestor.ae_title.strip()
        try:
            commitment = parse_commitment_request(event.action_information, requestor)
        except CommitmentRequestError as exc:
            log.warning("storage commitment request from %s refused: %s", requestor, exc)
            return _status(exc.status, str(exc)), None
        try:
            self.submit(commitment, event.assoc)
        except queue.Full:
            log.error(
                "storage commitment %s from %s refused: %d requests pending",
                commitment.transaction_uid,
                requestor,
                self._queue.maxsize,
            )
            return _status(RESOURCE_LIMITATION, "too many pending requests"), None
        except OSError as exc:
            log.error("storage commitment %s: cannot record: %s", commitment.transaction_uid, exc)
            return _status(PROCESSING_FAILURE, "cannot record the request"), None
        log.info(
            "storage commitment %s from %s: %d instances",
            commitment.transaction_uid,
            requestor,
            len(commitment.references),
        )
        return _status(SUCCESS), None

    def submit(self, request: CommitmentRequest, assoc: Any = None) -> None:
        """Record the request durably, then queue it for the worker."""
        if self._queue.full():
            raise queue.Full
        job = _Job(request, datetime.now(UTC).isoformat(), assoc)
        job.record = {
            "transaction_uid": request.transaction_uid,
            "requestor_aet": request.requestor_aet,
            "requested_at": job.requested_at,
            "state": "pending",
            "references": [[ref.sop_class_uid, ref.sop_instance_uid] for ref in request.references],
        }
        _write_json_durably(self.record_path(request.transaction_uid), job.record)
        self._queue.put_nowait(job)

    def record_path(self, transaction_uid: str) -> Path:
        # Transaction UIDs were validated (digits and dots): safe as file names.
        return self.records_dir / f"{transaction_uid}.json"

    # -- the worker --------------------------------------------------------------------
    def start(self) -> int:
        """Start the worker; requests left pending by a previous run are queued again.
        Returns how many were."""
        while not self._queue.empty():  # a restart of this object: the records are the truth
            self._queue.get_nowait()
        recovered = self._recover()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="storage-commitment", daemon=True)
        self._thread.start()
        return recovered

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        try:
            self._queue.put_nowait(None)  # wake the worker
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    def _recover(self) -> int:
        count = 0
        if not self.records_dir.is_dir():
            return 0
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                if record.get("state") != "pending":
                    continue
                if not is_valid_uid(record["transaction_uid"]):
                    raise ValueError("invalid transaction_uid")
                request = CommitmentRequest(
                    record["transaction_uid"],
                    record["requestor_aet"],
                    tuple(SopReference(c, i) for c, i in record["references"]),
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("storage commitment record %s unreadable: %s", path.name, exc)
                continue
            try:
                self._queue.put_nowait(_Job(request, record.get("requested_at", ""), None, record))
            except queue.Full:
                log.error("storage commitment: too many pending records, %s waits", path.name)
                break
            count += 1
        if count:
            log.info("storage commitment: %d pending requests resumed", count)
        return count

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self._queue.get()
            if job is None:
                continue
            try:
                self._process(job)
            except Exception:  # one bad transaction must not stop the others
                log.exception("storage commitment %s failed", job.request.transaction_uid)

    def _process(self, job: _Job) -> dict[str, Any]:
        """Check, report and record one transaction; returns its final record."""
        request = job.request
        located = self.index.locate(ref.sop_instance_uid for ref in request.references)
        result = check_commitment(request, located)
        record = {
            **job.record,
            "event_type_id": result.event_type_id,
            "committed": [ref.sop_instance_uid for ref in result.committed],
            "failed": [
                {"sop_instance_uid": ref.sop_instance_uid, "failure_reason": f"0x{int(r):04X}"}
                for ref, r in result.failed
            ],
        }
        record.update(self._deliver(request, result, job.assoc))
        record["reported_at"] = datetime.now(UTC).isoformat()
        try:
            _write_json_durably(self.record_path(request.transaction_uid), record)
        except OSError as exc:
            log.error("storage commitment %s: cannot record: %s", request.transaction_uid, exc)
        return record

    # -- the N-EVENT-REPORT ------------------------------------------------------------
    def _deliver(
        self, request: CommitmentRequest, result: CommitmentResult, assoc: Any
    ) -> dict[str, Any]:
        aet = request.requestor_aet
        errors: list[str] = []
        peer = self.peers(aet)
        if peer is not None:
            for attempt in range(1, self.attempts + 1):
                error = self._report_on_new_association(peer, aet, result)
                if error is None:
                    self._log_report(result, aet, "a new association")
                    return {
                        "state": "delivered",
                        "via": "new-association",
                        "peer": f"{peer[0]}:{peer[1]}",
                        "attempts": attempt,
                    }
                errors.append(error)
                log.warning(
                    "storage commitment %s: report to %s at %s:%s failed (try %d of %d): %s",
                    result.transaction_uid,
                    aet,
                    *peer,
                    attempt,
                    self.attempts,
                    error,
                )
                if attempt < self.attempts and self._stop.wait(self.retry_delay_s):
                    break
            if self._stop.is_set():  # shutting down: stays pending, resumed at the next start
                return {"state": "pending", "errors": errors}
        else:
            errors.append(f"AE {aet!r} is not in gateway.dicom_peers")
        if assoc is not None and assoc.is_established:
            error = self._report_on_requesting_association(assoc, result)
            if error is None:
                self._log_report(result, aet, "the requesting association")
                return {"state": "delivered", "via": "same-association"}
            errors.append(f"requesting association: {error}")
        log.error(
            "storage commitment %s for %s is undeliverable: %s",
            result.transaction_uid,
            aet,
            "; ".join(errors),
        )
        return {"state": "undeliverable", "errors": errors}

    def _report_on_new_association(
        self, peer: tuple[str, int], aet: str, result: CommitmentResult
    ) -> str | None:
        ae = AE(ae_title=self.aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL)
        # J.3.3: the SCP opening the association proposes the SCP role.
        role = build_role(STORAGE_COMMITMENT_PUSH_MODEL, scu_role=False, scp_role=True)
        host, port = peer
        tls_args = (self.tls, host) if self.tls is not None else None
        try:
            assoc = ae.associate(host, port, ae_title=aet, ext_neg=[role], tls_args=tls_args)
        except Exception as exc:  # socket and TLS errors surface in several shapes
            return f"cannot associate: {exc}"
        if not assoc.is_established:
            return "association rejected or aborted"
        try:
            return self._report(assoc, result)
        finally:
            if assoc.is_established:
                assoc.release()

    def _report_on_requesting_association(self, assoc: Any, result: CommitmentResult) -> str | None:
        # A requester that waits for the report on its association answers at once; one that
        # is releasing it ignores the report, and its DIMSE timeout is all that is left.
        previous = assoc.dimse_timeout
        assoc.dimse_timeout = min(SAME_ASSOCIATION_TIMEOUT_S, self.timeout_s)
        try:
            return self._report(assoc, result)
        finally:
            assoc.dimse_timeout = previous

    @staticmethod
    def _report(assoc: Any, result: CommitmentResult) -> str | None:
        """Send the N-EVENT-REPORT; None on success, else why not."""
        try:
            status, _reply = assoc.send_n_event_report(
                result.event_information(),
                result.event_type_id,
                STORAGE_COMMITMENT_PUSH_MODEL,
                STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
            )
        except Exception as exc:  # no context, association gone, encoding failure
            return f"N-EVENT-REPORT not sent: {exc}"
        code = status.get("Status") if status is not None else None
        if code is None:
            return "no N-EVENT-REPORT response"
        if int(code) != SUCCESS:
            return f"N-EVENT-REPORT answered 0x{int(code):04X}"
        return None

    @staticmethod
    def _log_report(result: CommitmentResult, aet: str, via: str) -> None:
        log.info(
            "storage commitment %s reported to %s on %s: event %d (%d committed, %d failed)",
            result.transaction_uid,
            aet,
            via,
            result.event_type_id,
            len(result.committed),
            len(result.failed),
        )
