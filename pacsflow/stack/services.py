"""The embedded services, each described as a `ManagedProcess` built from the settings."""

from __future__ import annotations

import json
import shutil
import ssl
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template

import httpx

from pacsflow.config import Settings
from pacsflow.config.settings import WORKER_POOLS, write_settings
from pacsflow.config.tls import client_context
from pacsflow.errors import StackError
from pacsflow.stack.process import ManagedProcess

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
ORTHANC_TEMPLATE = INFRA_DIR / "orthanc" / "orthanc.json.template"


def _http_ok(
    url: str, auth: tuple[str, str] | None = None, verify: ssl.SSLContext | bool = True
) -> bool:
    try:
        return httpx.get(url, auth=auth, timeout=2.0, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def _venv_tool(name: str) -> str:
    """A console script of the running interpreter's environment (prefect, mlflow, ...)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StackError(f"{name} is not installed in this environment")
    return found


def render_orthanc_config(settings: Settings, storage_dir: Path) -> str:
    """The Orthanc configuration for these settings, from the template in infra/orthanc."""
    o = settings.orthanc
    text = Template(ORTHANC_TEMPLATE.read_text()).substitute(
        storage_dir=json.dumps(str(storage_dir.resolve()))[1:-1],
        http_port=o.http_port,
        dicom_port=o.dicom_port,
        aet=o.aet,
        username=json.dumps(o.username)[1:-1],
        password=json.dumps(o.password.get_secret_value())[1:-1],
        stable_age=o.stable_age_s,
        dicomweb_plugin=json.dumps(str(o.dicomweb_plugin))[1:-1],
    )
    json.loads(text)  # fail here, not inside Orthanc, if the template is broken
    return text


# dcmtk, under Orthanc's DICOM server, leaves Nagle's algorithm on unless TCP_NODELAY is set
# in its environment; each C-STORE response then waits out the peer's delayed ACK (~40 ms),
# and a 562-instance chest CT took 26 s to store instead of 1.3 s (measured on loopback).
DCMTK_ENV = {"TCP_NODELAY": "1"}


def orthanc_service(settings: Settings) -> ManagedProcess:
    o = settings.orthanc
    base = settings.paths.var_dir / "orthanc"
    storage = base / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = base / "orthanc.json"
    config.write_text(render_orthanc_config(settings, storage))
    if not o.dicomweb_plugin.exists():
        raise StackError(
            f"Orthanc's DICOMweb plugin is missing ({o.dicomweb_plugin}); "
            "install the Debian packages orthanc and orthanc-dicomweb (make bootstrap)"
        )
    auth = (o.username, o.password.get_secret_value())
    return ManagedProcess(
        name="orthanc",
        argv=[o.binary, str(config.resolve())],
        env=DCMTK_ENV,
        run_dir=settings.paths.run_dir,
        log_dir=settings.paths.log_dir,
        ports=[(o.host, o.http_port), (o.host, o.dicom_port)],
        ready=lambda: _http_ok(f"{o.base_url}/dicom-web/studies?limit=1", auth),
        start_timeout_s=30,
    )


def prefect_env(settings: Settings) -> dict[str, str]:
    home = (settings.paths.var_dir / "prefect").resolve()
    database_url = settings.prefect.database_url or f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": settings.prefect.effective_api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_UI_API_URL": settings.prefect.effective_api_url,
        "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
    }


def prefect_service(settings: Settings) -> ManagedProcess:
    p = settings.prefect
    (settings.paths.var_dir / "prefect").mkdir(parents=True, exist_ok=True)
    return ManagedProcess(
        name="prefect",
        argv=[_venv_tool("prefect"), "server", "start", "--host", p.host, "--port", str(p.port)],
        env=prefect_env(settings),
        run_dir=settings.paths.run_dir,
        log_dir=settings.paths.log_dir,
        ports=[(p.host, p.port)],
        ready=lambda: _http_ok(f"{p.effective_api_url}/health"),
        start_timeout_s=90,
    )


def mlflow_env(settings: Settings) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }


def mlflow_service(settings: Settings) -> ManagedProcess:
    m = settings.mlflow
    settings.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
    return ManagedProcess(
        name="mlflow",
        argv=[
            _venv_tool("mlflow"),
            "server",
            "--backend-store-uri",
            settings.mlflow_tracking_uri,
            "--default-artifact-root",
            str(settings.mlflow_artifact_root),
            "--host",
            m.host,
            "--port",
            str(m.port),
            "--workers",
            "1",
        ],
        env=mlflow_env(settings),
        run_dir=settings.paths.run_dir,
        log_dir=settings.paths.log_dir,
        ports=[(m.host, m.port)],
        ready=lambda: _http_ok(f"http://{m.host}:{m.port}/health"),
        start_timeout_s=90,
    )


def app_env(settings: Settings) -> dict[str, str]:
    """The environment of pacsflow's own processes: the exact effective settings, handed
    over as a TOML file (so a --config file and environment overrides both carry over)."""
    config = write_settings(settings, settings.paths.run_dir / "effective-config.toml")
    return {
        **prefect_env(settings),
        **mlflow_env(settings),
        "PACSFLOW_CONFIG_FILE": str(config.resolve()),
    }


def gateway_service(settings: Settings) -> ManagedProcess:
    g = settings.gateway
    verify = _probe_tls(settings)
    return ManagedProcess(
        name="gateway",
        argv=[sys.executable, "-m", "pacsflow.cli.main", "gateway"],
        env=app_env(settings),
        run_dir=settings.paths.run_dir,
        log_dir=settings.paths.log_dir,
        ports=[(g.host, g.dicom_port), (g.host, g.mllp_port), (g.host, g.http_port)],
        ready=lambda: _http_ok(f"{settings.gateway_url}/health", verify=verify),
        start_timeout_s=60,
    )


def _probe_tls(settings: Settings) -> ssl.SSLContext | bool:
    """How the readiness probe verifies the gateway's HTTPS port: against tls.ca_file,
    presenting the gateway's own certificate when listeners require one."""
    return client_context(settings.tls) if settings.tls.http else True


def runner_process(
    settings: Settings, name: str, pools: Sequence[str], env: Mapping[str, str] | None = None
) -> ManagedProcess:
    """One warm runner (deployments.serve) claiming the runs of `pools`."""
    argv = [sys.executable, "-m", "deployments.serve"]
    for pool in pools:
        argv += ["--pool", pool]
    argv += ["--concurrency", str(settings.workers.concurrency)]
    return ManagedProcess(
        name=name,
        argv=argv,
        env=app_env(settings) if env is None else env,
        run_dir=settings.paths.run_dir,
        log_dir=settings.paths.log_dir,
        ports=[],
        ready=lambda: True,
        start_timeout_s=120,
    )


def worker_services(settings: Settings) -> list[ManagedProcess]:
    """The warm runners of the stack: workers.count serving every pool ("worker-1", ...)
    and workers.gpu_count serving only the gpu pool ("worker-gpu-1", ...), each with its
    own pid and log file."""
    w = settings.workers
    env = app_env(settings)  # written once: every runner reads the same effective file
    every_pool = [
        runner_process(settings, f"worker-{i}", WORKER_POOLS, env) for i in range(1, w.count + 1)
    ]
    gpu_only = [
        runner_process(settings, f"worker-gpu-{i}", ["gpu"], env) for i in range(1, w.gpu_count + 1)
    ]
    return every_pool + gpu_only
