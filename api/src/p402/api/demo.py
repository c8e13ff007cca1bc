"""``p402 demo``: the whole path on embedded defaults, with nothing to set up.

A throwaway SQLite ledger and the P402 server; a stand-in LLM provider serving recorded
responses; the real ``openai`` SDK making calls for Acme Corp's departments through the
instrumentation; the resulting spend, read back through the API.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

import httpx
from rich.console import Console
from rich.table import Table

from p402.api.app import create_app
from p402.api.server import BackgroundServer, port_is_free
from p402.instrumentation import P402Instrumentor, owner
from p402.instrumentation.testing import StandInProvider
from p402.ledger.database import connect
from p402.ledger.keys import Role, create_key

__all__ = ["run_demo"]

TENANT: Final = "Acme Corp"

# (department, employee, project, workflow, model, calls)
TRAFFIC: Final = (
    ("Engineering", "dana", "checkout", "code-review", "gpt-5-mini", 4),
    ("Marketing", "marco", "launch", "copywriting", "gpt-5-mini", 3),
    ("Legal", "alice", "phoenix", "contract-review", "gpt-5-mini", 2),
    ("Finance", "farid", "close", "variance-analysis", "gpt-5-mini", 1),
)


def _make_traffic(provider: StandInProvider, console: Console) -> int:
    from openai import OpenAI

    client = OpenAI(base_url=provider.url("/v1"), api_key="demo-key-not-sent-anywhere")
    calls = 0
    for department, employee, project, workflow, model, count in TRAFFIC:
        for index in range(count):
            with owner(
                department=department,
                employee=employee,
                project=project,
                workflow=workflow,
                session=f"{employee}-session-{index // 2}",
            ):
                client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": f"{workflow} request {index}"}],
                )
            calls += 1
        console.log(f"{department}: {count} call(s) through the real openai SDK")
    client.close()
    return calls


def _wait_for_events(api: httpx.Client, expected: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        total = api.get("/v1/spend").raise_for_status().json()["total"]
        if total["events"] >= expected:
            return
        time.sleep(0.1)
    raise RuntimeError(f"only {total['events']} of {expected} events reached the ledger")


def _spend_table(spend: dict[str, Any]) -> Table:
    table = Table(title=f"{TENANT}: spend by department and model")
    for column in ("department", "model", "events", "input tokens", "output tokens"):
        table.add_column(
            column, justify="right" if "tokens" in column or column == "events" else "left"
        )
    table.add_column("cost (USD)", justify="right")
    for row in spend["data"]:
        table.add_row(
            row["department"] or "-",
            row["model"] or "-",
            str(row["events"]),
            str(row["input_tokens"]),
            str(row["output_tokens"]),
            row["cost_usd"],
        )
    total = spend["total"]
    table.add_section()
    table.add_row(
        "total",
        "",
        str(total["events"]),
        str(total["input_tokens"]),
        str(total["output_tokens"]),
        total["cost_usd"],
    )
    return table


def run_demo(*, once: bool, port: int = 4318) -> int:
    out = Console(width=max(Console().width, 110))
    console = Console(stderr=True, soft_wrap=True)
    workdir = Path(tempfile.mkdtemp(prefix="p402-demo-"))
    database = workdir / "p402.db"
    engine = connect(f"sqlite:///{database}")
    app = create_app(engine)
    _, ingest_key = create_key(engine, tenant=TENANT, role=Role.INGEST)
    _, read_key = create_key(engine, tenant=TENANT, role=Role.READ)
    host = "127.0.0.1"
    server = BackgroundServer(app, host, port if port_is_free(host, port) else 0).start()
    console.log(f"P402 server on {server.url}, ledger {database}")
    provider = StandInProvider().start()
    console.log(f"stand-in LLM provider on {provider.base_url}")
    instrumentor = P402Instrumentor()
    instrumentor.instrument(
        endpoint=server.url, api_key=ingest_key, providers=f"openai={provider.url('/v1')}"
    )
    try:
        calls = _make_traffic(provider, console)
        instrumentor.force_flush()
        with httpx.Client(base_url=server.url, headers={"x-p402-api-key": read_key}) as api:
            _wait_for_events(api, calls)
            spend = api.get("/v1/spend", params={"group_by": "department,model"}).json()
        out.print(_spend_table(spend))
        console.print(
            f"\nWhere to look (read key, shown once): [bold]{read_key}[/]\n"
            f"  curl -H 'x-p402-api-key: {read_key}' "
            f"'{server.url}/v1/spend?group_by=department,model'\n"
            f"  curl -H 'x-p402-api-key: {read_key}' '{server.url}/v1/events?department=Legal'\n"
            f"  OpenAPI schema: {server.url}/schema\n"
        )
        if not once:
            console.print("Serving until interrupted (Ctrl-C).")
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
        return 0
    finally:
        instrumentor.uninstrument()
        provider.stop()
        server.stop()
