"""`ssl.SSLContext` objects built from the `tls` settings group.

One identity (``tls.cert_file`` + ``tls.key_file``) serves every listener the settings put
under TLS and is presented as the client certificate when pacsflow connects out.
Contexts require TLS 1.2 or later, as the DICOM BCP 195 secure transport profiles do
(PS3.15 B.9-B.11); the cipher suites are OpenSSL's defaults for that floor.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from pacsflow.config.settings import TlsSettings
from pacsflow.errors import ConfigError

Listener = Literal["dicom", "mllp", "http"]


def _require(path: Path | None, name: str) -> Path:
    if path is None:
        raise ConfigError(f"tls.{name} is not set")
    if not path.is_file():
        raise ConfigError(f"tls.{name} not found: {path}")
    return path


def _load_identity(context: ssl.SSLContext, tls: TlsSettings) -> None:
    cert = _require(tls.cert_file, "cert_file")
    key = _require(tls.key_file, "key_file")
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load tls.cert_file {cert} with tls.key_file {key}: {exc}"
        ) from exc


def _load_trust(context: ssl.SSLContext, tls: TlsSettings) -> None:
    ca = _require(tls.ca_file, "ca_file")
    try:
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load tls.ca_file {ca}: {exc}") from exc


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """The context of a TLS listener; with ``require_client_cert`` a client must present a
    certificate signed by a CA of ``tls.ca_file``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_identity(context, tls)
    if tls.require_client_cert:
        _load_trust(context, tls)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """The context pacsflow connects out with (and probes its own listeners with): it
    verifies the peer against ``tls.ca_file`` (else the system store) and presents
    pacsflow's certificate when one is configured."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca_file is not None:
        _load_trust(context, tls)
    if tls.cert_file is not None or tls.key_file is not None:
        _load_identity(context, tls)
    return context


def listener_context(tls: TlsSettings, listener: Listener) -> ssl.SSLContext | None:
    """The server context for one listener, or None when the settings leave it plain."""
    enabled: bool = getattr(tls, listener)
    return server_context(tls) if enabled else None


def uvicorn_tls_options(tls: TlsSettings) -> dict[str, Any]:
    """Keyword arguments of `uvicorn.Config` for HTTPS on the gateway's HTTP port (empty
    when ``tls.http`` is off). uvicorn builds its own context from files, so the files are
    checked here, where a mistake is reported as a configuration error."""
    if not tls.http:
        return {}
    server_context(tls)  # fail early, with the same messages as the other listeners
    options: dict[str, Any] = {
        "ssl_certfile": str(tls.cert_file),
        "ssl_keyfile": str(tls.key_file),
    }
    if tls.require_client_cert:
        options["ssl_ca_certs"] = str(tls.ca_file)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options
