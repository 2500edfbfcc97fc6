"""The Alembic migrations build exactly the schema the table classes declare."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pacsflow.db.session import make_engine, upgrade
from pacsflow.db.tables import Base


def test_migrated_database_matches_the_table_classes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pacsflow.db'}"
    upgrade(url)
    with make_engine(url).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
