"""``opentelemetry-instrument python app.py`` enables P402 with no code change."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from p402.api import create_app
from p402.api.server import BackgroundServer
from p402.ledger.keys import Role, create_key

APP = """
from openai import OpenAI

client = OpenAI(base_url="{base_url}", api_key="sk-test")
messages = [{{"role": "user", "content": "hi"}}]
for _ in range(3):
    client.chat.completions.create(model="gpt-5-mini", messages=messages)
print("done")
"""


def _run_instrumented(app: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """``opentelemetry-instrument python app`` with ``settings`` and no OTel exporter."""
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        **settings,
    }
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    return subprocess.run(
        [str(instrument), sys.executable, str(app)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_an_unmodified_app_under_opentelemetry_instrument_is_metered(engine, standin, tmp_path):
    _, ingest_key = create_key(engine, tenant="acme", role=Role.INGEST)
    _, read_key = create_key(engine, tenant="acme", role=Role.READ)
    app = tmp_path / "app.py"
    app.write_text(APP.format(base_url=standin.url("/v1")))
    with BackgroundServer(create_app(engine)) as server:
        result = _run_instrumented(
            app,
            P402_ENDPOINT=server.url,
            P402_API_KEY=ingest_key,
            P402_PROVIDERS=f"openai={standin.url('/v1')}",
            P402_OWNER_DEPARTMENT="engineering",
            P402_SPOOL_DIR=str(tmp_path / "spool"),
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "done"
        with httpx.Client(base_url=server.url, headers={"x-p402-api-key": read_key}) as api:
            deadline = time.monotonic() + 20
            events = api.get("/v1/events").json()["data"]
            while len(events) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
                events = api.get("/v1/events").json()["data"]
    assert len(events) == 3
    assert {event["department"] for event in events} == {"engineering"}
    assert {event["cost_usd"] for event in events} == {"0.0005331"}


OTHER_INSTRUMENTATION_APP = """
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from p402.instrumentation import P402Instrumentor

print("httpx instrumented:", HTTPXClientInstrumentor().is_instrumented_by_opentelemetry)
print("p402 instrumented:", P402Instrumentor().is_instrumented_by_opentelemetry)
"""


def test_a_setting_p402_cannot_use_leaves_the_app_and_other_instrumentations_running(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(OTHER_INSTRUMENTATION_APP)
    result = _run_instrumented(
        app, P402_ENDPOINT="ftp://p402.internal", P402_SPOOL_DIR=str(tmp_path / "spool")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["httpx instrumented: True", "p402 instrumented: False"]
    assert result.stderr.splitlines() == [
        "P402 is not metering this process: P402_ENDPOINT='ftp://p402.internal' is not the "
        "http:// or https:// URL of a P402 server"
    ]
