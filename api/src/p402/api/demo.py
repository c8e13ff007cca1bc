"""``p402 demo``: Acme Corp's month on P402, with nothing to set up (SPEC §10).

A throwaway SQLite ledger and the P402 server (API, receiver and scheduler); a stand-in LLM
provider serving recorded responses; then, in order:

1. Acme's department policies and budgets (:mod:`p402.api.demo_story`), set through the API;
2. a month of history, sent as meter-only events;
3. live traffic made by the real ``openai`` and ``anthropic`` SDKs through the
   instrumentation, with enforcement on: calls allowed, one downgraded (Marketing asks for a
   premium model above its ceiling), two refused with HTTP 402 (Legal below its floor, and the
   Globex engagement past its $50 cap);
4. the scheduler's jobs: alerts (Marketing past 80 % and 90 % of its cap), anomalies (Bob's
   session far above his usual), routing observations;
5. Legal's session closed into a receipt, anchored on the embedded chain (in-process and
   ephemeral), and its proof verified like ``p402 verify`` does;
6. a guide to what to open.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import ROUND_UP, Decimal
from pathlib import Path
from typing import Any, Final

import httpx
from rich.console import Console
from rich.table import Table

from p402.api import demo_story as story
from p402.api.app import create_app
from p402.api.server import BackgroundServer, port_is_free
from p402.instrumentation import P402Instrumentor, owner
from p402.instrumentation.testing import StandInProvider
from p402.instrumentation.vocabulary import API_KEY_HEADER
from p402.ledger.database import connect
from p402.ledger.keys import Role, create_key

__all__ = ["run_demo"]

_EVENTS_PER_REQUEST: Final = 1000
_SDK_KEY: Final = "demo-key-not-sent-anywhere"


class _Api:
    """The demo's API calls, one client per key role."""

    def __init__(self, url: str, keys: dict[Role, str]) -> None:
        self.clients = {
            role: httpx.Client(base_url=url, headers={API_KEY_HEADER: key}, timeout=60)
            for role, key in keys.items()
        }

    def get(self, path: str, **params: Any) -> Any:
        return self.clients[Role.READ].get(path, params=params).raise_for_status().json()

    def put(self, path: str, body: Any) -> Any:
        return self.clients[Role.ADMIN].put(path, json=body).raise_for_status().json()

    def post(self, path: str, body: Any, role: Role = Role.INGEST) -> Any:
        return self.clients[role].post(path, json=body).raise_for_status().json()

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def _load_history(api: _Api, now: datetime, console: Console) -> int:
    batch: list[dict[str, Any]] = []
    sent = 0

    def flush() -> None:
        nonlocal sent
        api.post("/v1/events", batch)
        sent += len(batch)
        console.log(f"history: {sent} events sent")
        batch.clear()

    for event in story.history(now):
        batch.append(event)
        if len(batch) == _EVENTS_PER_REQUEST:
            flush()
    if batch:
        flush()
    return sent


def _month_spend(api: _Api, now: datetime, group_by: str) -> list[dict[str, Any]]:
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    rows: list[dict[str, Any]] = api.get(
        "/v1/spend", group_by=group_by, **{"from": month_start.isoformat()}
    )["data"]
    return rows


def _set_policies_and_budgets(api: _Api, now: datetime) -> None:
    api.put("/v1/policies", list(story.POLICIES))
    by_department = {
        row["department"]: Decimal(row["cost_usd"]) for row in _month_spend(api, now, "department")
    }
    marketing_cap = (by_department["Marketing"] / story.MARKETING_CONSUMED).quantize(
        Decimal("0.01"), rounding=ROUND_UP
    )
    organization_cap = (sum(by_department.values(), Decimal(0)) * 3).quantize(Decimal("1"))
    api.put(
        "/v1/budgets",
        [
            {
                "scope": "organization",
                "name": "",
                "cap_usd": str(organization_cap),
                "action_at_cap": "notify",
            },
            {
                "scope": "department",
                "name": "Marketing",
                "cap_usd": str(marketing_cap),
                "action_at_cap": "downgrade",
                "downgrade_model": "gpt-4.1-mini",
            },
            {
                "scope": "department",
                "name": "Engineering",
                "cap_usd": str((by_department["Engineering"] * 2).quantize(Decimal("1"))),
                "action_at_cap": "notify",
            },
            {
                "scope": "project",
                "name": story.ENGAGEMENT,
                "cap_usd": str(story.ENGAGEMENT_CAP_USD),
                "action_at_cap": "block",
            },
        ],
    )


def _attempt(console: Console, label: str, call: Callable[[], Any]) -> str:
    """Make one SDK call; what became of it."""
    try:
        response = call()
    except Exception as error:  # the SDKs' status errors
        status = getattr(error, "status_code", None)
        if status == 402:
            console.log(f"{label}: refused with HTTP 402 ({type(error).__name__})")
            return "blocked"
        raise
    model = getattr(response, "model", "?")
    console.log(f"{label}: answered by {model}")
    return "allowed"


def _live_traffic(provider: StandInProvider, console: Console) -> int:
    from anthropic import Anthropic
    from openai import OpenAI

    openai = OpenAI(base_url=provider.url("/v1"), api_key=_SDK_KEY, max_retries=0)
    anthropic = Anthropic(base_url=provider.url("/anthropic"), api_key=_SDK_KEY, max_retries=0)

    def chat(model: str, text: str) -> Callable[[], Any]:
        return lambda: openai.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}]
        )

    def message(model: str, text: str) -> Callable[[], Any]:
        return lambda: anthropic.messages.create(
            model=model, max_tokens=1024, messages=[{"role": "user", "content": text}]
        )

    calls = [
        (
            {
                "department": "Engineering",
                "employee": "dana",
                "project": "checkout",
                "workflow": "code-review",
                "task_type": "code_review",
                "session": "dana-live",
            },
            "Engineering, claude-sonnet-4-5, code review",
            message("claude-sonnet-4-5", "Review this diff"),
        ),
        (
            {
                "department": "Engineering",
                "employee": "eve",
                "project": "checkout",
                "workflow": "code-review",
                "task_type": "code_review",
                "session": "eve-live",
            },
            "Engineering, gpt-5-mini, code review",
            chat("gpt-5-mini", "Explain this stack trace"),
        ),
        (
            {
                "department": "Marketing",
                "employee": "marco",
                "project": "autumn-launch",
                "workflow": "copywriting",
                "task_type": "copy",
                "session": "marco-live",
            },
            "Marketing asks for claude-opus-4-1 (above its ceiling)",
            message("claude-opus-4-1", "Write the launch e-mail"),
        ),
        (
            {
                "department": "Legal",
                "employee": "alice",
                "project": "phoenix",
                "workflow": "contract-review",
                "task_type": "contract_analysis",
                "session": "alice-phoenix-live",
            },
            "Legal asks for claude-haiku-4-5 (below its floor)",
            message("claude-haiku-4-5", "Summarise clause 7"),
        ),
        (
            {
                "department": "Legal",
                "employee": "alice",
                "project": "phoenix",
                "workflow": "contract-review",
                "task_type": "contract_analysis",
                "session": "alice-phoenix-live",
            },
            "Legal, claude-sonnet-4-5, contract review",
            message("claude-sonnet-4-5", "Summarise clause 7"),
        ),
        (
            {
                "department": "Engineering",
                "employee": "dana",
                "project": story.ENGAGEMENT,
                "client": "Globex",
                "workflow": "code-review",
                "task_type": "code_review",
                "session": "dana-globex-live",
            },
            "Globex engagement (past its $50 cap)",
            chat("gpt-5-mini", "Draft the Globex status report"),
        ),
        (
            {
                "department": "Finance",
                "employee": "farid",
                "project": "month-end-close",
                "workflow": "variance-analysis",
                "task_type": "analysis",
                "session": "farid-live",
            },
            "Finance, gpt-5-mini, variance analysis",
            chat("gpt-5-mini", "Explain the October variance"),
        ),
    ]
    for owners, label, call in calls:
        with owner(**owners):
            _attempt(console, label, call)
    openai.close()
    anthropic.close()
    return len(calls)


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _run_jobs(app: Any, names: Iterable[str], console: Console) -> None:
    scheduler = app.state.scheduler
    for name in names:
        if name in scheduler.jobs:
            scheduler.run_once(name)
            console.log(f"scheduler: ran {name}")


def _table(title: str, columns: list[str], rows: Iterable[Iterable[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        numeric = column.endswith(("USD", "events", "%", "ratio"))
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*("-" if cell in (None, "") else str(cell) for cell in row))
    return table


def _report(api: _Api, out: Console, now: datetime) -> None:
    spend = api.get("/v1/spend", group_by="department")
    out.print(
        _table(
            f"{story.TENANT}: spend by department, last 30 days and today",
            ["department", "events", "cost USD"],
            [(r["department"], r["events"], r["cost_usd"]) for r in spend["data"]],
        )
    )
    out.print(f"total: {spend['total']['cost_usd']} USD over {spend['total']['events']} events\n")
    budgets = api.get("/v1/budgets")["data"]
    out.print(
        _table(
            "budgets this month",
            [
                "scope",
                "name",
                "cap USD",
                "spent USD",
                "consumed %",
                "projected USD",
                "status",
                "at cap",
            ],
            [
                (
                    b["scope"],
                    b["name"],
                    b["cap_usd"],
                    b["spent_usd"],
                    b["consumed_pct"],
                    b["projected_usd"],
                    b["status"],
                    b["action_at_cap"],
                )
                for b in budgets
            ],
        )
    )
    decided = [
        e
        for result in ("downgraded", "blocked")
        for e in api.get("/v1/events", policy_result=result)["data"]
    ]
    out.print(
        _table(
            "calls the policies changed",
            ["department", "project", "asked for", "sent as", "result", "reason"],
            [
                (
                    e["department"],
                    e["project"],
                    e["model_original"] or e["model_requested"],
                    e["model_requested"] if e["policy_result"] == "downgraded" else "-",
                    e["policy_result"],
                    e["policy_reason"],
                )
                for e in decided
            ],
        )
    )
    alerts = api.get("/v1/alerts")["data"]
    out.print(
        _table(
            "alerts",
            ["scope", "name", "threshold", "spent USD", "cap USD", "projected USD"],
            [
                (
                    a["scope"],
                    a["name"],
                    a["threshold"],
                    a["spent_usd"],
                    a["cap_usd"],
                    a["projected_usd"],
                )
                for a in alerts
            ],
        )
    )
    anomalies = api.get("/v1/anomalies")["data"]
    out.print(
        _table(
            "anomalies (review queue; never blocked)",
            ["session", "employee", "cost USD", "usual USD", "ratio", "status"],
            [
                (
                    a["session"],
                    a["employee"],
                    a["cost_usd"],
                    a["baseline_usd"],
                    a["ratio"],
                    a["status"],
                )
                for a in anomalies
            ],
        )
    )


def _settle_and_verify(api: _Api, engine: Any, session: str, console: Console) -> str:
    from p402.settlement.jobs import (
        configured_chain,
        seal_idle_sessions,
        settle_on_configured_chain,
    )
    from p402.settlement.verify import verify_bundle

    sealed = seal_idle_sessions(engine)
    console.log(f"receipts: {len(sealed)} idle sessions of the history sealed")
    receipt = api.post(f"/v1/sessions/{session}/close", {})
    receipt_id = str(receipt["id"])
    console.log(f"session {session} closed: receipt {receipt_id}")
    proof: dict[str, Any] = {}

    def anchored() -> bool:
        nonlocal proof
        settle_on_configured_chain(engine)
        response = api.clients[Role.READ].get(f"/v1/receipts/{receipt_id}/proof")
        if response.status_code != 200:
            return False
        proof = response.json()
        return bool(proof.get("anchor"))

    _wait_for("the receipt's anchor", anchored, timeout=120)
    anchor = proof["anchor"]
    console.log(
        f"receipt {receipt_id} is leaf {proof['leaf_index']} of the {proof['tree_size']} "
        f"of batch {proof['batch_seq']}, anchored in tx {anchor['tx_hash']} "
        f"(block {anchor['block_number']}, embedded chain {anchor['chain_id']})"
    )
    chain = configured_chain()
    checks = verify_bundle(proof, chain.w3, submitter=chain.submitter)  # the demo's own key
    for check in checks:
        console.log(f"verify: {check.name}: ok ({check.detail})")
    return receipt_id


def run_demo(*, once: bool, port: int = 4318) -> int:
    out = Console(width=max(Console().width, 120))
    console = Console(stderr=True, width=max(Console(stderr=True).width, 160), log_path=False)
    workdir = Path(tempfile.mkdtemp(prefix="p402-demo-"))
    database = workdir / "p402.db"
    engine = connect(f"sqlite:///{database}")
    app = create_app(engine, scheduler=True)
    keys = {role: create_key(engine, tenant=story.TENANT, role=role)[1] for role in Role}
    host = "127.0.0.1"
    server = BackgroundServer(app, host, port if port_is_free(host, port) else 0).start()
    console.log(f"P402 server on {server.url}, ledger {database}")
    provider = StandInProvider().start()
    console.log(f"stand-in LLM provider on {provider.base_url}")
    api = _Api(server.url, keys)
    instrumentor = P402Instrumentor()
    now = datetime.now(UTC)
    try:
        history = _load_history(api, now, console)
        _set_policies_and_budgets(api, now)
        console.log("policies and budgets set for Engineering, Legal, Marketing and Finance")
        instrumentor.instrument(
            endpoint=server.url,
            api_key=keys[Role.INGEST],
            providers=f"openai={provider.url('/v1')},anthropic={provider.url('/anthropic')}",
            enforcement="cached",
        )
        calls = _live_traffic(provider, console)
        instrumentor.force_flush()
        _wait_for(
            "the live events",
            lambda: api.get("/v1/spend")["total"]["events"] >= history + calls,
        )
        _run_jobs(app, ("alerts", "anomalies", "observations"), console)
        receipt_id = _settle_and_verify(api, engine, "alice-phoenix-live", console)
        _report(api, out, now)
        if once:
            console.print(
                "\nThe demo ran with --once: its server and its embedded chain stop now. Run "
                "`p402 demo` without --once to keep them, with the links to look around."
            )
            return 0
        read_key = keys[Role.READ]
        header = f"-H 'x-p402-api-key: {read_key}'"
        receipt = f"{server.url}/v1/receipts/{receipt_id}"
        console.print(  # not wrapped: every line can be copied whole
            f"\nWhere to look (the read key is shown once): [bold]{read_key}[/]\n"
            f"  dashboard:  {server.url}/#key={read_key}\n"
            f"  spend:      curl {header} '{server.url}/v1/spend?group_by=department,model'\n"
            f"  budgets:    curl {header} '{server.url}/v1/budgets'\n"
            f"  receipt:    curl {header} '{receipt}.pdf' -o receipt.pdf\n"
            f"  its proof:  curl {header} '{receipt}/proof' > proof.json\n"
            f"  OpenAPI:    {server.url}/schema\n"
            "The embedded chain lives in this process only: it is gone when the demo stops.",
            soft_wrap=True,
        )
        console.print("Serving until interrupted (Ctrl-C).")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        return 0
    finally:
        instrumentor.uninstrument()
        api.close()
        provider.stop()
        server.stop()
