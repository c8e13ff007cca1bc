"""Shared fixtures: the ledger on SQLite and on the PostgreSQL server at 127.0.0.1:5432, a
stand-in LLM provider, a running P402 server, and the instrumentation wired to either."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, inspect, text

from p402.instrumentation.testing import StandInProvider
from p402.ledger.database import connect, migrate

_RECURSION_LIMIT = sys.getrecursionlimit()


@pytest.fixture(autouse=True)
def _default_recursion_limit() -> None:
    """Every test starts with the interpreter's recursion limit. Hypothesis may leave it
    raised (100,000) after its tests; decoding deeply nested input in C under such a limit
    overflows the C stack instead of raising ``RecursionError`` as it does in a server."""
    sys.setrecursionlimit(_RECURSION_LIMIT)


POSTGRES_SERVER = os.environ.get("P402_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_answers() -> bool:
    try:
        with psycopg.connect(POSTGRES_SERVER, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A throwaway database for this run on the local PostgreSQL server, dropped afterwards."""
    if not _postgres_answers():
        pytest.skip(f"no PostgreSQL server answers at {POSTGRES_SERVER}")
    name = f"p402_test_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_SERVER.rsplit("/", 1)[0]
    yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ledger URL for one test: a fresh SQLite file, or the emptied PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'p402.db'}"
    url: str = request.getfixturevalue("postgres_database")
    engine = connect(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = connect(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def standin() -> Iterator[StandInProvider]:
    with StandInProvider() as provider:
        yield provider


def database_text(engine: Engine, database_url: str) -> str:
    """Everything the database holds, as text (for SQLite also the raw files): what a test
    searches for a value that must never be stored."""
    chunks = []
    with engine.connect() as connection:
        for table in inspect(engine).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                chunks.append(repr(tuple(row)))
    if database_url.startswith("sqlite"):
        path = Path(database_url.removeprefix("sqlite:///"))
        for file in path.parent.glob(path.name + "*"):
            chunks.append(file.read_bytes().decode("latin-1"))
    return "\n".join(chunks)
