"""`pacsflow stack up | down | status`: the embedded services in dependency order.

The core (Orthanc, Prefect, MLflow) first, then the gateway and the warm runners:
workers.count runners serving every pool ("worker-1", ...) and workers.gpu_count serving
only the gpu pool ("worker-gpu-1", ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from pacsflow.config import Settings
from pacsflow.db.session import upgrade
from pacsflow.stack import services
from pacsflow.stack.process import ManagedProcess

ServiceFactory = Callable[[Settings], ManagedProcess]

# Start order; stop runs in reverse. The gateway and the workers need the three before them.
CORE_SERVICES: dict[str, ServiceFactory] = {
    "orthanc": services.orthanc_service,
    "prefect": services.prefect_service,
    "mlflow": services.mlflow_service,
}
# Runner pid files: "worker" (one runner, before work pools), "worker-N", "worker-gpu-N".
WORKER_NAME = re.compile(r"worker(-gpu)?(-[1-9][0-9]*)?")


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    url: str | None


def app_services(settings: Settings) -> list[ManagedProcess]:
    """The gateway, then every configured warm runner."""
    return [services.gateway_service(settings), *services.worker_services(settings)]


def service_urls(settings: Settings) -> dict[str, str]:
    g = settings.gateway
    w = settings.workers
    urls = {
        "orthanc": settings.orthanc.base_url + "/app/explorer.html",
        "prefect": settings.prefect.ui_url,
        "mlflow": f"http://{settings.mlflow.host}:{settings.mlflow.port}",
        "gateway": f"http://{g.host}:{g.http_port} (DICOM {g.aet}@{g.host}:{g.dicom_port}, "
        f"MLLP {g.host}:{g.mllp_port})",
    }
    for i in range(1, w.count + 1):
        urls[f"worker-{i}"] = "Prefect runner, pools cpu + gpu"
    for i in range(1, w.gpu_count + 1):
        urls[f"worker-gpu-{i}"] = "Prefect runner, pool gpu"
    return urls


def up(
    settings: Settings, *, include_app: bool = True, echo: Callable[[str], None] = print
) -> None:
    """Start every service that is not running, then wait until each answers."""
    settings.paths.var_dir.mkdir(parents=True, exist_ok=True)
    echo(f"database: migrating {settings.database_url}")
    upgrade(settings.database_url)
    core = [factory(settings) for factory in CORE_SERVICES.values()]
    # Start the core together (they are independent), then wait for each.
    for proc in core:
        was_running = proc.is_running()
        pid = proc.start()
        echo(f"{proc.name}: {'already running' if was_running else 'started'} (pid {pid})")
    for proc in core:
        proc.wait_ready()
    app = app_services(settings) if include_app else []
    for proc in app:
        was_running = proc.is_running()
        pid = proc.start()
        proc.wait_ready()
        echo(f"{proc.name}: {'already running' if was_running else 'started'} (pid {pid})")
    urls = service_urls(settings)
    width = max(len(proc.name) for proc in core + app)
    for proc in core + app:
        echo(f"  {proc.name:{width}} {urls[proc.name]}")


def down(settings: Settings, *, echo: Callable[[str], None] = print) -> None:
    """Stop every service in reverse start order, and runners left over from an earlier
    configuration (more workers, or the single "worker" before work pools)."""
    for proc in reversed(_every_process(settings)):
        echo(f"{proc.name}: {'stopped' if proc.stop() else 'not running'}")


def status(settings: Settings) -> list[ServiceStatus]:
    urls = service_urls(settings)
    result = []
    for proc in _every_process(settings):
        pid = proc.pid()
        if proc.name not in urls and pid is None:
            continue  # a left-over pid file of a runner that is gone
        url = urls.get(proc.name, "Prefect runner not in the configuration: `stack down`")
        result.append(ServiceStatus(proc.name, pid is not None and proc.ready(), pid, url))
    return result


def _every_process(settings: Settings) -> list[ManagedProcess]:
    configured = [f(settings) for f in CORE_SERVICES.values()] + app_services(settings)
    names = {p.name for p in configured}
    return configured + [p for p in _leftover_runners(settings) if p.name not in names]


def _leftover_runners(settings: Settings) -> list[ManagedProcess]:
    """Runners with a pid file that the configuration no longer names (enough to stop
    them: the pid file is what `stop` needs)."""
    run_dir = settings.paths.run_dir
    names = sorted(p.stem for p in run_dir.glob("worker*.pid") if WORKER_NAME.fullmatch(p.stem))
    return [
        ManagedProcess(
            name=name,
            argv=[],
            run_dir=run_dir,
            log_dir=settings.paths.log_dir,
            ports=[],
            ready=lambda: True,
        )
        for name in names
    ]
