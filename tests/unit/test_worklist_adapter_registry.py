"""Worklist adapters: the registry, configuration errors, templates and delivery rules."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings, load_settings
from pacsflow.config.settings import RisSettings, write_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import WorklistItem, Writeback
from pacsflow.domain import Finding, ModelRef, Priority
from pacsflow.errors import (
    ConfigError,
    InvalidInputError,
    PeerUnavailableError,
    PermanentError,
    TransientError,
)
from pacsflow.writeback.ledger import Ledger
from pacsflow.writeback.worklist_adapters import (
    ADAPTERS,
    Hl7PriorityAdapter,
    OrthancMetadataAdapter,
    PacsflowTableAdapter,
    RestWorklistAdapter,
    WorklistAdapter,
    WorklistUpdate,
    adapters_from_settings,
    deliver,
)

MODEL = ModelRef(name="ich-unet", version="3")
URL = "http://127.0.0.1:9/api/worklist/{accession_number}/priority"


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    upgrade(url)
    return make_sessionmaker(make_engine(url))


def _settings(tmp_path: Path, **worklist: Any) -> Settings:
    return load_settings(paths={"var_dir": tmp_path / "var"}, worklist=worklist)


def _item(priority: Priority = Priority.CRITICAL, **kw: Any) -> WorklistUpdate:
    values: dict[str, Any] = {
        "study_uid": "1.2.3.4",
        "accession_number": "ACC 1/2",
        "patient_id": "PAT1",
        "priority": priority,
        "summary": "Hemorrhage 12 mL, left",
        "model": MODEL,
    }
    return WorklistUpdate(**{**values, **kw})


# -- registry -----------------------------------------------------------------------------------
def test_default_adapters_are_table_metadata_and_hl7_in_order(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    adapters = adapters_from_settings(_settings(tmp_path), sessions)
    assert [a.name for a in adapters] == ["pacsflow", "orthanc", "hl7"]
    assert [type(a) for a in adapters] == [
        PacsflowTableAdapter,
        OrthancMetadataAdapter,
        Hl7PriorityAdapter,
    ]
    assert all(isinstance(a, WorklistAdapter) for a in adapters)
    # Messages go through the ledger; the table and the metadata are upserts.
    assert [a.ledger_target for a in adapters] == [None, None, "ris-priority"]


def test_rest_adapter_is_built_from_its_settings(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    settings = _settings(tmp_path, adapters=["pacsflow", "rest"], rest_url=URL)
    adapters = adapters_from_settings(settings, sessions)
    assert [a.name for a in adapters] == ["pacsflow", "rest"]
    assert isinstance(adapters[1], RestWorklistAdapter)
    assert adapters[1].ledger_target == "worklist-rest"


def test_adapter_list_from_the_environment(
    tmp_path: Path, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACSFLOW_WORKLIST_ADAPTERS", '["rest", "pacsflow"]')
    monkeypatch.setenv("PACSFLOW_WORKLIST_REST_URL", URL)
    settings = load_settings(paths={"var_dir": tmp_path})
    assert [a.name for a in adapters_from_settings(settings, sessions)] == ["rest", "pacsflow"]


def test_unknown_adapter_names_the_known_ones(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    with pytest.raises(ConfigError) as raised:
        adapters_from_settings(_settings(tmp_path, adapters=["pacsflow", "sectra"]), sessions)
    message = str(raised.value)
    assert "worklist.adapters" in message and "'sectra'" in message
    assert "known: hl7, orthanc, pacsflow, rest" in message


def test_an_adapter_listed_twice_is_refused(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    with pytest.raises(ConfigError, match="'hl7' is listed twice"):
        adapters_from_settings(_settings(tmp_path, adapters=["hl7", "pacsflow", "hl7"]), sessions)


def test_rest_without_url_says_which_setting_is_missing(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    with pytest.raises(ConfigError) as raised:
        adapters_from_settings(_settings(tmp_path, adapters=["rest"]), sessions)
    assert "worklist.rest_url is not set" in str(raised.value)
    assert "PACSFLOW_WORKLIST_REST_URL" in str(raised.value)


def test_a_factory_that_builds_no_adapter_is_refused(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    registry = {**ADAPTERS, "broken": lambda _s, _sessions: object()}
    settings = _settings(tmp_path, adapters=["broken"])
    with pytest.raises(ConfigError, match="does not implement WorklistAdapter"):
        adapters_from_settings(settings, sessions, registry)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"url": "http://h/{accesion_number}"}, "unknown placeholder {accesion_number}"),
        ({"url": "http://h/{study_uid.__class__}"}, "unknown placeholder"),
        ({"url": "http://h/{study_uid[0]}"}, "unknown placeholder"),
        ({"url": "http://h/{study_uid!r}"}, "may not carry a format"),
        ({"url": "http://h/{study_uid:>10}"}, "may not carry a format"),
        ({"url": "http://h/{study_uid"}, "not a valid template"),
        ({"url": "ftp://h/{study_uid}"}, "must be an http(s) URL"),
        ({"url": URL, "method": "DELETE"}, "rest_method must be POST, PUT or PATCH"),
        ({"url": URL, "body": {"a": {"b": ["{nope}"]}}}, "worklist.rest_body.a.b[0]"),
        ({"url": URL, "priority_map": {"stat": "S"}}, "unknown pacsflow priority 'stat'"),
    ],
)
def test_rest_configuration_errors_are_precise(options: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RestWorklistAdapter(**options)
    assert expected in str(raised.value)


def test_settings_refuse_an_unknown_worklist_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rest_adress"):
        _settings(tmp_path, rest_adress="http://x")


def test_worklist_settings_survive_the_toml_file_with_the_token(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        adapters=["pacsflow", "rest"],
        rest_url=URL,
        rest_token="vendor-token-123",
        rest_headers={"X-Site": "north"},
        rest_body={"priority": "{vendor_priority}", "flags": ["ai", "{pathway}"], "n": 1},
    )
    loaded = load_settings(write_settings(settings, tmp_path / "s.toml"))
    assert loaded == settings
    assert loaded.worklist.rest_token is not None
    assert loaded.worklist.rest_token.get_secret_value() == "vendor-token-123"


# -- REST templates -----------------------------------------------------------------------------
def test_rest_request_renders_url_body_and_priority_map() -> None:
    adapter = RestWorklistAdapter(
        url=URL,
        body={
            "accession": "{accession_number}",
            "priority": "{vendor_priority}",
            "note": "AI ({algorithm}): {summary}",
            "tags": ["{pathway}", 7, True],
            "literal": "{{not a placeholder}}",
        },
        priority_map={"critical": "STAT"},
    )
    url, body = adapter.request(_item())
    assert url == "http://127.0.0.1:9/api/worklist/ACC%201%2F2/priority"  # percent-encoded
    assert body == {
        "accession": "ACC 1/2",  # the body carries the value as is
        "priority": "STAT",
        "note": "AI (ich-unet 3): Hemorrhage 12 mL, left",
        "tags": ["stroke_triage", 7, True],
        "literal": "{not a placeholder}",
    }


def test_rest_sends_only_mapped_priorities() -> None:
    adapter = RestWorklistAdapter(url=URL, priority_map={"critical": "STAT", "urgent": "HIGH"})
    assert adapter.skip_reason(_item(Priority.CRITICAL)) is None
    assert adapter.skip_reason(_item(Priority.URGENT)) is None
    reason = adapter.skip_reason(_item(Priority.ROUTINE))
    assert reason is not None and "rest_priority_map" in reason


def test_rest_bearer_token_goes_into_the_headers() -> None:
    adapter = RestWorklistAdapter(url=URL, headers={"X-Site": "north"}, token="t0k")
    assert adapter.headers == {"X-Site": "north", "Authorization": "Bearer t0k"}


# -- HL7 adapter --------------------------------------------------------------------------------
def test_hl7_adapter_sends_critical_and_urgent_only_and_needs_a_ris() -> None:
    with_ris = Hl7PriorityAdapter(RisSettings(mllp_port=2575))
    assert with_ris.skip_reason(_item(Priority.CRITICAL)) is None
    assert with_ris.skip_reason(_item(Priority.URGENT)) is None
    assert "not sent to the RIS" in (with_ris.skip_reason(_item(Priority.ROUTINE)) or "")
    assert "no RIS" in (Hl7PriorityAdapter(RisSettings()).skip_reason(_item()) or "")


def test_hl7_adapter_keeps_the_msh10_of_earlier_releases() -> None:
    """A retry across an upgrade must resend the same MSH-10 for the RIS to spot it."""
    from pacsflow.writeback.worklist_adapters import control_id

    key = f"ris-priority:1.2.3.4:{MODEL.name}:{MODEL.version}"
    assert control_id(key) == hashlib.sha1(key.encode()).hexdigest()[:20].upper()


# -- delivery -----------------------------------------------------------------------------------
class Recording:
    """A WorklistAdapter of this test: records calls, fails as told."""

    def __init__(
        self, name: str, ledger_target: str | None = None, fail: Exception | None = None
    ) -> None:
        self.name = name
        self.ledger_target = ledger_target
        self.fail = fail
        self.calls = 0

    def skip_reason(self, item: WorklistUpdate) -> str | None:
        return "not for me" if item.priority == Priority.NOT_ANALYSED else None

    def set_priority(self, item: WorklistUpdate) -> dict[str, str]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return {self.name: item.priority.value}


def test_deliver_merges_receipts_and_sends_ledgered_adapters_once(
    sessions: sessionmaker[Session],
) -> None:
    ledger = Ledger(sessions)
    upsert, message = Recording("table"), Recording("vendor", ledger_target="worklist-vendor")
    for _ in range(2):
        assert deliver([upsert, message], _item(), ledger) == {
            "table": "critical",
            "vendor": "critical",
        }
    assert (upsert.calls, message.calls) == (2, 1)
    with sessions() as session:
        rows = session.query(Writeback).all()
    assert [(r.target, r.key) for r in rows] == [
        ("worklist-vendor", "worklist-vendor:1.2.3.4:ich-unet:3")
    ]


def test_deliver_skips_what_an_adapter_does_not_take(sessions: sessionmaker[Session]) -> None:
    adapter = Recording("vendor", ledger_target="worklist-vendor")
    assert deliver([adapter], _item(Priority.NOT_ANALYSED), Ledger(sessions)) == {}
    assert adapter.calls == 0
    with sessions() as session:
        assert session.query(Writeback).count() == 0


def test_a_transient_failure_wins_and_every_adapter_is_still_tried(
    sessions: sessionmaker[Session],
) -> None:
    refused = Recording("archive", fail=InvalidInputError("study not in the archive"))
    down = Recording("vendor", "worklist-vendor", fail=PeerUnavailableError("vendor down"))
    after = Recording("table")
    with pytest.raises(TransientError) as raised:
        deliver([refused, down, after], _item(), Ledger(sessions))
    assert "archive: study not in the archive" in str(raised.value)
    assert "vendor: vendor down" in str(raised.value)
    assert after.calls == 1  # tried although two earlier adapters failed
    assert isinstance(raised.value.__cause__, PeerUnavailableError)
    with sessions() as session:  # the failed send released its claim: a retry sends it
        assert session.query(Writeback).count() == 0


def test_only_permanent_failures_raise_permanent(sessions: sessionmaker[Session]) -> None:
    refused = Recording("vendor", "worklist-vendor", fail=InvalidInputError("HTTP 400"))
    with pytest.raises(PermanentError, match="worklist update refused"):
        deliver([refused], _item(), Ledger(sessions))


def test_table_adapter_upserts_the_worklist_row(sessions: sessionmaker[Session]) -> None:
    adapter = PacsflowTableAdapter(sessions)
    finding = Finding(kind="hemorrhage", probability=0.9, volume_ml=12.0)
    assert adapter.set_priority(_item(Priority.URGENT, findings=[finding])) == {
        "worklist": "urgent"
    }
    assert adapter.set_priority(_item(Priority.CRITICAL, findings=[finding])) == {
        "worklist": "critical"
    }
    with sessions() as session:
        rows = session.query(WorklistItem).all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.priority, row.accession_number, row.pathway) == (
        "critical",
        "ACC 1/2",
        "stroke_triage",
    )
    assert row.findings[0]["volume_ml"] == 12.0
    assert (row.model_name, row.model_version) == ("ich-unet", "3")
