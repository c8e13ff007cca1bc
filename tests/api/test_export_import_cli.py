"""``p402 export``, ``p402 import`` and ``p402 tenant delete`` against a running server
(export, import) or the database (tenant delete): the main paths run as a user runs them, in
a process of their own; the others through click's runner, in this process."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from p402.api import cli_data, create_app
from p402.api.cli import main
from p402.api.server import BackgroundServer
from p402.ledger.clock import from_iso
from p402.ledger.events import EventRecord, insert_events
from p402.ledger.imports import IMPORTED
from p402.ledger.keys import Role, create_key, resolve_key, tenant_id

P402 = str(Path(sys.executable).parent / "p402")
FIXTURES = Path(__file__).parent.parent / "fixtures" / "imports"


def _run(*args: str, env: dict[str, str], input: str | None = None):
    return subprocess.run(
        [P402, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        input=input,
    )


def _invoke(*args: str, env: dict[str, str], input: str | None = None):
    return CliRunner().invoke(main, list(args), env=env, input=input)


@pytest.fixture
def server(engine) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(engine)) as running:
        yield running


@pytest.fixture
def acme(engine) -> dict[str, str]:
    return {role.value: create_key(engine, tenant="acme", role=role)[1] for role in Role}


def _events(engine, key, count):
    start = from_iso("2026-11-02")
    insert_events(
        engine,
        resolve_key(engine, key).tenant_id,
        [
            EventRecord(
                event_id=f"cli-{n:04d}",
                ts_ms=start + n * 60_000,
                usage_evidence="provider_response",
                cost_evidence="computed",
                privacy_mode="metadata_only",
                provider="openai",
                operation="chat",
                model_used="gpt-5-mini-2025-08-07",
                input_tokens=100 + n,
                output_tokens=20,
                cost_picos=123_456_789 + n,
                department="legal" if n % 3 else "finance",
                policy_reason='a "quoted"\nmulti-line reason' if n % 7 == 0 else None,
            )
            for n in range(count)
        ],
    )


def test_export_writes_the_csv_to_a_file_with_progress_on_stderr(server, engine, acme, tmp_path):
    _events(engine, acme["read"], 1500)
    target = tmp_path / "events.csv"
    env = {"P402_ENDPOINT": server.url, "P402_API_KEY": acme["read"]}
    result = _run("export", "--format", "csv", "--output", str(target), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert f"exported 1500/1500 rows to {target}" in result.stderr
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == 1500
    assert sum(Decimal(row["cost_usd"]) for row in rows) == Decimal(
        sum(123_456_789 + n for n in range(1500))
    ).scaleb(-12)


def test_export_filters_and_writes_to_stdout(server, engine, acme):
    _events(engine, acme["read"], 30)
    result = _invoke(
        "export",
        "--filter",
        "department=finance",
        "--from",
        "2026-11-02T00:10:00Z",
        "--endpoint",
        server.url,
        "--api-key",
        acme["read"],
        env={},
    )
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {row["department"] for row in rows} == {"finance"}
    assert sorted(int(row["id"][4:]) for row in rows) == [12, 15, 18, 21, 24, 27]
    assert "exported 6/6 rows to standard output" in result.stderr


def test_export_bundle_and_focus(server, engine, acme, tmp_path):
    _events(engine, acme["read"], 10)
    env = {"P402_ENDPOINT": server.url, "P402_API_KEY": acme["read"]}
    bundle = tmp_path / "bundle.zip"
    result = _invoke("export", "--format", "bundle", "-o", str(bundle), env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(zipfile.ZipFile(bundle).read("manifest.json"))["events"] == 10
    assert "exported 10/10 events" in result.stderr
    focus = _invoke("export", "--format", "focus", env=env)
    assert focus.exit_code == 0, focus.stderr
    assert focus.stdout.startswith("BilledCost,")


def test_an_interrupted_export_leaves_the_file_there_before_and_nothing_else(
    server, engine, acme, tmp_path, monkeypatch
):
    _events(engine, acme["read"], 50)
    folder = tmp_path / "exports"
    folder.mkdir()
    target = folder / "events.csv"
    target.write_text("an earlier export\n")

    def interrupted(self, chunk):
        raise KeyboardInterrupt  # Ctrl-C while the rows arrive

    monkeypatch.setattr(cli_data._CsvRecords, "feed", interrupted)
    env = {"P402_ENDPOINT": server.url, "P402_API_KEY": acme["read"]}
    result = _invoke("export", "-o", str(target), env=env)
    assert result.exit_code == 130, result.output
    assert f"the export to {target} was interrupted" in result.stderr
    assert target.read_text() == "an earlier export\n"
    assert [path.name for path in folder.iterdir()] == ["events.csv"]
    monkeypatch.undo()
    whole = _invoke("export", "-o", str(target), env=env)
    assert whole.exit_code == 0, whole.output
    assert len(list(csv.DictReader(io.StringIO(target.read_text())))) == 50
    assert [path.name for path in folder.iterdir()] == ["events.csv"]


def test_export_says_why_it_fails(server, acme):
    result = _invoke("export", env={"P402_ENDPOINT": server.url, "P402_API_KEY": acme["ingest"]})
    assert result.exit_code == 1
    assert "HTTP 403, forbidden" in result.stderr
    bad = _invoke("export", "--filter", "colour=red", env={"P402_API_KEY": "x"})
    assert bad.exit_code == 2 and "--filter" in bad.stderr
    no_key = _invoke("export", env={"P402_API_KEY": "", "P402_ENDPOINT": server.url})
    assert no_key.exit_code == 2 and "P402_API_KEY" in no_key.stderr
    unreachable = _invoke(
        "export", env={"P402_API_KEY": "x", "P402_ENDPOINT": "http://127.0.0.1:9"}
    )
    assert unreachable.exit_code == 1 and "cannot reach http://127.0.0.1:9" in unreachable.stderr


def test_export_and_import_say_what_is_wrong_without_a_traceback(
    server, acme, tmp_path, canned_server
):
    env = {"P402_ENDPOINT": "not a url", "P402_API_KEY": acme["read"]}
    for command in (("export",), ("import", "openai", str(FIXTURES / "openai_costs.json"))):
        not_a_url = _invoke(*command, env=env)
        assert not_a_url.exit_code == 2 and "must be an http(s) URL" in not_a_url.stderr
    env = {"P402_ENDPOINT": server.url, "P402_API_KEY": acme["read"]}
    nowhere = tmp_path / "no-such-directory" / "events.csv"
    unwritable = _invoke("export", "-o", str(nowhere), env=env)
    assert unwritable.exit_code == 1 and f"cannot write {nowhere}" in unwritable.stderr
    page = b"<html>a sign-in page</html>"
    impostor = canned_server(200, {"content-type": "text/html"}, page)
    env = {"P402_ENDPOINT": impostor, "P402_API_KEY": acme["admin"]}
    html = _invoke("export", "-o", str(tmp_path / "page.csv"), env=env)
    assert html.exit_code == 1 and "did not answer as a P402 server" in html.stderr
    assert not (tmp_path / "page.csv").exists()
    posted = _invoke("import", "openai", str(FIXTURES / "openai_costs.json"), env=env)
    assert posted.exit_code == 1 and "did not answer as a P402 server" in posted.stderr
    short = {"content-type": "text/csv", "x-p402-total-events": "1000"}
    cut_short = canned_server(200, short, b"id,cost_usd\ne1,0.1\n")
    env = {"P402_ENDPOINT": cut_short, "P402_API_KEY": acme["read"]}
    partial = _invoke("export", "-o", str(tmp_path / "events.csv"), env=env)
    assert partial.exit_code == 1
    assert "ended after 1 of 1000 rows" in partial.stderr
    assert not (tmp_path / "events.csv").exists()
    for result in (unwritable, html, posted, partial):
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_import_posts_each_file_and_prints_its_outcome(server, engine, acme):
    env = {"P402_ENDPOINT": server.url, "P402_API_KEY": acme["admin"]}
    files = [str(FIXTURES / "openai_usage_completions.json"), str(FIXTURES / "openai_costs.json")]
    result = _run("import", "openai", *files, env=env)
    assert result.returncode == 0, result.stderr
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["results"], o["inserted"]) for o in outcomes] == [(3, 3), (7, 7)]
    assert "openai_costs.json: 7 results, 7 new, 0 updated, 0 unchanged" in result.stderr
    again = _invoke("import", "openai", files[1], env=env)
    assert json.loads(again.stdout)["unchanged"] == 7
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(IMPORTED)).scalar() == 10
    refused = _invoke("import", "anthropic", files[1], env=env)
    assert refused.exit_code == 1 and "invalid_report" in refused.stderr


def test_tenant_delete_erases_the_tenant_from_the_database(database_url, engine, acme):
    _events(engine, acme["read"], 5)
    create_key(engine, tenant="globex", role=Role.READ)
    env = {"P402_DATABASE_URL": database_url}
    unconfirmed = _invoke("tenant", "delete", "acme", env=env, input="n\n")
    assert unconfirmed.exit_code == 1 and tenant_id(engine, "acme") is not None
    result = _run("tenant", "delete", "acme", "--yes", env=env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["deleted"]["economic_event"] == 5 and answer["deleted"]["api_key"] == 3
    assert tenant_id(engine, "acme") is None and tenant_id(engine, "globex") is not None
    missing = _invoke("tenant", "delete", "acme", "--yes", env=env)
    assert missing.exit_code == 1 and "no tenant 'acme'" in missing.stderr
