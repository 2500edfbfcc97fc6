"""`pacsflow gateway`: every listener in one process, plus the assembler and dispatcher.

Threads: pynetdicom's SCP, the study assembler, the outbox dispatcher, the optional VNA
change-feed watcher, the hourly spool prune. The asyncio loop: the MLLP listener and the
HTTP app (webhook, health). SIGTERM/SIGINT stop everything in order; what was accepted is
already on disk.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydicom
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings
from pacsflow.config.tls import client_context, listener_context, uvicorn_tls_options
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import OutboxEntry
from pacsflow.dicom.dicomweb import Archive, OrthancExtras
from pacsflow.gateway.assembly import StudyAssembler
from pacsflow.gateway.change_feed import ChangeFeedWatcher
from pacsflow.gateway.dicom_scp import MppsTracker, StoreReceiver, build_ae, start_scp
from pacsflow.gateway.dispatcher import Dispatcher
from pacsflow.gateway.hl7_intake import Hl7Intake
from pacsflow.gateway.outbox import Outbox, idempotency_key
from pacsflow.gateway.prefetch import PriorPrefetcher
from pacsflow.gateway.routing import load_rules
from pacsflow.gateway.spool import Spool
from pacsflow.gateway.spool_prune import SpoolJanitor
from pacsflow.gateway.storage_commitment import SpoolInstanceIndex, StorageCommitmentScp
from pacsflow.gateway.webhook import create_gateway_app
from pacsflow.hl7.server import MllpServer
from pacsflow.orchestration.prefect_api import PrefectApi
from pacsflow.web.standalone import build_web_app

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    settings: Settings
    # Injected by the composition root (the CLI): the registry as the web UI sees it.
    model_versions: Callable[[], list[dict[str, Any]]] | None = None
    approve_model: Any = None
    sessions: sessionmaker[Session] = field(init=False)
    assembler: StudyAssembler = field(init=False)
    dispatcher: Dispatcher = field(init=False)
    _scp: Any = field(default=None, init=False)
    _watcher: ChangeFeedWatcher | None = field(default=None, init=False)
    _janitor: SpoolJanitor | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        s = self.settings
        upgrade(s.database_url)
        self.sessions = make_sessionmaker(make_engine(s.database_url))
        self.outbox = Outbox(self.sessions)
        self.spool = Spool(s.spool_dir, s.quarantine_dir)
        self.rules = rules = load_rules(s.gateway.routes_file)
        self.archive = Archive(s.orthanc)
        self.prefect = PrefectApi(s.prefect.effective_api_url)
        self.dispatcher = Dispatcher(
            self.sessions, self.prefect, max_attempts=s.gateway.dispatch_max_attempts
        )
        self.assembler = StudyAssembler(
            self.sessions,
            rules.route,
            stable_window_s=s.gateway.stable_window_s,
            on_closed=lambda _uid: self.dispatcher.wake(),
        )
        self.instances = SpoolInstanceIndex(self.spool.root)
        self.receiver = StoreReceiver(self.spool, self.assembler, self.instances)
        self.commitment = StorageCommitmentScp(
            self.instances,
            aet=s.gateway.aet,
            peers=s.gateway.dicom_peer,
            records_dir=s.paths.var_dir / "gateway" / "storage-commitment",
            tls=client_context(s.tls) if s.tls.dicom_outbound else None,
            attempts=s.gateway.commitment_report_attempts,
        )
        self.mpps = MppsTracker(self.assembler)
        # Priors of an order that arrives before its images, fetched in the background.
        self.prefetcher = (
            PriorPrefetcher(self.sessions, s.orthanc, rules, s.priors)
            if s.priors.prefetch
            else None
        )
        self.hl7 = Hl7Intake(self.sessions, self.assembler, prefetcher=self.prefetcher)

    def web_app(self) -> Any:
        return build_web_app(
            self.settings,
            self.sessions,
            model_versions=self.model_versions,
            approve_model=self.approve_model,
        )

    def on_stable_study(self, study_uid: str) -> None:
        """The VNA says a study is stable: trigger the pathways its routing picks."""
        if self.spool.study_dir(study_uid).exists():
            return  # arrived through the SCP too; the assembler owns it
        per_series: dict[str, pydicom.Dataset] = {}
        for item in self.archive.study_metadata(study_uid):
            ds = pydicom.Dataset.from_json(item)
            per_series.setdefault(str(ds.get("SeriesInstanceUID", "")), ds)
        pathways, _attrs = self.rules.route(list(per_series.values()), None)
        accession = next((str(d.get("AccessionNumber", "")) for d in per_series.values()), "")
        for pathway in pathways:
            self.outbox.enqueue(
                source="vna",
                pathway=pathway,
                study_uid=study_uid,
                parameters={"study_uid": study_uid, "accession_number": accession or None},
                key=idempotency_key(pathway, study_uid),
            )
        if pathways:
            self.dispatcher.wake()

    def start_threads(self) -> None:
        g = self.settings.gateway
        recovered = self.assembler.recover(self.spool.root)
        if recovered:
            log.info("resuming %d open studies after restart", recovered)
        ae, handlers = build_ae(
            g.aet, self.receiver, self.mpps, g.allowed_aets, commitment=self.commitment
        )
        dicom_tls = listener_context(self.settings.tls, "dicom")
        self.commitment.start()
        self._scp = start_scp(ae, handlers, g.host, g.dicom_port, ssl_context=dicom_tls)
        self.assembler.start()
        self.dispatcher.start()
        if g.spool_retention_days > 0:  # 0: the spool is kept forever
            self._janitor = SpoolJanitor(
                self.spool.root,
                self.sessions,
                g.spool_retention_days,
                commitment_records=self.commitment.records_dir,
            )
            self._janitor.start()
        if g.vna_change_feed:
            self._watcher = ChangeFeedWatcher(
                OrthancExtras(self.settings.orthanc),
                self.settings.paths.var_dir / "gateway" / "changes.seq",
                self.on_stable_study,
            )
            self._watcher.position_file.parent.mkdir(parents=True, exist_ok=True)
            self._watcher.start()
        log.info(
            "DICOM SCP %s listening on %s:%s (tls=%s)",
            g.aet,
            g.host,
            g.dicom_port,
            dicom_tls is not None,
        )

    def stop_threads(self) -> None:
        if self._watcher:
            self._watcher.stop()
        if self._janitor:
            self._janitor.stop()
        if self._scp is not None:
            # Let associations in progress finish their C-STOREs (each answered only after
            # its fsync) before the threads that record them go away.
            deadline = time.monotonic() + 10
            while self._scp.ae.active_associations and time.monotonic() < deadline:
                time.sleep(0.1)
            self._scp.shutdown()
        self.commitment.stop()
        self.assembler.stop()
        self.dispatcher.stop()
        if self.prefetcher is not None:
            self.prefetcher.close()
        self.prefect.close()

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        g = self.settings.gateway
        stop = stop or asyncio.Event()
        tls = self.settings.tls
        # Build every TLS context before anything listens: a bad file fails the start.
        mllp_tls = listener_context(tls, "mllp")
        http_tls = uvicorn_tls_options(tls)
        self.start_threads()
        mllp = MllpServer(g.host, g.mllp_port, self.hl7.handle, ssl=mllp_tls)
        await mllp.start()
        log.info("MLLP listening on %s:%s", g.host, mllp.port)

        def triggered(_row: OutboxEntry) -> None:
            self.dispatcher.wake()

        app = create_gateway_app(self.settings, self.sessions, self.outbox, on_trigger=triggered)
        # The clinical web UI and API share the port; the webhook routes match first.
        app.mount("/", self.web_app())
        http = uvicorn.Server(
            uvicorn.Config(
                app,
                host=g.host,
                port=g.http_port,
                log_level="warning",
                lifespan="on",
                **http_tls,
            )
        )
        http.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        http_task = asyncio.create_task(http.serve())
        try:
            await stop.wait()
        finally:
            http.should_exit = True
            await http_task
            await mllp.stop()
            self.stop_threads()
            log.info("gateway stopped")


def run_gateway(settings: Settings, **bindings: Any) -> None:
    """Run until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Gateway(settings, **bindings).serve(stop)

    asyncio.run(main())
