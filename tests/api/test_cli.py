"""The ``p402`` command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from tests.conftest import POSTGRES_SERVER

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


def test_demo_once_tells_acme_corps_month_and_exits_zero(tmp_path):
    result = _run("demo", "--once", "--port", "0", env={"HOME": str(tmp_path)}, timeout=300)
    assert result.returncode == 0, result.stderr
    out, err = result.stdout, result.stderr
    # spend by department, and a total that is their exact sum
    department_table = out[: out.index("total:")]
    rows = dict(
        re.findall(
            r"│ (Engineering|Marketing|Legal|Finance) +│ +\d+ │ +([\d.]+) │", department_table
        )
    )
    assert set(rows) == {"Engineering", "Marketing", "Legal", "Finance"}
    total = re.search(r"total: ([\d.]+) USD", out)
    assert total is not None
    assert sum(map(Decimal, rows.values())) == Decimal(total.group(1))
    # live traffic through the real SDKs: one downgrade, two refusals with HTTP 402
    assert "claude-opus-4-1 (above its ceiling): answered by claude-sonnet-4-5" in " ".join(
        err.split()
    )
    assert len(re.findall(r"refused with HTTP\s+402", err)) == 2
    assert out.count("downgraded") >= 1 and out.count("blocked") >= 2
    # alerts past 80 % and 90 % of Marketing's cap, Bob's session in the anomaly queue
    assert re.search(r"department +│ Marketing +│ 80 ", out)
    assert re.search(r"department +│ Marketing +│ 90 ", out)
    assert "bob-incident-review" in out
    # a receipt anchored on the embedded chain, every verification check passed
    for check in ("receipt_hash", "audit_path", "status", "submitter", "root_on_chain"):
        assert f"verify: {check}: ok" in err
    # its server stops with it: no links to a server that is gone
    assert "#key=" not in err and "ran with --once" in err


def test_the_demo_keeps_serving_what_its_links_show_until_sigterm(tmp_path):
    with subprocess.Popen(
        [P402, "demo", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "HOME": str(tmp_path)},
    ) as demo:
        try:
            assert demo.stderr is not None
            told: list[str] = []
            deadline = time.monotonic() + 300
            while not any("Serving until interrupted" in line for line in told):
                line = demo.stderr.readline()
                assert line or demo.poll() is None, "".join(told)
                assert time.monotonic() < deadline, "".join(told)
                told.append(line)
            links = dict(re.findall(r"^  (\w[\w ]*?): +(.+)$", "".join(told), re.MULTILINE))
            key = re.search(r"#key=(\S+)", links["dashboard"])
            assert key is not None
            for name in ("spend", "budgets", "receipt", "its proof"):
                # each line is a whole curl command: run it as it is, in a shell
                command = (
                    links[name].replace(" -o receipt.pdf", " -o -").replace(" > proof.json", "")
                )
                answer = subprocess.run(
                    f"{command} --silent --show-error --fail", shell=True, capture_output=True
                )
                assert answer.returncode == 0, (name, answer.stderr)
                if name == "receipt":
                    assert answer.stdout.startswith(b"%PDF")
                elif name == "its proof":
                    assert "anchor" in json.loads(answer.stdout)
                else:
                    assert json.loads(answer.stdout)
            demo.send_signal(signal.SIGTERM)
            assert demo.wait(timeout=60) == 0
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait()


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("nonsense", "Could not parse"),
        ("foo://bar", "Can't load plugin"),
        ("sqlite:///{tmp}/no-such-directory/p402.db", "unable to open database file"),
        ("sqlite:///:memory:", "is in memory"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/p402", "Connection refused"),
    ],
)
def test_a_ledger_database_that_cannot_be_used_is_one_line_naming_it(url, cause, tmp_path):
    url = url.format(tmp=tmp_path)
    for command in (("migrate",), ("keys", "create", "--tenant", "acme", "--role", "read")):
        result = _run(*command, env={"P402_DATABASE_URL": url})
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("Error: the ledger database") and "P402_DATABASE_URL" in line
        assert cause in line


@pytest.mark.parametrize(
    ("name", "problem"),
    [("", "empty"), ("   ", "empty"), ("a\x01b", "control characters"), ("x" * 201, "200")],
)
def test_a_tenant_name_that_names_nothing_is_refused(database_url, name, problem):
    result = _run(
        "keys",
        "create",
        "--tenant",
        name,
        "--role",
        "read",
        env={"P402_DATABASE_URL": database_url},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--tenant" in result.stderr and problem in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("port", "problem"), [("abc", "valid integer"), ("99999", "range")])
def test_a_port_that_is_not_one_is_a_usage_error(port, problem):
    result = _run("serve", env={"P402_PORT": port})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--port" in result.stderr and problem in result.stderr


def test_serve_names_a_wrong_policy_refresh_and_stops(database_url):
    result = _run(
        "serve",
        env={"P402_DATABASE_URL": database_url, "P402_POLICY_REFRESH_SECONDS": "ten"},
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "P402_POLICY_REFRESH_SECONDS must be a whole number of seconds" in result.stderr


def test_migrate_creates_a_postgresql_database_that_does_not_exist(postgres_database):
    missing = f"{postgres_database}_made_by_migrate"
    name = missing.rsplit("/", 1)[1]
    try:
        first = _run("migrate", env={"P402_DATABASE_URL": missing})
        assert first.returncode == 0, first.stderr
        again = _run("migrate", env={"P402_DATABASE_URL": missing})  # there now: used as is
        assert again.returncode == 0, again.stderr
        engine = connect(missing)
        try:
            with engine.connect() as connection:
                tables = connection.exec_driver_sql(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_name IN ('economic_event', 'alembic_version')"
                ).scalar_one()
        finally:
            engine.dispose()
        assert tables == 2
    finally:
        with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrate_names_a_postgresql_database_it_cannot_reach(postgres_database):
    unknown_role = postgres_database.replace("postgres@", "no_such_role@", 1) + "_never_made"
    result = _run("migrate", env={"P402_DATABASE_URL": unknown_role})
    assert result.returncode == 1
    assert 'role "no_such_role" does not exist' in result.stderr
    assert "Traceback" not in result.stderr


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
