"""The deployment files under infra/ (compose, Kubernetes, Dockerfiles) parse and keep their
promises: every long-running service has an image and a health check, no secret value is
committed, and every PACSFLOW_<GROUP>_<NAME> they set exists in the settings tree."""

from __future__ import annotations

import importlib.util
import json
import re
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pacsflow.config.settings import Settings, load_settings

yaml = pytest.importorskip(
    "yaml", reason="PyYAML is not installed (it comes with prefect/mlflow); infra files unchecked"
)

INFRA = Path(__file__).resolve().parents[2] / "infra"
COMPOSE = INFRA / "compose"
K8S = INFRA / "k8s"
DOCKER = INFRA / "docker"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
# Names whose value is a secret: a password, a secret, a token or a key.
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY$)", re.IGNORECASE)
# A value that only refers to a secret held elsewhere: ${VAR}, ${VAR:?msg}, $${VAR}, $(VAR).
REFERENCE = re.compile(
    r"^\$?\$(\{[A-Za-z_][A-Za-z0-9_]*(:?[?-][^}]*)?\}|\([A-Za-z_][A-Za-z0-9_]*\))$"
)
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@\"']+:([^@\s\"']+)@", re.IGNORECASE)


def _yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in {".yml", ".yaml"})


def _documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _compose() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())


def _k8s_objects() -> list[dict[str, Any]]:
    """The Kubernetes objects of every manifest (the kustomization is not one)."""
    manifests = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    return [d for p in manifests for d in _documents(p)]


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["spec"]["template"]["spec"]["containers"])


def _env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def _is_reference(value: str) -> bool:
    return value == "" or REFERENCE.match(value) is not None


def setting_exists(name: str) -> bool:
    """Whether PACSFLOW_<GROUP>_<NAME> (or PACSFLOW_<FIELD>) names a field of Settings,
    split as the settings do (env_nested_delimiter "_", one split)."""
    rest = name.removeprefix("PACSFLOW_").lower()
    if rest == "config_file":  # read by Settings.settings_customise_sources
        return True
    if rest == "environment":  # the one top-level field that is not a group
        return True
    fields = Settings.model_fields
    group, _, key = rest.partition("_")
    annotation = fields[group].annotation if group in fields else None
    return key in getattr(annotation, "model_fields", {})


def _pacsflow_env_names() -> set[str]:
    """Every PACSFLOW_* variable the infra files set (structured, not a text grep: AE
    titles such as PACSFLOW_API are values, not variable names)."""
    names: set[str] = set()
    for service in _compose()["services"].values():
        names |= set(service.get("environment", {}))
    for obj in _k8s_objects():
        if obj["kind"] in WORKLOADS:
            for container in _containers(obj):
                names |= {e["name"] for e in container.get("env", [])}
        elif obj["kind"] in {"ConfigMap", "Secret"}:
            names |= {k for k in obj.get("data", {}) | obj.get("stringData", {}) if k.isupper()}
    names |= set(_env_file(COMPOSE / ".env.example"))
    names |= set(re.findall(r"\b(PACSFLOW_[A-Z0-9_]+)=", (DOCKER / "Dockerfile").read_text()))
    return {n for n in names if n.startswith("PACSFLOW_")}


# --- parsing --------------------------------------------------------------------------


def test_every_yaml_file_parses() -> None:
    files = _yaml_files()
    assert {p.name for p in files} >= {"docker-compose.yml", "kustomization.yaml"}
    for path in files:
        assert _documents(path), f"{path} holds no YAML document"


def test_the_json_and_toml_files_parse() -> None:
    json.loads((COMPOSE / "orthanc.json").read_text())
    tomllib.loads((COMPOSE / "pacsflow.toml").read_text())


# --- compose ----------------------------------------------------------------------------


def test_every_compose_service_has_an_image_and_a_healthcheck() -> None:
    services = _compose()["services"]
    assert {"postgres", "orthanc", "prefect", "mlflow", "gateway", "api"} <= set(services)
    for name, service in services.items():
        assert service.get("image"), f"compose service {name} has no image"
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"compose service {name}: healthcheck"


def test_compose_runs_two_cpu_workers_and_an_optional_gpu_worker() -> None:
    services = _compose()["services"]
    cpu = [s for s in services.values() if s["image"].startswith("pacsflow/worker-cpu:")]
    assert len(cpu) == 2
    # Distinct fixed hostnames: a restarted runner recovers the runs of its own host only.
    assert len({s["hostname"] for s in cpu}) == 2
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert gpu["build"]["args"]["RUNTIME"] == "runtime-gpu"


def test_compose_publishes_ports_on_loopback_by_default() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("${BIND_ADDRESS:-127.0.0.1}:"), f"{name}: {port}"
    assert _env_file(COMPOSE / ".env.example")["BIND_ADDRESS"] == "127.0.0.1"


def test_compose_backends_are_on_postgresql() -> None:
    services = _compose()["services"]
    assert services["prefect"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://prefect:"
    )
    assert "postgresql+psycopg2://mlflow:" in " ".join(services["mlflow"]["command"])
    assert services["gateway"]["environment"]["PACSFLOW_DATABASE_URL"].startswith(
        "postgresql+psycopg2://pacsflow:"
    )
    orthanc = json.loads((COMPOSE / "orthanc.json").read_text())
    assert orthanc["PostgreSQL"]["EnableIndex"] is True
    assert orthanc["DicomWeb"]["Enable"] is True
    init = (COMPOSE / "postgres" / "init-databases.sh").read_text()
    for database in ("pacsflow", "prefect", "mlflow", "orthanc"):
        assert re.search(rf"^create {database} ", init, re.MULTILINE), database


def _compose_pools(command: list[str]) -> list[str]:
    """The pools of a `pacsflow serve --pool X` command, compose's ${VAR:-default} resolved
    to its default."""
    from pacsflow.cli.serve_cmd import pool_list

    assert command[:3] == ["pacsflow", "serve", "--pool"], command
    value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", command[3])
    return pool_list(value)


def test_compose_workers_serve_their_work_pools_and_the_api_runs_web_only() -> None:
    services = _compose()["services"]
    assert _compose_pools(services["worker-gpu"]["command"]) == ["gpu"]
    for name in ("worker-cpu-1", "worker-cpu-2"):
        # Both pools unless .env says cpu: without the gpu profile nobody else serves gpu.
        assert _compose_pools(services[name]["command"]) == ["cpu", "gpu"], name
    assert "CPU_WORKER_POOLS" in services["worker-cpu-1"]["command"][3]
    assert _env_file(COMPOSE / ".env.example")["CPU_WORKER_POOLS"] == "cpu,gpu"
    api = services["api"]
    assert api["command"] == ["pacsflow", "web"]
    assert api["environment"]["PACSFLOW_WEB_HOST"] == "0.0.0.0"
    assert api["ports"] == [
        "${BIND_ADDRESS:-127.0.0.1}:8081:" + api["environment"]["PACSFLOW_WEB_PORT"]
    ]


# --- Kubernetes -------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_but_the_secret_placeholders() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == manifests - {"secrets.example.yaml"}
    for name in listed:
        assert (K8S / name).is_file(), name


def test_every_k8s_workload_has_images_probes_resources_and_runs_non_root() -> None:
    workloads = [o for o in _k8s_objects() if o["kind"] in WORKLOADS]
    names = {o["metadata"]["name"] for o in workloads}
    assert {"postgres", "orthanc", "prefect", "mlflow", "gateway", "worker-cpu"} <= names
    assert {"worker-gpu", "api"} <= names
    for obj in workloads:
        pod = obj["spec"]["template"]["spec"]
        assert pod.get("securityContext", {}).get("runAsNonRoot") is True, obj["metadata"]
        for container in _containers(obj):
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            assert container.get("image"), f"{where}: no image"
            assert container.get("livenessProbe") or container.get("readinessProbe"), where
            assert container.get("resources", {}).get("requests"), f"{where}: no requests"


def test_k8s_gpu_worker_asks_for_a_gpu_on_a_gpu_node() -> None:
    (gpu,) = [o for o in _k8s_objects() if o["metadata"]["name"] == "worker-gpu"]
    pod = gpu["spec"]["template"]["spec"]
    assert pod["nodeSelector"]
    assert _containers(gpu)[0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_k8s_gateway_is_one_replica_on_its_own_spool_volume() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in _k8s_objects()}
    gateway = objects[("Deployment", "gateway")]
    assert gateway["spec"]["replicas"] == 1
    assert gateway["spec"]["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["var"]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in objects
    assert ("PersistentVolumeClaim", "orthanc-storage") in objects


def test_k8s_workers_serve_their_pool_and_the_api_runs_web_only() -> None:
    objects = {o["metadata"]["name"]: o for o in _k8s_objects() if o["kind"] in WORKLOADS}
    for name, pool in (("worker-cpu", "cpu"), ("worker-gpu", "gpu")):
        assert _containers(objects[name])[0]["args"] == ["pacsflow", "serve", "--pool", pool]
    (api,) = _containers(objects["api"])
    assert api["args"] == ["pacsflow", "web"]
    env = {e["name"]: e.get("value") for e in api["env"]}
    assert env["PACSFLOW_WEB_HOST"] == "0.0.0.0"
    assert int(env["PACSFLOW_WEB_PORT"]) == api["ports"][0]["containerPort"]


def test_k8s_workers_keep_their_names_across_restarts() -> None:
    for obj in _k8s_objects():
        if obj["metadata"]["name"].startswith("worker-") and obj["kind"] in WORKLOADS:
            assert obj["kind"] == "StatefulSet", obj["metadata"]["name"]


def test_k8s_config_matches_the_compose_files() -> None:
    data = {o["metadata"]["name"]: o.get("data", {}) for o in _k8s_objects()}
    assert json.loads(data["orthanc-config"]["orthanc.json"]) == json.loads(
        (COMPOSE / "orthanc.json").read_text()
    )
    assert (
        data["postgres-init"]["init-databases.sh"]
        == (COMPOSE / "postgres" / "init-databases.sh").read_text()
    )


@pytest.mark.parametrize(
    "toml",
    [COMPOSE / "pacsflow.toml", "k8s"],
    ids=["compose", "k8s"],
)
def test_the_shipped_pacsflow_toml_loads_into_production_settings(
    toml: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if toml == "k8s":
        (config,) = [o for o in _k8s_objects() if o["metadata"]["name"] == "pacsflow-config"]
        path = tmp_path / "pacsflow.toml"
        path.write_text(config["data"]["pacsflow.toml"])
    else:
        assert isinstance(toml, Path)
        path = toml
    for name in (
        "PACSFLOW_ORTHANC_PASSWORD",
        "PACSFLOW_GATEWAY_WEBHOOK_SECRET",
        "PACSFLOW_WEB_SESSION_SECRET",
    ):
        monkeypatch.setenv(name, f"not-a-dev-secret-{name.lower()}")
    settings = load_settings(path)
    assert settings.environment == "production"


# --- secrets and settings names ----------------------------------------------------------


def _named_values(node: Any) -> Iterator[tuple[str, Any]]:
    """(name, value) pairs anywhere in a YAML tree: mapping items and k8s env entries."""
    if isinstance(node, dict):
        if isinstance(node.get("name"), str) and "value" in node:
            yield node["name"], node["value"]
        for key, value in node.items():
            yield str(key), value
            yield from _named_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from _named_values(item)


def _text_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.is_file() and p.suffix != ".md")


def test_no_secret_value_is_committed() -> None:
    for path in _yaml_files():
        for document in _documents(path):
            for name, value in _named_values(document):
                if SECRET_NAME.search(name) and isinstance(value, str | int | float):
                    assert _is_reference(str(value)), f"{path.name}: {name} has a literal value"
    for name, value in _env_file(COMPOSE / ".env.example").items():
        if SECRET_NAME.search(name):
            assert value == "", f".env.example: {name} must stay empty"
    orthanc = json.loads((COMPOSE / "orthanc.json").read_text())
    for user, password in orthanc["RegisteredUsers"].items():
        assert _is_reference(password), f"orthanc.json: password of {user}"
    assert _is_reference(orthanc["PostgreSQL"]["Password"])
    for path in _text_files():
        for match in URL_CREDENTIALS.finditer(path.read_text()):
            assert _is_reference(match.group(1)), f"{path.name}: credentials in {match.group(0)}"


def test_no_secret_is_baked_into_an_image() -> None:
    for dockerfile in DOCKER.glob("*Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if re.match(r"\s*(ENV|ARG)\b", line):
                assert not SECRET_NAME.search(line), f"{dockerfile.name}: {line.strip()}"


def test_every_pacsflow_variable_names_a_setting() -> None:
    names = _pacsflow_env_names()
    assert "PACSFLOW_DATABASE_URL" in names and "PACSFLOW_WEB_SESSION_SECRET" in names
    unknown = sorted(n for n in names if not setting_exists(n))
    assert not unknown, f"not in the settings tree: {unknown}"


def test_setting_exists_tells_settings_from_others() -> None:
    assert setting_exists("PACSFLOW_GATEWAY_DICOM_PORT")
    assert setting_exists("PACSFLOW_ENVIRONMENT")
    assert setting_exists("PACSFLOW_CONFIG_FILE")
    assert not setting_exists("PACSFLOW_GATEWAY_DICOMPORT")
    assert not setting_exists("PACSFLOW_DB_PASSWORD")
    assert not setting_exists("PACSFLOW_PATHS")


# --- Dockerfiles and the health check script -------------------------------------------


def test_dockerfile_roles_share_one_base_and_run_as_a_numeric_non_root_user() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    stages = {stage: source for source, stage in re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)}
    for role in ("gateway", "worker-cpu", "worker-gpu", "api"):
        assert stages[role] == "base", role
    assert stages["base"] == "${RUNTIME}"
    assert {"runtime-cpu", "runtime-gpu"} <= set(stages)
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and all(u.isdigit() and int(u) > 0 for u in users)
    # Each role declares its own check (the runner's has no HTTP port).
    roles = re.split(r"^FROM base AS ", text, flags=re.MULTILINE)[1:]
    assert len(roles) == 4 and all("HEALTHCHECK" in r for r in roles)


def test_dockerfile_roles_run_their_command() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    roles: dict[str, str] = {}
    for stage in re.split(r"^FROM base AS ", text, flags=re.MULTILINE)[1:]:
        role, _, body = stage.partition("\n")
        roles[role.strip()] = body
    commands = {
        role: json.loads(re.findall(r"^CMD (.+)$", body, re.MULTILINE)[-1])
        for role, body in roles.items()
    }
    assert commands == {
        "gateway": ["pacsflow", "gateway"],
        "worker-cpu": ["pacsflow", "serve", "--pool", "cpu"],
        "worker-gpu": ["pacsflow", "serve", "--pool", "gpu"],
        "api": ["pacsflow", "web"],
    }
    assert "PACSFLOW_WEB_HOST=0.0.0.0" in roles["api"] and "PACSFLOW_WEB_PORT=8080" in roles["api"]


def _load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("infra_healthcheck", DOCKER / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_healthcheck_http_answers_by_status_on_a_real_socket() -> None:
    healthcheck = _load_healthcheck()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert healthcheck.main(["http", f"{base}/health"]) == 0
        assert healthcheck.main(["http", f"{base}/down"]) == 1
    finally:
        server.shutdown()
        server.server_close()
    assert healthcheck.main(["http", f"{base}/health"]) == 1  # nothing listens any more
    assert healthcheck.main(["bogus"]) == 2


def test_healthcheck_runner_is_false_outside_a_runner_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACSFLOW_PATHS_VAR_DIR", str(tmp_path))
    # PID 1 here is not deployments.serve, and no effective configuration was written.
    assert _load_healthcheck().main(["runner"]) == 1
