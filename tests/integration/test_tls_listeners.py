"""TLS on every gateway listener, from the settings, with a CA the tests make.

The gateway runs whole (DICOM SCP, MLLP, HTTP) with ``require_client_cert``: dcmtk's echoscu
and storescu speak DICOM over TLS (their ``+tls`` options), pacsflow's MLLP client speaks
HL7, httpx asks for /health. Clients without TLS or without a certificate fail cleanly, and
the listeners keep serving.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from pacsflow.config import Settings, load_settings
from pacsflow.config.settings import write_settings
from pacsflow.config.tls import client_context, listener_context, server_context
from pacsflow.errors import ConfigError, PeerUnavailableError
from pacsflow.gateway.service import Gateway
from pacsflow.gateway.storage_commitment import STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE
from pacsflow.hl7 import send_message
from pacsflow.testing.dicom_factory import write_tiny_study
from pacsflow.testing.services import isolated_settings
from pacsflow.testing.test_ca import IssuedCertificates, make_test_ca

pytestmark = [pytest.mark.dcmtk]

HOST = "127.0.0.1"
MODALITY = "TLSMOD"
# A guard so a bug hangs no test run; no assertion depends on timing.
GUARD_S = 60


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> IssuedCertificates:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> IssuedCertificates:
    """Certificates from another CA, which the gateway does not trust."""
    return make_test_ca(tmp_path_factory.mktemp("other-ca"), ca_name="some other CA")


def _client_tls(certs: IssuedCertificates, *, with_certificate: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca_cert))
    if with_certificate:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    return context


class TlsModality:
    """A modality's listener for Storage Commitment reports, under TLS with client
    certificates required, trusting the test CA."""

    def __init__(self, certs: IssuedCertificates) -> None:
        self.reports: list[tuple[int, Dataset]] = []
        self.received = threading.Event()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca_cert))
        context.load_cert_chain(certs.server_cert, certs.server_key)
        context.verify_mode = ssl.CERT_REQUIRED
        ae = AE(ae_title=MODALITY)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        self.server = ae.start_server(
            (HOST, 0),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)],
            ssl_context=context,
        )
        self.port: int = self.server.server_address[1]

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        info = event.event_information
        info.decode()
        self.reports.append((int(event.event_type or 0), info))
        self.received.set()
        return 0x0000, None


@pytest.fixture(scope="module")
def tls_modality(certificates: IssuedCertificates) -> Iterator[TlsModality]:
    modality = TlsModality(certificates)
    try:
        yield modality
    finally:
        modality.server.shutdown()


@pytest.fixture(scope="module")
def tls_settings(
    tmp_path_factory: pytest.TempPathFactory,
    certificates: IssuedCertificates,
    tls_modality: TlsModality,
) -> Settings:
    return isolated_settings(
        tmp_path_factory.mktemp("var"),
        gateway={
            "stable_window_s": {"default": 3600.0},  # nothing here needs Prefect
            "dicom_peers": {MODALITY: f"{HOST}:{tls_modality.port}"},
            "commitment_report_attempts": 1,
        },
        tls={
            "cert_file": certificates.server_cert,
            "key_file": certificates.server_key,
            "ca_file": certificates.ca_cert,
            "require_client_cert": True,
            "dicom": True,
            "mllp": True,
            "http": True,
            "dicom_outbound": True,
        },
    )


@pytest.fixture(scope="module")
def gateway(tls_settings: Settings, certificates: IssuedCertificates) -> Iterator[Gateway]:
    """The whole gateway, serving in a thread, ready once /health answers over HTTPS."""
    gw = Gateway(tls_settings)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(gw.serve(stop))
        except BaseException as exc:  # reported below
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="tls-gateway", daemon=True)
    thread.start()
    url = f"{tls_settings.gateway_url}/health"
    deadline = time.monotonic() + GUARD_S
    while True:
        try:
            if httpx.get(url, verify=_client_tls(certificates), timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert not failure, f"gateway did not start: {failure[0]!r}"
        assert time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.1)
    try:
        yield gw
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=GUARD_S)


# -- DICOM ---------------------------------------------------------------------------------------
def _dcmtk(
    tool: str, settings: Settings, *options: str, files: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    if shutil.which(tool) is None:
        pytest.skip(f"dcmtk's {tool} is not installed")
    g = settings.gateway
    argv = [tool, "-aet", "MODALITY1", "-aec", g.aet, *options, HOST, str(g.dicom_port)]
    argv += [str(f) for f in files]
    return subprocess.run(argv, capture_output=True, text=True, timeout=GUARD_S, check=False)


def _dcmtk_tls(certs: IssuedCertificates) -> list[str]:
    """dcmtk's options for TLS with a client certificate, trusting the test CA."""
    return ["+tls", str(certs.client_key), str(certs.client_cert), "+cf", str(certs.ca_cert)]


def test_dicom_echo_and_store_over_tls_with_dcmtk(
    gateway: Gateway, tls_settings: Settings, certificates: IssuedCertificates, tmp_path: Path
) -> None:
    echo = _dcmtk("echoscu", tls_settings, *_dcmtk_tls(certificates))
    assert echo.returncode == 0, echo.stderr

    study_uid, files = write_tiny_study(tmp_path / "study", slices=3)
    store = _dcmtk("storescu", tls_settings, *_dcmtk_tls(certificates), files=tuple(files))
    assert store.returncode == 0, store.stderr
    assert len(list((tls_settings.spool_dir / study_uid).rglob("*.dcm"))) == 3


def test_dicom_clients_without_tls_or_certificate_fail_and_tls_keeps_serving(
    gateway: Gateway,
    tls_settings: Settings,
    certificates: IssuedCertificates,
    stranger: IssuedCertificates,
) -> None:
    # A TCP connection that never says anything must not hold up anybody else.
    idle = socket.create_connection((HOST, tls_settings.gateway.dicom_port))
    try:
        assert _dcmtk("echoscu", tls_settings, *_dcmtk_tls(certificates)).returncode == 0

        plain = _dcmtk("echoscu", tls_settings)
        assert plain.returncode != 0
        no_certificate = _dcmtk("echoscu", tls_settings, "+tla", "+cf", str(certificates.ca_cert))
        assert no_certificate.returncode != 0
        untrusted = _dcmtk(
            "echoscu",
            tls_settings,
            "+tls",
            str(stranger.client_key),
            str(stranger.client_cert),
            "+cf",
            str(certificates.ca_cert),
        )
        assert untrusted.returncode != 0
        # The client checks the gateway too: a CA that did not sign its certificate fails.
        wrong_ca = _dcmtk(
            "echoscu",
            tls_settings,
            "+tls",
            str(certificates.client_key),
            str(certificates.client_cert),
            "+cf",
            str(stranger.ca_cert),
        )
        assert wrong_ca.returncode != 0
    finally:
        idle.close()
    assert _dcmtk("echoscu", tls_settings, *_dcmtk_tls(certificates)).returncode == 0


def test_storage_commitment_over_tls_both_ways(
    gateway: Gateway,
    tls_settings: Settings,
    certificates: IssuedCertificates,
    tls_modality: TlsModality,
) -> None:
    """N-ACTION to the TLS listener; the report goes out on a TLS association
    (tls.dicom_outbound) presenting the gateway's certificate."""
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedSOPSequence = Sequence([item])

    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(StorageCommitmentPushModel)
    g = tls_settings.gateway
    assoc = ae.associate(
        HOST, g.dicom_port, ae_title=g.aet, tls_args=(_client_tls(certificates), "localhost")
    )
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(
            ds, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE
        )
    finally:
        assoc.release()
    assert int(status.Status) == 0x0000
    assert tls_modality.received.wait(GUARD_S)
    event_type, info = tls_modality.reports[-1]
    assert event_type == 2
    assert str(info.TransactionUID) == str(ds.TransactionUID)
    assert int(info.FailedSOPSequence[0].FailureReason) == 0x0112


# -- HL7 MLLP ------------------------------------------------------------------------------------
def _orm(control_id: str) -> str:
    obr = ["OBR", "1", "PL1", "FI1", "CTHEAD^CT head^L"] + [""] * 13 + ["ACC-TLS"]
    return "\r".join(
        [
            rf"MSH|^~\&|RIS|HOSP|PACSFLOW|HOSP|20260101120000||ORM^O01^ORM_O01|{control_id}|P|2.5.1",
            "PID|1||PAT-TLS||Doe^Jane",
            "ORC|NW|PL1|FI1||SC",
            "|".join(obr),
        ]
    )


def _send(settings: Settings, control_id: str, context: ssl.SSLContext | None) -> Any:
    async def exchange() -> Any:
        return await send_message(
            HOST,
            settings.gateway.mllp_port,
            _orm(control_id),
            timeout_s=10,
            ssl=context,
            server_hostname="localhost" if context else None,
        )

    return asyncio.run(asyncio.wait_for(exchange(), GUARD_S))


def test_hl7_over_mllp_tls(
    gateway: Gateway, tls_settings: Settings, certificates: IssuedCertificates
) -> None:
    ack = _send(tls_settings, "TLS1", _client_tls(certificates))
    assert ack.accepted
    assert ack.acknowledged_control_id == "TLS1"

    with pytest.raises(PeerUnavailableError):
        _send(tls_settings, "PLAIN1", None)  # no TLS: no ACK, the connection closes
    with pytest.raises(PeerUnavailableError):
        _send(tls_settings, "NOCERT1", _client_tls(certificates, with_certificate=False))

    assert _send(tls_settings, "TLS2", _client_tls(certificates)).accepted


# -- HTTPS ---------------------------------------------------------------------------------------
def test_https_health_verified_against_the_test_ca(
    gateway: Gateway,
    tls_settings: Settings,
    certificates: IssuedCertificates,
    stranger: IssuedCertificates,
) -> None:
    url = f"{tls_settings.gateway_url}/health"
    assert url.startswith("https://")
    assert httpx.get(url, verify=_client_tls(certificates), timeout=10).status_code == 200

    plain = url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain, timeout=10)
    with pytest.raises(httpx.ConnectError):  # the gateway's certificate is not from this CA
        httpx.get(url, verify=_client_tls(stranger), timeout=10)
    with pytest.raises(httpx.HTTPError):  # no client certificate
        httpx.get(url, verify=_client_tls(certificates, with_certificate=False), timeout=10)

    assert httpx.get(url, verify=_client_tls(certificates), timeout=10).status_code == 200


# -- settings ------------------------------------------------------------------------------------
def test_tls_settings_from_environment_and_round_trip(
    tmp_path: Path, certificates: IssuedCertificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACSFLOW_TLS_CERT_FILE", str(certificates.server_cert))
    monkeypatch.setenv("PACSFLOW_TLS_KEY_FILE", str(certificates.server_key))
    monkeypatch.setenv("PACSFLOW_TLS_MLLP", "true")
    monkeypatch.setenv("PACSFLOW_GATEWAY_DICOM_PEERS", '{"CT1": "10.0.0.5:104"}')
    settings = load_settings()
    assert settings.tls.mllp and not settings.tls.dicom
    assert settings.gateway.dicom_peer("CT1") == ("10.0.0.5", 104)
    assert settings.gateway.dicom_peer("MR9") is None
    assert listener_context(settings.tls, "mllp") is not None
    assert listener_context(settings.tls, "dicom") is None
    monkeypatch.delenv("PACSFLOW_TLS_MLLP")
    monkeypatch.delenv("PACSFLOW_TLS_CERT_FILE")
    monkeypatch.delenv("PACSFLOW_TLS_KEY_FILE")
    monkeypatch.delenv("PACSFLOW_GATEWAY_DICOM_PEERS")
    assert load_settings(write_settings(settings, tmp_path / "p.toml")) == settings


def test_incomplete_or_broken_tls_settings_are_clear_errors(
    tmp_path: Path, certificates: IssuedCertificates, stranger: IssuedCertificates
) -> None:
    with pytest.raises(ConfigError, match=re.escape("tls.cert_file and tls.key_file are required")):
        load_settings(tls={"dicom": True})
    with pytest.raises(ConfigError, match=re.escape("require_client_cert needs tls.ca_file")):
        load_settings(tls={"require_client_cert": True})
    with pytest.raises(ConfigError, match="dicom_peers"):
        load_settings(gateway={"dicom_peers": {"CT1": "no-port-here"}})

    missing = load_settings(
        tls={"cert_file": tmp_path / "nope.pem", "key_file": certificates.server_key, "http": True}
    )
    with pytest.raises(ConfigError, match="not found"):
        server_context(missing.tls)
    mismatched = load_settings(
        tls={"cert_file": certificates.server_cert, "key_file": stranger.server_key, "mllp": True}
    )
    with pytest.raises(ConfigError, match="cannot load"):
        server_context(mismatched.tls)
    # pacsflow's outbound identity is its server certificate, which allows client use too.
    outbound = client_context(
        load_settings(
            tls={
                "cert_file": certificates.server_cert,
                "key_file": certificates.server_key,
                "ca_file": certificates.ca_cert,
            }
        ).tls
    )
    assert outbound.verify_mode == ssl.CERT_REQUIRED
