"""Shared fixtures: the ledger on SQLite and on the PostgreSQL server at 127.0.0.1:5432, a
stand-in LLM provider, a running P402 server, and the instrumentation wired to either."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


@pytest.fixture(autouse=True)
def _closed_default_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """The instrumentation's default endpoint, 127.0.0.1:4318, may be a server the developer
    runs: a test that names no endpoint talks to a closed port instead, as it does on a
    machine that runs none (CI's)."""
    monkeypatch.setenv("P402_ENDPOINT", "http://127.0.0.1:9")


@pytest.fixture
def canned_server() -> Iterator[Callable[[int, dict[str, str], bytes], str]]:
    """Starts local HTTP servers that answer every request alike (status, headers, body): a
    server at an address that is not what a client expects there. The fixture is a function
    that starts one and returns its URL; every one is stopped after the test."""
    servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(status: int, headers: dict[str, str], body: bytes) -> str:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(status)
                for name, value in {"content-length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


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


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A SQLite ledger at the latest migration, with no rows, and its revision: copied for each
    test that asks for ``engine`` rather than migrated again."""
    path = tmp_path_factory.mktemp("migrated") / "p402.db"
    engine = connect(f"sqlite:///{path}")
    migrate(engine)
    with engine.connect() as connection:
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()  # the last connection closed: the write-ahead log is in the file
    assert not path.with_name(f"{path.name}-wal").exists()
    return path, str(revision)


_AT_HEAD = pytest.StashKey[bool]()


def _emptied_at_head(engine: Engine, revision: str) -> bool:
    """Empty every table of a PostgreSQL ledger that is at ``revision``; ``False`` (and nothing
    done) when it is not."""
    with engine.begin() as connection:
        if connection.execute(text("SELECT to_regclass('alembic_version')")).scalar() is None:
            return False
        if connection.execute(text("SELECT version_num FROM alembic_version")).scalar() != revision:
            return False
        tables = connection.execute(
            text(
                "SELECT quote_ident(tablename) FROM pg_tables "
                "WHERE schemaname = current_schema() AND tablename != 'alembic_version'"
            )
        ).scalars()
        # The sealed-receipt triggers refuse TRUNCATE: off for this transaction (superuser).
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    return True


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ledger URL for one test: a fresh SQLite file, or the emptied PostgreSQL database.

    For a test that uses ``engine`` the ledger is at the latest migration already, with no
    rows (a copy of one migrated file; the PostgreSQL tables emptied when the last test left
    them at the latest migration); for any other test it is empty."""
    migrated = "engine" in request.fixturenames
    revision: str | None = None
    if migrated:
        template, revision = request.getfixturevalue("migrated_sqlite")
    if request.param == "sqlite":
        path = tmp_path / "p402.db"
        if migrated:
            shutil.copyfile(template, path)
        request.node.stash[_AT_HEAD] = migrated
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    engine = connect(url)
    try:
        at_head = revision is not None and _emptied_at_head(engine, revision)
        if not at_head:
            with engine.begin() as connection:
                connection.execute(text("DROP SCHEMA public CASCADE"))
                connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    request.node.stash[_AT_HEAD] = at_head
    return url


@pytest.fixture
def engine(request: pytest.FixtureRequest, database_url: str) -> Iterator[Engine]:
    engine = connect(database_url)
    if not request.node.stash.get(_AT_HEAD, False):
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
