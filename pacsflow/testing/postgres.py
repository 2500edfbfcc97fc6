"""Fresh PostgreSQL databases on the local server (127.0.0.1:5432, trust auth, as on the CI
machine) for tests and benchmarks, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from pacsflow.errors import StackError

SERVER = "postgres@127.0.0.1:5432"


def url(database: str, driver: str = "psycopg2") -> str:
    """SQLAlchemy URL of a database on the local server (asyncpg for the Prefect server)."""
    return f"postgresql+{driver}://{SERVER}/{database}"


@contextmanager
def fresh_databases(roles: Sequence[str], prefix: str = "pacsflow") -> Iterator[dict[str, str]]:
    """One new database per role (role -> database name) for the block."""
    names = {role: f"{prefix}_{role}_{uuid.uuid4().hex[:8]}" for role in roles}
    admin = create_engine(url("postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        raise StackError(f"PostgreSQL at {SERVER} is not reachable: {exc}") from exc
    try:
        yield names
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def stack_overrides(databases: dict[str, str]) -> dict[str, Any]:
    """Settings groups that put pacsflow's, the Prefect server's and MLflow's databases on
    the databases made by ``fresh_databases(["pacsflow", "prefect", "mlflow"])``."""
    return {
        "database": {"url": url(databases["pacsflow"])},
        "prefect": {"database_url": url(databases["prefect"], "asyncpg")},
        "mlflow": {"tracking_uri": url(databases["mlflow"])},
    }
