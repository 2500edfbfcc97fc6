"""`pacsflow web`: the web UI/API alone, as the api image runs it, in a real process on a
free port; plain HTTP and HTTPS from the tls settings (the gateway's HTTP listener rules)."""

from __future__ import annotations

import ssl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from pacsflow.config import Settings
from pacsflow.config.settings import write_settings
from pacsflow.stack.process import ManagedProcess, free_port, port_is_free
from pacsflow.testing.services import isolated_settings
from pacsflow.testing.test_ca import IssuedCertificates, make_test_ca

HOST = "127.0.0.1"


def _answers(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    try:
        return httpx.get(url, timeout=2.0, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def web_process(
    settings: Settings, port: int, verify: ssl.SSLContext | bool = True
) -> Iterator[str]:
    """`pacsflow web --port PORT` with these settings, until the block ends; its base URL."""
    config = write_settings(settings, settings.paths.var_dir / "pacsflow.toml")
    scheme = "https" if settings.tls.http else "http"
    base = f"{scheme}://{HOST}:{port}"
    proc = ManagedProcess(
        name="web",
        argv=[sys.executable, "-m", "pacsflow.cli.main", "web", "--port", str(port)],
        env={"PACSFLOW_CONFIG_FILE": str(config.resolve())},
        run_dir=settings.paths.run_dir,
        log_dir=settings.paths.log_dir,
        ports=[(HOST, port)],
        ready=lambda: _answers(f"{base}/health", verify),
        start_timeout_s=90,
    )
    proc.start()
    try:
        proc.wait_ready()
        yield base
    finally:
        assert proc.stop()


def test_web_serves_health_and_login_and_nothing_of_the_gateway(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "var")
    port = free_port()
    with web_process(settings, port) as base:
        health = httpx.get(f"{base}/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        login = httpx.get(f"{base}/login")
        assert login.status_code == 200 and "<form" in login.text
        # The web app only: no webhook route, and no DICOM or MLLP listener.
        assert httpx.post(f"{base}/hooks/study", json={}).status_code in {404, 405}
        g = settings.gateway
        assert port_is_free(g.host, g.dicom_port) and port_is_free(g.host, g.mllp_port)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> IssuedCertificates:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


def test_web_listens_with_https_when_tls_http_is_on(
    tmp_path: Path, certificates: IssuedCertificates
) -> None:
    settings = isolated_settings(
        tmp_path / "var",
        tls={
            "cert_file": certificates.server_cert,
            "key_file": certificates.server_key,
            "ca_file": certificates.ca_cert,
            "http": True,
        },
    )
    trust = ssl.create_default_context(cafile=str(certificates.ca_cert))
    port = free_port()
    with web_process(settings, port, verify=trust) as base:
        assert base.startswith("https://")
        assert httpx.get(f"{base}/health", verify=trust).status_code == 200
        with pytest.raises(httpx.HTTPError):  # plain HTTP to a TLS port gets no answer
            httpx.get(f"http://{HOST}:{port}/health", timeout=5.0)
