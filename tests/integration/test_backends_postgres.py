"""The Prefect server and MLflow on PostgreSQL (127.0.0.1:5432), each chosen by URL:
`prefect.database_url` and `mlflow.tracking_uri`, each on a fresh database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import torch

from pacsflow.config import Settings
from pacsflow.errors import ConfigError
from pacsflow.orchestration.prefect_api import PrefectApi
from pacsflow.stack.process import free_port
from pacsflow.stack.services import prefect_env, prefect_service
from pacsflow.testing.postgres import fresh_databases
from pacsflow.testing.services import isolated_settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PG_HOST = "postgres@127.0.0.1:5432"


@pytest.fixture
def pg_database() -> Iterator[str]:
    """The name of a fresh, empty database, dropped (connections and all) afterwards."""
    with fresh_databases(["backend"]) as names:
        yield names["backend"]


def _count(database: str, sql: str, **params: str) -> int:
    engine = sa.create_engine(f"postgresql+psycopg2://{PG_HOST}/{database}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql), params).scalar_one())
    finally:
        engine.dispose()


def test_prefect_database_url_selects_the_server_database(tmp_path: Path) -> None:
    default = isolated_settings(tmp_path / "a")
    sqlite_url = prefect_env(default)["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert sqlite_url.startswith("sqlite+aiosqlite:///") and sqlite_url.endswith("prefect.db")
    pg_url = f"postgresql+asyncpg://{PG_HOST}/prefect"
    on_pg = isolated_settings(tmp_path / "b", prefect={"database_url": pg_url})
    assert prefect_env(on_pg)["PREFECT_API_DATABASE_CONNECTION_URL"] == pg_url
    # A synchronous driver would only fail inside the server's start-up: refused here.
    with pytest.raises(ConfigError, match="postgresql\\+asyncpg"):
        isolated_settings(tmp_path / "c", prefect={"database_url": f"postgresql://{PG_HOST}/p"})


@pytest.mark.prefect
def test_prefect_server_on_postgres_creates_and_reads_a_flow_run(
    tmp_path: Path, pg_database: str
) -> None:
    settings: Settings = isolated_settings(
        tmp_path / "var",
        prefect={
            "port": free_port(),
            "database_url": f"postgresql+asyncpg://{PG_HOST}/{pg_database}",
        },
    )
    proc = prefect_service(settings)
    proc.start()
    try:
        proc.wait_ready()
        api_url = settings.prefect.effective_api_url
        with httpx.Client(base_url=api_url, timeout=30) as http:
            flow = http.post("/flows/", json={"name": "pg-backend-check"})
            assert flow.status_code in (200, 201), flow.text
            deployment = http.post(
                "/deployments/", json={"name": "on-postgres", "flow_id": flow.json()["id"]}
            )
            assert deployment.status_code in (200, 201), deployment.text

        api = PrefectApi(api_url)
        try:
            key = f"pg-check-{uuid.uuid4().hex}"
            run_id = api.create_flow_run(
                "pg-backend-check/on-postgres", {}, idempotency_key=key, tags=["pg"]
            )
            again = api.create_flow_run(
                "pg-backend-check/on-postgres", {}, idempotency_key=key, tags=["pg"]
            )
            read_back = api.flow_run(run_id)
        finally:
            api.close()
        assert again == run_id  # the idempotency key holds on PostgreSQL too
        assert read_back["id"] == run_id and read_back["tags"] == ["pg"]
        assert read_back["deployment_id"] == deployment.json()["id"]
    finally:
        proc.stop()
    # The run is a row of the PostgreSQL database, and the server made no SQLite file.
    stored = "SELECT count(*) FROM flow_run WHERE id = CAST(:id AS uuid)"
    assert _count(pg_database, stored, id=run_id) == 1
    assert not (settings.paths.var_dir / "prefect" / "prefect.db").exists()


@pytest.mark.mlflow
def test_mlflow_registry_on_postgres_registers_and_loads_a_version(
    tmp_path: Path, pg_database: str
) -> None:
    from models.registry import CHAMPION, Approval, Registry, load_by_alias
    from models.segmenter import Segmenter, SegmenterConfig, build_network

    # Name the driver: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which this
    # environment lacks; psycopg2 is installed.
    tracking_uri = f"postgresql+psycopg2://{PG_HOST}/{pg_database}"
    settings = isolated_settings(tmp_path / "var", mlflow={"tracking_uri": tracking_uri})
    assert settings.mlflow_tracking_uri == tracking_uri

    config = SegmenterConfig(
        kind="ich",
        spacing_zyx=(5.0, 4.0, 4.0),
        windows=((0.0, 100.0),),
        channels=(4, 8),
        strides=(2,),
        num_res_units=0,
    )
    torch.manual_seed(7)
    weights, config_file = tmp_path / "w.pt", tmp_path / "w.json"
    torch.save(build_network(config).state_dict(), weights)
    config_file.write_text(config.to_json())

    # Artifacts are files (a site uses an object store); the metadata lives in PostgreSQL.
    registry = Registry(tracking_uri, artifact_root=settings.mlflow_artifact_root)
    info = registry.register(
        "pacsflow-pg-check",
        weights=weights,
        config=config_file,
        model_card="# PostgreSQL backend check\n",
        metrics={"sensitivity": 0.9},
        params={"seed": 7},
    )
    assert info.run_id is not None
    registry.approve(
        "pacsflow-pg-check",
        info.version,
        Approval(
            approved_by="committee",
            evidence_run=info.run_id,
            intended_use="backend test",
            limitations="random weights",
        ),
    )
    assert registry.promote("pacsflow-pg-check", info.version).aliases == [CHAMPION]

    segmenter, loaded = load_by_alias(tracking_uri, "pacsflow-pg-check")
    assert loaded.version == info.version and loaded.approved
    expected = Segmenter.from_files(weights, config_file)
    for a, b in zip(
        segmenter.network.state_dict().values(),
        expected.network.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a.cpu(), b.cpu())
    assert (
        _count(
            pg_database,
            "SELECT count(*) FROM model_versions WHERE name = :name",
            name="pacsflow-pg-check",
        )
        == 1
    )
