"""Engines for the ledger database: SQLite (embedded default) or PostgreSQL.

``P402_DATABASE_URL`` names it: ``sqlite:///./p402.db`` by default,
``postgresql+psycopg://user@host/db`` in production.
"""

from __future__ import annotations

import os
import threading
import weakref
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import URL, Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from p402.ledger import models  # noqa: F401 - registers the tables on SQLModel.metadata

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "DEFAULT_DATABASE_URL",
    "alembic_config",
    "connect",
    "create_database",
    "database_url",
    "in_memory",
    "migrate",
    "refresh_statistics",
    "reservation_engine",
]

DEFAULT_DATABASE_URL: Final = "sqlite:///./p402.db"


def database_url(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("P402_DATABASE_URL") or DEFAULT_DATABASE_URL


def _sqlite_pragmas(
    dbapi_connection: Any, connection_record: Any, *, reservations: bool = False
) -> None:
    """The ledger's settings of a SQLite connection; ``reservations``: of one of
    :func:`reservation_engine`'s."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives power loss. NORMAL, a reservation's: it survives a crash of
    # the process, not of the machine.
    cursor.execute(f"PRAGMA synchronous={'NORMAL' if reservations else 'FULL'}")
    cursor.execute("PRAGMA foreign_keys=ON")
    # The reservations' connections never wait inside SQLite: they wait for the write lock
    # in Python, or not at all (p402.ledger.holds).
    cursor.execute(f"PRAGMA busy_timeout={0 if reservations else 10_000}")
    # Ingest touches pages all over the event indexes and rollups: a page cache of 32 MiB
    # (not 2) keeps them in memory, and checkpointing the WAL every 4000 pages (not 1000)
    # copies a page changed by several transactions into the database once. Reservations
    # leave checkpoints to the others, bar a WAL grown 16 times as large.
    cursor.execute(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}")
    checkpoint = _SQLITE_CHECKPOINT_PAGES * (_RESERVATION_CHECKPOINT_FACTOR if reservations else 1)
    cursor.execute(f"PRAGMA wal_autocheckpoint={checkpoint}")
    cursor.close()


_SQLITE_CACHE_KIB: Final = 32 * 1024
_SQLITE_CHECKPOINT_PAGES: Final = 4000
_RESERVATION_CHECKPOINT_FACTOR: Final = 16


def _sqlite_engine(url: str, *, reservations: bool = False) -> Engine:
    # A reservation ends its transaction itself (commit, or rollback on any error): its
    # connection goes back to the pool with no rollback to run.
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False},
        pool_reset_on_return=None if reservations else "rollback",
    )
    event.listen(engine, "connect", partial(_sqlite_pragmas, reservations=reservations))
    return engine


def in_memory(url: URL) -> bool:
    """Whether ``url`` is an in-memory SQLite database (each connection its own)."""
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or "mode=memory" in str(url)
    )


def connect(url: str | None = None) -> Engine:
    """An engine for ``url`` (default: ``P402_DATABASE_URL``), set up for concurrent use."""
    url = url or database_url()
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


_reservation_engines: weakref.WeakKeyDictionary[Engine, Engine | None] = weakref.WeakKeyDictionary()
"""Each engine's reservation engine; ``None``: the engine itself."""
_reservation_lock: Final = threading.Lock()


def reservation_engine(engine: Engine) -> Engine:
    """The engine strict enforcement's reservations (:mod:`p402.ledger.holds`) run on.

    For a SQLite database in a file, a second pool on the same file, whose connections commit
    without waiting for the disk (``synchronous=NORMAL``: a reservation is a hold of minutes,
    not a record; see the holds' durability) and leave WAL checkpoints to the ledger's other
    writers (a checkpoint copies pages into the database and syncs it: milliseconds, on a
    reservation's path otherwise; they checkpoint too, as a safety net, once the WAL is 16
    times the usual size) and do not wait for the write lock inside SQLite
    (``busy_timeout=0``: :func:`p402.ledger.holds.authorize` waits for it, or not at all).
    For a PostgreSQL database, a second pool whose connections are not pinged before each
    use (a round trip per reservation): one found closed (the server restarted, say) makes
    :func:`p402.ledger.holds.authorize` renew the pool and try again, which is safe as an
    event id's hold is found again rather than made twice.

    Otherwise (an in-memory SQLite database) ``engine`` itself. Disposing of ``engine``
    disposes of its reservation engine too.
    """
    found = _reservation_engines.get(engine, engine)  # known: its own engine, or None
    if found is not engine:
        return found or engine
    url = engine.url
    with _reservation_lock:
        reservations = _reservation_engines.get(engine)
        if reservations is None and engine not in _reservation_engines:
            address = url.render_as_string(hide_password=False)
            if url.get_backend_name() == "postgresql":
                # reservations of one tenant run one at a time (a lock): a smaller pool
                reservations = create_engine(address, pool_size=4, max_overflow=12)
            elif url.get_backend_name() == "sqlite" and not in_memory(url):
                reservations = _sqlite_engine(address, reservations=True)
            if reservations is not None:
                event.listen(engine, "engine_disposed", partial(_dispose, reservations))
        _reservation_engines[engine] = reservations
        return reservations or engine


def _dispose(reservations: Engine, engine: Engine) -> None:
    reservations.dispose()


MIGRATIONS: Final = Path(__file__).parent / "migrations"
_MIGRATION_LOCK: Final = 0x50343032  # PostgreSQL advisory lock key: "P402"


def alembic_config(connection: Connection) -> Config:
    # Alembic is loaded when a schema is migrated, not by everything that uses the ledger.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


_DATABASE_EXISTS: Final = frozenset({"42P04", "23505"})  # duplicate_database; or a race's
_MAINTENANCE_DATABASES: Final = ("postgres", "template1")


def create_database(engine: Engine) -> bool:
    """Create the PostgreSQL database ``engine`` names when the server has none of that name
    (through the server's ``postgres`` or ``template1`` database, with the same credentials);
    ``True`` when it did. A SQLite file is made by its first connection. When ``engine``
    cannot connect for another reason, or the database cannot be created, the error of
    connecting to it is raised."""
    url = engine.url
    if url.get_backend_name() != "postgresql" or not url.database:
        return False
    try:
        with engine.connect():
            return False
    except OperationalError as error:
        failure = error  # (no SQLSTATE comes with a connection's failure: asked below)
    for maintenance_database in _MAINTENANCE_DATABASES:
        maintenance = create_engine(
            url.set(database=maintenance_database),
            isolation_level="AUTOCOMMIT",
            poolclass=NullPool,
        )
        try:
            with maintenance.connect() as connection:
                exists = connection.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"),
                    {"name": url.database},
                ).first()
                if exists:
                    break  # it is there: the connection failed for another reason
                name = connection.dialect.identifier_preparer.quote(url.database)
                connection.exec_driver_sql(f"CREATE DATABASE {name}")
                return True
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) in _DATABASE_EXISTS:
                return False  # another server, starting at the same time, made it
        finally:
            maintenance.dispose()
    raise failure


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest migration, creating the database (see
    :func:`create_database`) and the schema when there are none.

    On PostgreSQL an advisory lock makes servers starting together migrate one at a time.
    """
    from alembic import command

    create_database(engine)

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        command.upgrade(alembic_config(connection), "head")


def refresh_statistics(engine: Engine, now_ms: int | None = None) -> None:
    """Refresh the query planner's statistics of the ledger's tables.

    Without them a young or fast-growing ledger is planned as if it were empty: SQLite picks
    the time index for a session's events and scans the tenant; PostgreSQL does the same
    before autovacuum first analyses a table. SQLite samples at most
    :data:`_SQLITE_ANALYSIS_LIMIT` rows per index, PostgreSQL its default sample, so this stays
    cheap on a large ledger. (``now_ms`` is unused: the scheduler passes it to every job.)
    """
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql(f"PRAGMA analysis_limit={_SQLITE_ANALYSIS_LIMIT}")
            connection.exec_driver_sql("ANALYZE")
        else:
            connection.exec_driver_sql("ANALYZE")


_SQLITE_ANALYSIS_LIMIT: Final = 1000
