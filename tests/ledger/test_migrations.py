"""Schema changes ship as Alembic migrations: they build exactly the models' schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from p402.ledger.database import migrate


def test_the_migrations_build_the_schema_of_the_models(engine):
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []
    assert {"tenant", "api_key", "economic_event", "alembic_version"} <= set(
        inspect(engine).get_table_names()
    )


def test_migrating_again_changes_nothing(engine):
    migrate(engine)
    migrate(engine)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() is not None
