"""`pacsflow stack up | down | status`: the embedded services in dependency order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pacsflow.config import Settings
from pacsflow.db.session import upgrade
from pacsflow.stack import services
from pacsflow.stack.process import ManagedProcess

ServiceFactory = Callable[[Settings], ManagedProcess]

# Start order; stop runs in reverse. The gateway and the worker need the three before them.
CORE_SERVICES: dict[str, ServiceFactory] = {
    "orthanc": services.orthanc_service,
    "prefect": services.prefect_service,
    "mlflow": services.mlflow_service,
}
APP_SERVICES: dict[str, ServiceFactory] = {
    "gateway": services.gateway_service,
    "worker": services.worker_service,
}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    url: str | None


def service_urls(settings: Settings) -> dict[str, str]:
    g = settings.gateway
    return {
        "orthanc": settings.orthanc.base_url + "/app/explorer.html",
        "prefect": settings.prefect.ui_url,
        "mlflow": f"http://{settings.mlflow.host}:{settings.mlflow.port}",
        "gateway": f"http://{g.host}:{g.http_port} (DICOM {g.aet}@{g.host}:{g.dicom_port}, "
        f"MLLP {g.host}:{g.mllp_port})",
        "worker": "Prefect runner serving pacsflow deployments",
    }


def selected(include_app: bool) -> dict[str, ServiceFactory]:
    chosen = dict(CORE_SERVICES)
    if include_app:
        chosen.update(APP_SERVICES)
    return chosen


def up(
    settings: Settings, *, include_app: bool = True, echo: Callable[[str], None] = print
) -> None:
    """Start every service that is not running, then wait until each answers."""
    settings.paths.var_dir.mkdir(parents=True, exist_ok=True)
    echo(f"database: migrating {settings.database_url}")
    upgrade(settings.database_url)
    factories = selected(include_app)
    core = [factories[name](settings) for name in CORE_SERVICES]
    # Start the core together (they are independent), then wait for each.
    for proc in core:
        was_running = proc.is_running()
        pid = proc.start()
        echo(f"{proc.name}: {'already running' if was_running else 'started'} (pid {pid})")
    for proc in core:
        proc.wait_ready()
    for name in factories:
        if name in CORE_SERVICES:
            continue
        proc = factories[name](settings)
        was_running = proc.is_running()
        pid = proc.start()
        proc.wait_ready()
        echo(f"{name}: {'already running' if was_running else 'started'} (pid {pid})")
    urls = service_urls(settings)
    for name in factories:
        echo(f"  {name:8} {urls[name]}")


def down(settings: Settings, *, echo: Callable[[str], None] = print) -> None:
    for name in reversed(list(selected(include_app=True))):
        proc = _describe(settings, name)
        echo(f"{name}: {'stopped' if proc.stop() else 'not running'}")


def status(settings: Settings) -> list[ServiceStatus]:
    urls = service_urls(settings)
    result = []
    for name in selected(include_app=True):
        proc = _describe(settings, name)
        pid = proc.pid()
        result.append(ServiceStatus(name, pid is not None and proc.ready(), pid, urls[name]))
    return result


def _describe(settings: Settings, name: str) -> ManagedProcess:
    return selected(include_app=True)[name](settings)
