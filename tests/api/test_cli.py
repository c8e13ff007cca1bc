"""The ``p402`` command line, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from p402.ledger.database import connect
from p402.ledger.keys import Role, resolve_key

P402 = str(Path(sys.executable).parent / "p402")


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [P402, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_keys_create_prints_the_key_alone_on_stdout(database_url):
    result = _run(
        "keys",
        "create",
        "--tenant",
        "Acme Corp",
        "--role",
        "read",
        env={"P402_DATABASE_URL": database_url},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("p402_")
    assert "Acme Corp" in result.stderr and lines[0] not in result.stderr
    engine = connect(database_url)
    try:
        identity = resolve_key(engine, lines[0])
    finally:
        engine.dispose()
    assert identity is not None and identity.role is Role.READ


def test_keys_create_refuses_an_unknown_role(database_url):
    result = _run(
        "keys",
        "create",
        "--tenant",
        "acme",
        "--role",
        "owner",
        env={"P402_DATABASE_URL": database_url},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "'owner' is not one of 'ingest', 'read', 'admin'" in result.stderr


def test_demo_once_prints_a_spend_table_and_exits_zero(tmp_path):
    result = _run("demo", "--once", "--port", "0", env={"HOME": str(tmp_path)}, timeout=180)
    assert result.returncode == 0, result.stderr
    for department in ("Engineering", "Marketing", "Legal", "Finance"):
        assert department in result.stdout
    assert "total" in result.stdout
    assert "0.005331" in result.stdout  # ten calls at 0.0005331 USD, summed exactly


def test_migrate_brings_an_empty_database_to_the_latest_migration(database_url):
    result = _run("migrate", env={"P402_DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert "latest migration" in result.stderr
    engine = connect(database_url)
    try:
        from alembic.migration import MigrationContext
        from alembic.script import ScriptDirectory

        from p402.ledger.database import MIGRATIONS

        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        assert current == ScriptDirectory(str(MIGRATIONS)).get_current_head()
    finally:
        engine.dispose()
