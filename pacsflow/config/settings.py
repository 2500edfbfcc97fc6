"""The settings tree.

One pydantic model per group, combined in `Settings`. Values come, strongest first, from
keyword arguments, `PACSFLOW_<GROUP>_<NAME>` environment variables, one TOML file, and the
defaults here, which are the embedded one-machine stack on loopback. Nothing reads settings
at import time: callers build a `Settings` and pass it down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pacsflow.errors import ConfigError

# Development secrets: fine on loopback, refused when environment != "development".
_DEV_SECRETS = {"pacsflow-dev", "change-me", "pacsflow-dev-session-secret-change-me-0123456789"}


class _Group(BaseModel):
    """A settings group: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class PathsSettings(_Group):
    var_dir: Path = Field(Path("var"), description="State directory of every embedded service")

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"


class OrthancSettings(_Group):
    host: str = "127.0.0.1"
    http_port: int = 8042
    dicom_port: int = 4242
    aet: str = "ORTHANC"
    username: str = "pacsflow"
    password: SecretStr = SecretStr("pacsflow-dev")
    stable_age_s: int = Field(5, description="Seconds without new instances before StableStudy")
    binary: str = "Orthanc"
    dicomweb_plugin: Path = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
    url: str | None = Field(None, description="External archive base URL; unset = embedded")

    @property
    def base_url(self) -> str:
        return self.url or f"http://{self.host}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.base_url}/dicom-web"


class PrefectSettings(_Group):
    host: str = "127.0.0.1"
    port: int = 4200
    api_url: str | None = Field(None, description="External Prefect API; unset = embedded")
    database_url: str | None = Field(
        None,
        description="Database of the embedded Prefect server, an async SQLAlchemy URL "
        "(postgresql+asyncpg://user@host/db); unset = SQLite under var_dir",
    )

    @field_validator("database_url", mode="after")
    @classmethod
    def _async_driver(cls, url: str | None) -> str | None:
        # Prefect's server only runs on async drivers; a plain postgresql:// URL would
        # fail later, inside the server's start-up.
        if url is not None and not url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite:")):
            raise ValueError(
                "prefect.database_url must start with postgresql+asyncpg:// "
                f"or sqlite+aiosqlite:, got scheme {url.partition(':')[0]!r}"
            )
        return url

    @property
    def ui_url(self) -> str:
        return (
            self.api_url.removesuffix("/api") if self.api_url else f"http://{self.host}:{self.port}"
        )

    @property
    def effective_api_url(self) -> str:
        return self.api_url or f"http://{self.host}:{self.port}/api"


class MlflowSettings(_Group):
    host: str = "127.0.0.1"
    port: int = 5000
    tracking_uri: str | None = Field(None, description="Unset = SQLite under var_dir")
    ui: bool = Field(True, description="Start the MLflow UI with `stack up`")


class DatabaseSettings(_Group):
    url: str | None = Field(None, description="SQLAlchemy URL; unset = SQLite under var_dir")


class GatewaySettings(_Group):
    host: str = "127.0.0.1"
    aet: str = "PACSFLOW"
    dicom_port: int = 11112
    mllp_port: int = 2575
    http_port: int = 8080
    allowed_aets: list[str] = Field(default_factory=list, description="Empty = accept any AE")
    webhook_secret: SecretStr = SecretStr("pacsflow-dev")
    webhook_replay_window_s: int = 300
    stable_window_s: dict[str, float] = Field(
        default_factory=lambda: {"default": 5.0},
        description="Seconds after the last instance before a study closes, per modality",
    )
    dispatch_max_attempts: int = Field(
        60, description="Tries before an outbox row is dead (back-off capped at 5 min)"
    )
    vna_change_feed: bool = Field(
        False, description="Also trigger on the archive's StableStudy changes (Orthanc)"
    )
    routes_file: Path | None = None
    dicom_peers: dict[str, str] = Field(
        default_factory=dict,
        description='DICOM peers by AE title, {"CT1" = "10.0.0.5:104"}: where Storage '
        "Commitment results (N-EVENT-REPORT) are sent",
    )
    commitment_report_attempts: int = Field(
        3, ge=1, description="Tries to deliver one Storage Commitment result to its peer"
    )
    spool_retention_days: float = Field(
        7.0,
        ge=0,
        description="Days a study's spool files are kept after its last activity (close, "
        "triggers, outcomes) once every pathway has its outcome; 0 = kept forever. The "
        "gateway prunes hourly; `pacsflow spool prune` on demand",
    )

    @model_validator(mode="after")
    def _peers_are_host_port(self) -> GatewaySettings:
        for aet, address in self.dicom_peers.items():
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f'gateway.dicom_peers[{aet!r}] = {address!r}: expected "host:port"'
                )
        return self

    def dicom_peer(self, aet: str) -> tuple[str, int] | None:
        """(host, port) of a known DICOM peer, None if the AE title is not configured."""
        address = self.dicom_peers.get(aet)
        if address is None:
            return None
        host, _, port = address.rpartition(":")
        return host.strip("[]"), int(port)


class RisSettings(_Group):
    mllp_host: str = "127.0.0.1"
    mllp_port: int | None = Field(None, description="RIS MLLP port; unset = ORU not sent")
    timeout_s: float = 10.0
    sending_facility: str = "PACSFLOW"
    receiving_application: str = "RIS"


class EhrSettings(_Group):
    fhir_base_url: str | None = Field(None, description="FHIR R4 base; unset = not sent")
    timeout_s: float = 10.0
    patient_id_system: str | None = Field(
        None,
        description="Patient.identifier system of the archive's PatientID (the MRN); "
        "unset = match the value in any system",
    )


class NotifySettings(_Group):
    endpoints: list[str] = Field(default_factory=list, description="URLs POSTed on critical")
    case_link_base: str = "http://127.0.0.1:8080/cases"


class WorklistSettings(_Group):
    """Where a pathway's worklist priority goes: adapters by name, in order
    (pacsflow.writeback.worklist_adapters). The `rest_*` keys configure the "rest" adapter,
    a vendor worklist REST API: URL and body are templates with {placeholders}."""

    adapters: list[str] = Field(
        default_factory=lambda: ["pacsflow", "orthanc", "hl7"],
        description="In order: pacsflow (table), orthanc (study metadata), hl7 (RIS), rest",
    )
    rest_url: str | None = Field(
        None, description="e.g. https://ris.example/api/worklist/{accession_number}/priority"
    )
    rest_method: Literal["POST", "PUT", "PATCH"] = "PUT"
    rest_body: dict[str, Any] = Field(
        default_factory=lambda: {
            "accessionNumber": "{accession_number}",
            "studyInstanceUid": "{study_uid}",
            "priority": "{vendor_priority}",
            "comment": "{summary}",
            "source": "{algorithm}",
        },
        description="JSON body; string values may hold {placeholders}",
    )
    rest_priority_map: dict[str, str] = Field(
        default_factory=lambda: {"critical": "STAT", "urgent": "HIGH"},
        description="pacsflow priority -> vendor value; priorities not listed are not sent",
    )
    rest_headers: dict[str, str] = Field(default_factory=dict)
    rest_token: SecretStr | None = Field(None, description="Sent as 'Authorization: Bearer'")
    rest_timeout_s: float = Field(10.0, gt=0)


class PriorsSettings(_Group):
    """Prior studies of a pathway: prefetched when the order arrives before the images
    (pacsflow.gateway.prefetch), else queried from the archive at run time."""

    prefetch: bool = Field(True, description="Prefetch priors when an HL7 order arrives")
    max_age_s: float = Field(
        6 * 3600.0, gt=0, description="Prefetched priors older than this are queried again"
    )
    max_studies: int = Field(20, ge=1, description="Newest priors kept per study")


class TriageSettings(_Group):
    critical_probability: float = 0.8
    uncertain_low: float = 0.35
    critical_volume_ml: float = 1.0
    urgent_volume_ml: float = 0.1
    shadow_live: bool = Field(
        False,
        description="Also read each live study with the challenger model, if one exists, "
        "after the writebacks (stored as a shadow reading; nothing is written back)",
    )


class WebSettings(_Group):
    """The clinical web UI and API: served by the gateway process on gateway.http_port, and
    alone by `pacsflow web` on web.host:web.port (the api image)."""

    host: str = Field("127.0.0.1", description="Listen address of `pacsflow web`")
    port: int = Field(8081, ge=1, le=65535, description="Listen port of `pacsflow web`")
    session_secret: SecretStr = SecretStr("pacsflow-dev-session-secret-change-me-0123456789")
    session_ttl_s: int = 8 * 3600
    policy_file: Path | None = Field(None, description="RBAC policy TOML; unset = shipped")
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_role_claim: str = "roles"
    oidc_departments_claim: str = "departments"
    oidc_username_claim: str = "preferred_username"


class DriftSettings(_Group):
    """Drift monitoring of inference inputs and outputs against a reference profile
    (pacsflow.governance.drift); past a threshold the drift check alerts."""

    window_studies: int = Field(100, ge=1, description="Most recent inference records compared")
    min_studies: int = Field(30, ge=1, description="Fewer records: no verdict, no alert")
    bins: int = Field(10, ge=2, description="PSI bins (reference quantiles) of numeric features")
    psi_alert: float = Field(0.25, gt=0, description="Population stability index that alerts")
    ks_alpha: float = Field(
        1e-4, gt=0, lt=1, description="KS p-value below which a numeric feature (with PSI) alerts"
    )
    validation_failure_increase: float = Field(
        0.05, gt=0, description="Rise of the not-analysed rate over the reference that alerts"
    )
    latency_p95_ratio: float = Field(
        2.0, gt=1, description="Inference latency p95 above this multiple of the reference alerts"
    )
    reports_dir: Path | None = Field(
        None, description="HTML/JSON reports; unset = var_dir/reports/drift"
    )


class SweepsSettings(_Group):
    """Retrospective archive sweeps (pacsflow.pathways.sweep): QIDO paging, the checkpoint
    that lets a sweep resume, and how many pathway runs a sweep keeps in flight."""

    checkpoint_dir: Path | None = Field(
        None, description="Sweep checkpoints and cohort ledgers; unset = var_dir/sweeps"
    )
    page_size: int = Field(100, ge=1, le=10_000, description="QIDO-RS limit per page")
    window_days: int = Field(1, ge=1, le=366, description="StudyDate days per QIDO window")
    max_in_flight: int = Field(
        1, ge=1, description="Pathway runs a sweep has queued or running at once"
    )
    poll_s: float = Field(2.0, gt=0, description="Seconds between checks of in-flight runs")


class ScreeningSettings(_Group):
    """The screening cohort flow: USPSTF lung cancer and AAA screening outreach."""

    create_task: bool = Field(True, description="Add a coordinator Task to each outreach Flag")
    overdue_weeks_threshold: int = Field(
        1, ge=0, description="Enrolled patients at least this many weeks late are listed"
    )
    lookback_days: int = Field(
        1095, ge=1, description="First run of the nightly sweep: chest CTs of these many days"
    )
    ehr_concurrency: int = Field(4, ge=1, description="Patients read from the EHR at once")
    reports_dir: Path | None = Field(
        None, description="Coordinator reports; unset = var_dir/reports/screening"
    )


class RateLimitSettings(_Group):
    """Per-client token buckets on the HTTP listeners (pacsflow.gateway.rate_limit): past the
    rate a request is answered 429 with Retry-After. Counted per process, in memory; /health
    is never limited. A client is its bearer token on the API, its address on the webhook."""

    enabled: bool = True
    webhook_per_minute: float = Field(
        6000.0, gt=0, description="Sustained requests a minute per client on POST /hooks/..."
    )
    api_per_minute: float = Field(
        6000.0, gt=0, description="Sustained requests a minute per client on /api/..."
    )
    burst: int = Field(2000, ge=1, description="Requests a client may send at once (bucket size)")


# Where each pathway runs when workers.routes does not say: inference on the GPU pool,
# the database- and network-bound flows on the CPU pool.
DEFAULT_WORKER_ROUTES: dict[str, str] = {
    "stroke_triage": "gpu",
    "nodule_followup": "gpu",
    "drift_monitor": "cpu",
    "screening_cohort": "cpu",
    "archive_sweep": "cpu",
}
WORKER_POOLS = ("cpu", "gpu")


class WorkersSettings(_Group):
    """The warm flow runners (deployments.serve) and the work pools their runs go to.

    Each pathway's deployment is registered in one Prefect work pool, "cpu" or "gpu"; a
    runner claims only the runs of the pools it serves. `pacsflow stack up` starts `count`
    runners serving every pool and `gpu_count` more serving only the gpu pool."""

    count: int = Field(1, ge=0, description="Runner processes serving every pool (local stack)")
    gpu_count: int = Field(0, ge=0, description="More runner processes serving only the gpu pool")
    concurrency: int = Field(2, ge=1, description="Flow runs at once per runner process")
    routes: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_WORKER_ROUTES),
        description='Pathway -> pool, "cpu" or "gpu"; merged over the defaults (inference '
        "pathways on gpu, the others on cpu); a pathway not listed runs on cpu",
    )

    @field_validator("routes", mode="after")
    @classmethod
    def _routes_over_defaults(cls, routes: dict[str, str]) -> dict[str, str]:
        unknown = {p: pool for p, pool in routes.items() if pool not in WORKER_POOLS}
        if unknown:
            raise ValueError(
                f"workers.routes: pools must be one of {list(WORKER_POOLS)}: {unknown}"
            )
        return {**DEFAULT_WORKER_ROUTES, **routes}

    @model_validator(mode="after")
    def _at_least_one_runner(self) -> WorkersSettings:
        if self.count + self.gpu_count < 1:
            raise ValueError("workers.count + workers.gpu_count must be at least 1")
        return self

    def pool_of(self, pathway: str) -> str:
        """The work pool a pathway's runs go to."""
        return self.routes.get(pathway, "cpu")


class TlsSettings(_Group):
    """TLS on the gateway's listeners (TLS 1.2 or later, PS3.15 B.9). One identity,
    cert_file + key_file, for every listener, also presented when pacsflow connects out."""

    cert_file: Path | None = Field(None, description="PEM certificate (chain) pacsflow presents")
    key_file: Path | None = Field(None, description="PEM private key of cert_file, unencrypted")
    ca_file: Path | None = Field(
        None, description="PEM CA certificates trusted for peers; unset = the system store"
    )
    require_client_cert: bool = Field(
        False, description="Listeners refuse clients without a certificate signed by ca_file"
    )
    dicom: bool = Field(False, description="TLS on gateway.dicom_port (DICOM SCP)")
    mllp: bool = Field(False, description="TLS on gateway.mllp_port (HL7 MLLP)")
    http: bool = Field(False, description="HTTPS on gateway.http_port (webhook, web UI, API)")
    dicom_outbound: bool = Field(
        False, description="TLS on associations pacsflow opens (Storage Commitment reports)"
    )

    @model_validator(mode="after")
    def _identity_when_enabled(self) -> TlsSettings:
        enabled = [name for name in ("dicom", "mllp", "http") if getattr(self, name)]
        if enabled and (self.cert_file is None or self.key_file is None):
            raise ValueError(f"tls.cert_file and tls.key_file are required for TLS on {enabled}")
        if self.require_client_cert and self.ca_file is None:
            raise ValueError("tls.require_client_cert needs tls.ca_file")
        return self


class Settings(BaseSettings):
    """The whole configuration. Build it with `load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="PACSFLOW_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
    )

    environment: Literal["development", "production"] = "development"
    paths: PathsSettings = PathsSettings()
    orthanc: OrthancSettings = OrthancSettings()
    prefect: PrefectSettings = PrefectSettings()
    mlflow: MlflowSettings = MlflowSettings()
    database: DatabaseSettings = DatabaseSettings()
    gateway: GatewaySettings = GatewaySettings()
    ris: RisSettings = RisSettings()
    ehr: EhrSettings = EhrSettings()
    notify: NotifySettings = NotifySettings()
    triage: TriageSettings = TriageSettings()
    web: WebSettings = WebSettings()
    tls: TlsSettings = TlsSettings()
    worklist: WorklistSettings = WorklistSettings()
    priors: PriorsSettings = PriorsSettings()
    drift: DriftSettings = DriftSettings()
    sweeps: SweepsSettings = SweepsSettings()
    screening: ScreeningSettings = ScreeningSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    workers: WorkersSettings = WorkersSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = os.environ.get("PACSFLOW_CONFIG_FILE")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_file)))
        return tuple(sources)

    @model_validator(mode="after")
    def _refuse_dev_secrets_outside_development(self) -> Settings:
        if self.environment == "development":
            return self
        weak = [
            name
            for name, secret in (
                ("orthanc.password", self.orthanc.password),
                ("gateway.webhook_secret", self.gateway.webhook_secret),
                ("web.session_secret", self.web.session_secret),
            )
            if secret.get_secret_value() in _DEV_SECRETS
        ]
        if weak:
            raise ValueError(f"development secrets are not allowed in production: {weak}")
        return self

    # Derived locations of the embedded services' state.
    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.paths.var_dir / 'pacsflow.db').resolve()}"

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{(self.paths.var_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifact_root(self) -> Path:
        return (self.paths.var_dir / "mlflow" / "artifacts").resolve()

    @property
    def spool_dir(self) -> Path:
        return self.paths.var_dir / "spool"

    @property
    def quarantine_dir(self) -> Path:
        return self.paths.var_dir / "quarantine"

    @property
    def sweep_checkpoint_dir(self) -> Path:
        return self.sweeps.checkpoint_dir or self.paths.var_dir / "sweeps"

    @property
    def gateway_url(self) -> str:
        """Base URL of the gateway's HTTP port (https when tls.http is on)."""
        g = self.gateway
        return f"{'https' if self.tls.http else 'http'}://{g.host}:{g.http_port}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, an optional TOML file, the environment and overrides."""
    previous = os.environ.get("PACSFLOW_CONFIG_FILE")
    try:
        if config_file is not None:
            if not config_file.is_file():
                raise ConfigError(f"config file not found: {config_file}")
            os.environ["PACSFLOW_CONFIG_FILE"] = str(config_file)
        return Settings(**overrides)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from exc
    finally:
        if config_file is not None:
            if previous is None:
                os.environ.pop("PACSFLOW_CONFIG_FILE", None)
            else:
                os.environ["PACSFLOW_CONFIG_FILE"] = previous


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, every secret replaced by '********'."""
    data = settings.model_dump(mode="json")  # SecretStr dumps as '**********'
    data["derived"] = {
        "database_url": settings.database_url,
        "mlflow_tracking_uri": settings.mlflow_tracking_uri,
        "orthanc_dicomweb_url": settings.orthanc.dicomweb_url,
        "prefect_api_url": settings.prefect.effective_api_url,
        "prefect_ui_url": settings.prefect.ui_url,
    }
    return data


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def settings_to_toml(settings: Settings) -> str:
    """The settings as a TOML file (secrets in clear: write it with private permissions).

    Used to hand one configuration to every process of a stack started for a demo or a test.
    """
    data = settings.model_dump(mode="json")
    data["orthanc"]["password"] = settings.orthanc.password.get_secret_value()
    data["gateway"]["webhook_secret"] = settings.gateway.webhook_secret.get_secret_value()
    data["web"]["session_secret"] = settings.web.session_secret.get_secret_value()
    if settings.worklist.rest_token is not None:
        data["worklist"]["rest_token"] = settings.worklist.rest_token.get_secret_value()
    lines = [f"environment = {_toml_value(data.pop('environment'))}", ""]
    for group, values in data.items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def write_settings(settings: Settings, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(settings_to_toml(settings))
    path.chmod(0o600)
    return path
