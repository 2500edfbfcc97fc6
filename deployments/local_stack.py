"""A whole pacsflow stack on one machine with test doubles for the hospital systems.

Used by `make demo`, the end-to-end tests and the time-to-flag benchmark: Orthanc, Prefect,
MLflow, the gateway and the warm runner as separate processes (as `pacsflow stack up`
starts them), on free loopback ports, with a recording MLLP RIS, the FHIR R4 test double and
a paging receiver in this process. The shipped models are registered and approved first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings, load_settings
from pacsflow.config.settings import write_settings
from pacsflow.db.session import make_engine, make_sessionmaker
from pacsflow.db.tables import PathwayRun, Writeback
from pacsflow.errors import StackError
from pacsflow.fhir.test_server import FhirTestServer, run_fhir_test_server
from pacsflow.gateway.dispatcher import DEPLOYMENTS
from pacsflow.hl7.test_peer import RecordingRisPeer
from pacsflow.orchestration.prefect_api import PrefectApi
from pacsflow.stack import stack
from pacsflow.testing.receivers import NotificationReceiver
from pacsflow.testing.services import isolated_settings, storescu


@dataclass
class LocalStack:
    settings: Settings
    ris: RecordingRisPeer
    ehr: FhirTestServer
    pager: NotificationReceiver
    sessions: sessionmaker[Session]

    def send(self, folder: Path, *, to_archive: bool = True, to_gateway: bool = True) -> None:
        """What the field topology does: the study lands in the archive and the gateway
        (an old study, e.g. a prior, only in the archive)."""
        targets = [(self.settings.gateway.dicom_port, self.settings.gateway.aet)]
        if not to_gateway:
            targets = []
        if to_archive:
            targets.insert(0, (self.settings.orthanc.dicom_port, self.settings.orthanc.aet))
        for port, aet in targets:
            done = storescu(self.settings, folder, port=port, called_aet=aet)
            if done.returncode != 0:
                raise StackError(f"storescu to {aet} failed: {done.stderr.strip()}")

    def outcomes(self, study_uids: list[str]) -> dict[str, PathwayRun]:
        with self.sessions() as session:
            rows = session.scalars(select(PathwayRun).where(PathwayRun.study_uid.in_(study_uids)))
            return {r.study_uid: r for r in rows}

    def wait_outcomes(
        self,
        study_uids: list[str],
        timeout_s: float = 300.0,
        on_outcome: Callable[[PathwayRun], None] | None = None,
    ) -> dict[str, PathwayRun]:
        deadline = time.monotonic() + timeout_s
        seen: dict[str, PathwayRun] = {}
        while time.monotonic() < deadline:
            for uid, row in self.outcomes(study_uids).items():
                if uid not in seen:
                    seen[uid] = row
                    if on_outcome:
                        on_outcome(row)
            if len(seen) == len(study_uids):
                break
            time.sleep(0.25)
        return seen

    def writebacks(self, study_uid: str) -> list[Writeback]:
        with self.sessions() as session:
            return list(session.scalars(select(Writeback).where(Writeback.study_uid == study_uid)))


def _wait_for_deployment(settings: Settings, name: str, timeout_s: float) -> None:
    api = PrefectApi(settings.prefect.effective_api_url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                api.deployment_id(name)
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise StackError(f"deployment {name} not registered: {exc}") from exc
                time.sleep(0.5)
    finally:
        api.close()


@contextmanager
def local_stack(
    var_dir: Path,
    *,
    stable_window_s: float = 5.0,
    echo: Callable[[str], None] = lambda _m: None,
    **overrides: Any,
) -> Iterator[LocalStack]:
    previous = os.environ.get("PACSFLOW_CONFIG_FILE")
    with (
        RecordingRisPeer.in_background() as ris,
        run_fhir_test_server() as ehr,
        NotificationReceiver() as pager,
    ):
        settings = isolated_settings(
            var_dir.resolve(),
            ris={"mllp_port": ris.port},
            ehr={"fhir_base_url": ehr.url},
            notify={"endpoints": [pager.url]},
            gateway={"stable_window_s": {"default": stable_window_s}},
            **overrides,
        )
        g = settings.gateway
        settings = settings.model_copy(
            update={
                "notify": settings.notify.model_copy(
                    update={"case_link_base": f"http://{g.host}:{g.http_port}/cases"}
                )
            }
        )
        config = write_settings(settings, var_dir / "pacsflow.toml")
        os.environ["PACSFLOW_CONFIG_FILE"] = str(config.resolve())
        settings = load_settings()
        try:
            from models.bootstrap import ensure_registered

            registered = ensure_registered(
                settings.mlflow_tracking_uri, artifact_root=settings.mlflow_artifact_root
            )
            for name, info in registered.items():
                who = info.approval.approved_by if info.approval else "-"
                echo(f"  model {name}: version {info.version} is champion (approved by {who})")
            try:
                stack.up(settings, echo=echo)
                for name in DEPLOYMENTS.values():
                    _wait_for_deployment(settings, name, 180)
                yield LocalStack(
                    settings, ris, ehr, pager, make_sessionmaker(make_engine(settings.database_url))
                )
            finally:
                stack.down(settings, echo=echo)
        finally:
            if previous is None:
                os.environ.pop("PACSFLOW_CONFIG_FILE", None)
            else:
                os.environ["PACSFLOW_CONFIG_FILE"] = previous
