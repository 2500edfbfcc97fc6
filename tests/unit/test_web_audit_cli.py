"""`pacsflow audit verify|export` and `pacsflow users ...` on a real SQLite database; syslog
forwarding to collectors listening on loopback sockets (UDP and TCP)."""

from __future__ import annotations

import argparse
import io
import json
import socket
import threading
import xml.etree.ElementTree as ET
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import text

from pacsflow.cli import audit_cmd, users_cmd
from pacsflow.config import Settings, load_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.errors import InvalidInputError, PeerUnavailableError
from pacsflow.governance.audit import AuditLog
from pacsflow.governance.syslog import parse_endpoint, rfc5424_message
from pacsflow.governance.users import UserStore
from pacsflow.stack.process import free_port

STUDY = "1.2.826.0.1.3680043.10.1179.1"


def run(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pacsflow")
    sub = parser.add_subparsers(dest="command", required=True)
    audit_cmd.add_parser(sub)
    users_cmd.add_parser(sub)
    args = parser.parse_args(list(argv))
    return int(args.handler(args, settings))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(paths={"var_dir": tmp_path / "var"})


@pytest.fixture
def audit(settings: Settings) -> AuditLog:
    upgrade(settings.database_url)
    log = AuditLog(make_sessionmaker(make_engine(settings.database_url)))
    log.append("rita", "auth.login", "rita", {"role": "resident", "method": "password"})
    log.append(
        "rita",
        "result.view",
        STUDY,
        {"role": "resident", "accession": "A1001", "patient_id": "P001", "part": "case"},
    )
    log.append("rita", "result.confirm", STUDY, {"role": "resident", "accession": "A1001"})
    log.append("anonymous", "auth.login_failed", "mallory", {"via": "api"})
    log.append("ada", "model.approve", "pacsflow-ich/4", {"role": "admin"})
    return log


# --- verify -------------------------------------------------------------------------------
def test_verify_intact_chain(
    settings: Settings, audit: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(settings, "audit", "verify") == 0
    assert "audit chain intact: 5 entries" in capsys.readouterr().out


def test_verify_names_the_edited_entry(
    settings: Settings, audit: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    with audit.sessions() as s:
        s.execute(text('UPDATE audit_log SET detail = \'{"role": "attending"}\' WHERE id = 3'))
        s.commit()
    assert run(settings, "audit", "verify") == 1
    err = capsys.readouterr().err
    assert "entry 3: content does not match its hash (edited)" in err
    assert "entry 2" not in err and "entry 4" not in err


def test_verify_names_the_deleted_entry(
    settings: Settings, audit: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    with audit.sessions() as s:
        s.execute(text("DELETE FROM audit_log WHERE id = 2"))
        s.commit()
    assert run(settings, "audit", "verify") == 1
    err = capsys.readouterr().err
    assert "entries 2..2 are missing (deleted)" in err


# --- export -------------------------------------------------------------------------------
def test_export_jsonl(settings: Settings, audit: AuditLog, tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    assert run(settings, "audit", "export", "--format", "jsonl", "--out", str(out)) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["action"] for line in lines] == [
        "auth.login",
        "result.view",
        "result.confirm",
        "auth.login_failed",
        "model.approve",
    ]
    assert all(b["prev_hash"] == a["hash"] for a, b in pairwise(lines))
    # The export itself is audited (after the file was written).
    with audit.sessions() as s:
        action, detail = s.execute(
            text("SELECT action, detail FROM audit_log ORDER BY id DESC LIMIT 1")
        ).one()
    assert action == "audit.export" and json.loads(detail)["entries"] == 5


def test_export_atna_is_one_dicom_audit_message_per_entry(
    settings: Settings, audit: AuditLog, tmp_path: Path
) -> None:
    out = tmp_path / "audit.xml"
    assert run(settings, "audit", "export", "--format", "atna", "--out", str(out)) == 0
    messages = [ET.fromstring(line) for line in out.read_text().splitlines()]
    assert len(messages) == 5 and all(m.tag == "AuditMessage" for m in messages)

    login, view, confirm, failed, approve = messages
    event = login.find("EventIdentification")
    assert event is not None and event.get("EventActionCode") == "E"
    assert event.find("EventID").get("csd-code") == "110114"  # type: ignore[union-attr]
    type_codes = {(c.get("csd-code"), c.get("codeSystemName")) for c in event.iter("EventTypeCode")}
    assert ("110122", "DCM") in type_codes and ("auth.login", "99PACSFLOW") in type_codes

    view_event = view.find("EventIdentification")
    assert view_event is not None and view_event.get("EventActionCode") == "R"
    assert view_event.find("EventID").get("csd-code") == "110103"  # type: ignore[union-attr]
    participant = view.find("ActiveParticipant")
    assert participant is not None and participant.get("UserID") == "rita"
    assert participant.get("UserIsRequestor") == "true"
    objects = view.findall("ParticipantObjectIdentification")
    study = objects[0]
    assert study.get("ParticipantObjectID") == STUDY
    assert study.get("ParticipantObjectTypeCode") == "2"
    id_type = study.find("ParticipantObjectIDTypeCode")
    assert id_type is not None and id_type.get("csd-code") == "110180"
    assert study.find("Accession").get("Number") == "A1001"  # type: ignore[union-attr]
    assert objects[1].get("ParticipantObjectID") == "P001"  # the patient, by identifier only
    source = view.find("AuditSourceIdentification")
    assert source is not None and source.get("AuditSourceID") == "pacsflow"

    confirm_event = confirm.find("EventIdentification")
    assert confirm_event.find("EventID").get("csd-code") == "110111"  # type: ignore[union-attr]
    assert confirm_event.get("EventActionCode") == "U"  # type: ignore[union-attr]
    assert failed.find("EventIdentification").get("EventOutcomeIndicator") == "4"  # type: ignore[union-attr]
    assert approve.find("EventIdentification").find("EventID").get("csd-code") == "110100"  # type: ignore[union-attr]


class UdpCollector:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]

    def receive(self, count: int) -> list[bytes]:
        return [self.sock.recvfrom(65535)[0] for _ in range(count)]


class TcpCollector:
    """Accepts one connection and reads octet-counted frames (RFC 6587 3.4.1)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(10)
        self.port = self.server.getsockname()[1]
        self.data = b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            while chunk := conn.recv(65536):
                self.data += chunk

    def frames(self) -> list[bytes]:
        self.thread.join(timeout=10)
        frames, rest = [], self.data
        while rest:
            length, _, rest = rest.partition(b" ")
            frames.append(rest[: int(length)])
            rest = rest[int(length) :]
        return frames


def _check_syslog(frame: bytes) -> ET.Element:
    header, bom, msg = frame.partition(b"\xef\xbb\xbf")
    assert bom, "RFC 5424 MSG must start with a BOM"
    fields = header.decode("ascii").split(" ")
    assert fields[0] == "<85>1"  # facility 10 (authpriv) * 8 + severity 5 (notice), version 1
    assert fields[3] == "pacsflow" and fields[5] == "IHE+RFC-3881" and fields[6] == "-"
    return ET.fromstring(msg.decode("utf-8"))


def test_export_forwards_over_udp_syslog(
    settings: Settings, audit: AuditLog, tmp_path: Path
) -> None:
    collector = UdpCollector()
    out = tmp_path / "a.jsonl"
    code = run(
        settings, "audit", "export", "--out", str(out), "--syslog", f"127.0.0.1:{collector.port}"
    )
    assert code == 0
    messages = [_check_syslog(d) for d in collector.receive(5)]
    assert [m.tag for m in messages] == ["AuditMessage"] * 5


def test_export_forwards_over_tcp_syslog(
    settings: Settings, audit: AuditLog, tmp_path: Path
) -> None:
    collector = TcpCollector()
    code = run(
        settings,
        "audit",
        "export",
        "--format",
        "atna",
        "--out",
        str(tmp_path / "a.xml"),
        "--action",
        "result.",
        "--syslog",
        f"127.0.0.1:{collector.port}",
        "--syslog-transport",
        "tcp",
    )
    assert code == 0
    messages = [_check_syslog(f) for f in collector.frames()]
    ids = [m.find("ParticipantObjectIdentification").get("ParticipantObjectID") for m in messages]  # type: ignore[union-attr]
    assert ids == [STUDY, STUDY]


def test_syslog_endpoint_and_header_rules() -> None:
    assert parse_endpoint("[::1]:6514") == ("::1", 6514)
    with pytest.raises(InvalidInputError):
        parse_endpoint("collector")
    message = rfc5424_message("<x/>", hostname="host with space", procid=None)
    assert message.split(b" ")[2] == b"hostwithspace"


def test_syslog_collector_down_is_a_transient_error(
    settings: Settings, audit: AuditLog, tmp_path: Path
) -> None:
    with pytest.raises(PeerUnavailableError):
        run(
            settings,
            "audit",
            "export",
            "--out",
            str(tmp_path / "x.jsonl"),
            "--syslog",
            f"127.0.0.1:{free_port()}",
            "--syslog-transport",
            "tcp",
        )


# --- users ----------------------------------------------------------------------------------
def test_users_add_list_disable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    code = run(
        settings,
        "users",
        "add",
        "rita",
        "--role",
        "resident",
        "--department",
        "neuro",
        "--department",
        "stroke",
        "--password-stdin",
    )
    assert code == 0
    assert run(settings, "users", "add", "ris", "--role", "service", "--department", "*") == 0
    out = capsys.readouterr().out
    token = out.strip().splitlines()[-1]
    assert token.startswith("pfs_")

    assert run(settings, "users", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(u["username"], u["role"], u["departments"], u["disabled"]) for u in listed] == [
        ("ris", "service", ["*"], False),
        ("rita", "resident", ["neuro", "stroke"], False),
    ]
    store = UserStore(make_sessionmaker(make_engine(settings.database_url)))
    assert store.verify_password("rita", "correct horse battery").username == "rita"
    assert store.authenticate_api_token(token).username == "ris"

    assert run(settings, "users", "disable", "rita") == 0
    assert run(settings, "users", "list") == 0
    assert "disabled" in capsys.readouterr().out
    log = AuditLog(store.sessions)
    with log.sessions() as s:
        actions = s.execute(text("SELECT action, subject FROM audit_log ORDER BY id")).all()
    assert [tuple(a) for a in actions] == [
        ("user.add", "rita"),
        ("user.add", "ris"),
        ("user.token", "ris"),
        ("user.disable", "rita"),
    ]
    assert log.verify() == []


def test_users_add_refuses_short_password(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    with pytest.raises(InvalidInputError, match="at least 10"):
        run(settings, "users", "add", "rita", "--role", "resident", "--password-stdin")
