"""Throwaway ledgers for the benchmarks: a migrated SQLite file in a temporary directory, or a
migrated database created on a PostgreSQL server and dropped at the end."""

from __future__ import annotations

import secrets
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, make_url, text

from p402.ledger.database import connect, migrate

__all__ = ["server_version", "throwaway_postgres", "throwaway_sqlite"]


@contextmanager
def throwaway_sqlite(prefix: str, directory: Path | None = None) -> Iterator[Engine]:
    """A migrated SQLite ledger in a temporary directory (inside ``directory`` if given)."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=directory) as folder:
        engine = connect(f"sqlite:///{folder}/ledger.db")
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()


@contextmanager
def throwaway_postgres(admin_url: str, prefix: str) -> Iterator[Engine]:
    """A migrated database on the server of ``admin_url``, dropped at the end."""
    name = f"{prefix}{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        engine = connect(make_url(admin_url).set(database=name).render_as_string(False))
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def server_version(engine: Engine) -> str:
    if engine.dialect.name == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    with engine.connect() as connection:
        return "PostgreSQL " + str(connection.execute(text("SHOW server_version")).scalar())
