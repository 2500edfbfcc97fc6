from pathlib import Path

import pytest

from pacsflow.config import load_settings
from pacsflow.config.settings import masked_dump
from pacsflow.errors import ConfigError


def test_defaults_are_the_loopback_stack() -> None:
    s = load_settings()
    assert s.orthanc.host == "127.0.0.1"
    assert s.orthanc.dicomweb_url == "http://127.0.0.1:8042/dicom-web"
    assert s.database_url.startswith("sqlite:///")


def test_env_overrides_nested_field_with_underscores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACSFLOW_ORTHANC_HTTP_PORT", "9042")
    monkeypatch.setenv("PACSFLOW_GATEWAY_ALLOWED_AETS", '["CT1", "MR2"]')
    s = load_settings()
    assert s.orthanc.http_port == 9042
    assert s.gateway.allowed_aets == ["CT1", "MR2"]


def test_toml_file_then_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "pacsflow.toml"
    cfg.write_text('[orthanc]\nhttp_port = 9100\naet = "VNA"\n[triage]\ncritical_volume_ml = 2.5\n')
    monkeypatch.setenv("PACSFLOW_ORTHANC_HTTP_PORT", "9200")
    s = load_settings(cfg)
    assert s.orthanc.aet == "VNA"
    assert s.triage.critical_volume_ml == 2.5
    assert s.orthanc.http_port == 9200


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[orthanc]\nhttp_prot = 1\n")
    with pytest.raises(ConfigError, match="http_prot"):
        load_settings(cfg)


def test_dev_secrets_refused_in_production() -> None:
    with pytest.raises(ConfigError, match="development secrets"):
        load_settings(environment="production")
    s = load_settings(
        environment="production",
        orthanc={"password": "a-real-one"},
        gateway={"webhook_secret": "another-real-one"},
        web={"session_secret": "x" * 40},
    )
    assert s.environment == "production"


def test_masked_dump_hides_secrets() -> None:
    s = load_settings(orthanc={"password": "s3cret-value"})
    text = repr(masked_dump(s))
    assert "s3cret-value" not in text
    assert "**" in text


def test_settings_written_as_toml_load_back_identical(tmp_path: Path) -> None:
    from pacsflow.config.settings import write_settings

    s = load_settings(
        ris={"mllp_port": 2576},
        gateway={"stable_window_s": {"default": 2.0, "CT": 5.0}, "allowed_aets": ["CT1"]},
        notify={"endpoints": ["http://127.0.0.1:9/x"]},
    )
    path = write_settings(s, tmp_path / "p.toml")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_settings(path) == s
