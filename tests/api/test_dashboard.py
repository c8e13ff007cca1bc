"""The finance dashboard at ``/``: the page and its assets over HTTP, and the page itself in a
real headless Chromium against a server holding a month of a tenant's data."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine

from p402.api import create_app
from p402.api.routes.dashboard import DASHBOARD_DIR, dashboard_assets, dashboard_page
from p402.api.scheduler import Scheduler
from p402.api.server import BackgroundServer
from p402.instrumentation.money import from_picos, to_picos, usd_str
from p402.instrumentation.pricing import compute_cost
from p402.instrumentation.usage import TokenUsage
from p402.instrumentation.vocabulary import BudgetPeriod
from p402.ledger.budgets import period_bounds
from p402.ledger.clock import now_ms, to_iso
from p402.ledger.database import connect, migrate
from p402.ledger.keys import Role, create_key

PANELS = (
    "kpis",
    "timeseries",
    "departments",
    "employees",
    "models",
    "budgets",
    "observations",
    "anomalies",
    "sessions",
)
ASSET = re.compile(r'(?:href|src)="(/dashboard/([\w.-]+)\?v=([0-9a-f]+))"')
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
XML_NAMESPACES = {"http://www.w3.org/2000/svg"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = connect(f"sqlite:///{tmp_path / 'p402.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def page_client(sqlite_engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_engine, scheduler=False)) as client:
        yield client


# --- the page and its assets ---------------------------------------------------------------


def test_the_page_is_public_html_with_every_panel(page_client):
    response = page_client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    for panel in PANELS:
        assert f'id="{panel}"' in response.text
    for heading in (
        "Projected month end",
        "Budgets at risk",
        "Departments",
        "Employee leaderboard",
        "Model mix",
        "Budgets and projections",
        "Routing observations",
        "Anomaly queue",
        "Session log",
    ):
        assert heading in response.text
    assert page_client.get("/v1/spend").status_code == 401


def test_the_page_allows_nothing_from_another_origin(page_client):
    policy = page_client.get("/").headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'"
    assert directives["frame-ancestors"] == "'none'"


def test_assets_are_served_with_their_content_types_and_cached_by_content(page_client):
    assets = ASSET.findall(page_client.get("/").text)
    assert {name for _, name, _ in assets} == {
        "dashboard.js",
        "dashboard.css",
        "favicon.svg",
    }
    for url, name, version in assets:
        response = page_client.get(url)
        assert response.status_code == 200, url
        expected_type = CONTENT_TYPES[Path(name).suffix]
        assert response.headers["content-type"].split(";")[0] == expected_type
        assert response.headers["x-content-type-options"] == "nosniff"
        cache = {part.strip() for part in response.headers["cache-control"].split(",")}
        assert {"public", "max-age=31536000", "immutable"} <= cache
        assert version == hashlib.sha256(response.content).hexdigest()[:16]
    for module in ("api.js", "format.js"):
        response = page_client.get(f"/dashboard/{module}")
        assert response.headers["content-type"].split(";")[0] == "text/javascript"
    assert page_client.get("/dashboard/missing.js").status_code == 404


def test_a_module_changed_by_a_release_is_fetched_anew_whichever_module_it_is(page_client):
    page = page_client.get("/").text
    (script,) = [url for url, name, _ in ASSET.findall(page) if name == "dashboard.js"]
    imports = re.findall(r'from "\./([\w.-]+\.js)\?v=([0-9a-f]+)"', page_client.get(script).text)
    assert {name for name, _ in imports} == {"api.js", "format.js"}
    for name, version in imports:  # versioned by what is served, so cached for a year
        module = page_client.get(f"/dashboard/{name}?v={version}")
        assert version == hashlib.sha256(module.content).hexdigest()[:16]
        assert "immutable" in module.headers["cache-control"]
    # Asked for with no version, or an old one, an asset is revalidated every time.
    for url in ("/dashboard/format.js", "/dashboard/format.js?v=0123456789abcdef"):
        response = page_client.get(url)
        assert response.headers["cache-control"] == "no-cache"
        etag = response.headers["etag"]
        unchanged = page_client.get(url, headers={"if-none-match": etag})
        assert (unchanged.status_code, unchanged.content) == (304, b"")
        assert page_client.get(url, headers={"if-none-match": '"0"'}).status_code == 200
    # The page is served at / only, with its security headers.
    for other in ("/dashboard/index.html", "/dashboard/..%2Fdashboard.py", "/dashboard/"):
        assert page_client.get(other).status_code == 404, other


def test_no_asset_refers_to_another_origin():
    files = sorted(path for path in DASHBOARD_DIR.iterdir() if path.is_file())
    assert {path.suffix for path in files} == {".html", ".js", ".css", ".svg"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        urls = set(re.findall(r"""(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s"'`)]*""", text))
        assert urls <= XML_NAMESPACES, f"{path.name} refers to {urls - XML_NAMESPACES}"
        assert not re.search(r"@import|url\(\s*['\"]?(?!data:)", text), path.name
        for module in re.findall(r"""from\s+["']([^"']+)["']""", text):
            assert module.startswith("./"), f"{path.name} imports {module}"


# --- a month of a tenant's data -------------------------------------------------------------

MINI = {
    "provider": "openai",
    "model_requested": "gpt-5-mini",
    "model_used": "gpt-5-mini-2025-08-07",
    "input_tokens": 1342,
    "output_tokens": 214,
    "cache_read_tokens": 1024,
    "reasoning_tokens": 192,
}
OPUS = {
    "provider": "anthropic",
    "model_requested": "claude-opus-4-5",
    "model_used": "claude-opus-4-5-20251101",
    "input_tokens": 800,
    "output_tokens": 120,
}
SONNET = {
    "provider": "anthropic",
    "model_requested": "claude-sonnet-4-5",
    "model_used": "claude-sonnet-4-5-20250929",
    "input_tokens": 2000,
    "output_tokens": 300,
}
FLASH = {
    "provider": "gcp.gemini",
    "model_requested": "gemini-2.5-flash",
    "model_used": "gemini-2.5-flash",
    "input_tokens": 3000,
    "output_tokens": 500,
}

# (department, employee, session, shape, events, task type); in time order
SESSIONS: list[tuple[str, str, str, dict[str, Any], int, str | None]] = [
    ("finance", "farid", "sess-farid-1", MINI, 4, None),
    ("marketing", "dana", "sess-dana-1", FLASH, 3, None),
    *(("legal", "alice", f"sess-alice-{n}", MINI, 1, None) for n in range(1, 6)),
    ("engineering", "eve", "sess-eve-1", SONNET, 5, None),
    ("marketing", "dana", "sess-dana-2", FLASH, 3, None),
    ("legal", "alice", "sess-alice-6", MINI, 10, None),
    *(("legal", "carol", f"sess-carol-{n}", MINI, 10, "contract_analysis") for n in (1, 2, 3)),
    *(("engineering", "bob", f"sess-bob-{n}", OPUS, 10, "contract_analysis") for n in (1, 2, 3)),
]


def _cost_picos(shape: dict[str, Any], at_ms: int) -> int:
    usage = TokenUsage(
        input_tokens=shape["input_tokens"],
        output_tokens=shape["output_tokens"],
        cache_read_tokens=shape.get("cache_read_tokens"),
        reasoning_tokens=shape.get("reasoning_tokens"),
    )
    cost = compute_cost(
        usage,
        model=shape["model_used"],
        provider=shape["provider"],
        at=datetime.fromtimestamp(at_ms / 1000, tz=UTC),
    )
    assert cost is not None, shape
    return to_picos(cost)


def _seed_events(now: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """This month's events, spread from the start of the month to now, and the expected
    cost in picodollars per department, employee and model, priced here independently."""
    month_start, _ = period_bounds(BudgetPeriod.MONTH, now)
    count = sum(session[4] for session in SESSIONS)
    events: list[dict[str, Any]] = []
    expected: dict[str, int] = defaultdict(int)
    for department, employee, session, shape, size, task_type in SESSIONS:
        for _ in range(size):
            at = month_start + (now - month_start) * (len(events) + 1) // (count + 1)
            event = {
                "id": f"{session}-{len(events):03d}",
                "timestamp": to_iso(at),
                "operation": "chat",
                **shape,
                "department": department,
                "employee": employee,
                "session": session,
                "project": "phoenix" if department == "legal" else None,
                "task_type": task_type,
            }
            events.append({name: value for name, value in event.items() if value is not None})
            cost = _cost_picos(shape, at)
            for key in (f"department:{department}", f"employee:{employee}", "total"):
                expected[key] += cost
            expected[f"model:{shape['model_used']}"] += cost
    return events, expected


def _usd(picos: int) -> str:
    return usd_str(from_picos(picos))


class Api:
    """The seeded server's API, with a key of each role."""

    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.url = url
        self.keys = keys
        self.http = httpx.Client(base_url=url, timeout=30)

    def send(self, method: str, path: str, role: str, body: Any = None) -> Any:
        response = self.http.request(
            method,
            path,
            content=None if body is None else json.dumps(body),
            headers={
                "authorization": f"Bearer {self.keys[role]}",
                "content-type": "application/json",
            },
        )
        assert response.status_code == 200, (path, response.text)
        return response.json()

    def read(self, path: str, **params: Any) -> Any:
        response = self.http.get(
            path, params=params, headers={"authorization": f"Bearer {self.keys['read']}"}
        )
        assert response.status_code == 200, (path, response.text)
        return response.json()


def _seed(api: Api, engine: Engine) -> dict[str, int]:
    """Events, outcomes, budgets, anomalies, observations and sealed sessions for one tenant,
    each through its own write path."""
    now = now_ms()
    events, expected = _seed_events(now)
    assert api.send("POST", "/v1/events", "ingest", events) == {
        "accepted": len(events),
        "inserted": len(events),
    }
    outcomes = [
        {
            "event_id": event["id"],
            "outcome": "accepted" if index % 6 else "revised",
            "quality_score": 0.9 if event["model_requested"] == "gpt-5-mini" else 0.92,
        }
        for index, event in enumerate(events)
        if event.get("task_type") == "contract_analysis"
    ]
    assert api.send("POST", "/v1/outcomes", "ingest", outcomes)["accepted"] == len(outcomes)
    api.send(
        "PUT",
        "/v1/budgets",
        "admin",
        [
            {"scope": "organization", "cap_usd": "1.00", "action_at_cap": "notify"},
            {
                "scope": "department",
                "name": "engineering",
                "cap_usd": "0.25",
                "action_at_cap": "downgrade",
                "downgrade_model": "gpt-5-mini",
            },
            {"scope": "department", "name": "legal", "cap_usd": "2.50", "action_at_cap": "block"},
        ],
    )
    scheduler = Scheduler(engine)
    assert scheduler.run_once("anomalies").ran
    assert scheduler.run_once("observations").ran
    for session in dict.fromkeys(event["session"] for event in events):
        api.send("POST", f"/v1/sessions/{session}/close", "ingest")
    return expected


# --- the page in a real browser -------------------------------------------------------------


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium driven through chromedriver, its console log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--window-size=1440,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _wait(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _cells(driver: Any, selector: str) -> list[list[str]]:
    """The text of each cell of the rows matching ``selector``."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(row => [...row.cells].map(cell => cell.textContent.trim()));",
        selector,
    )


def _usd_values(driver: Any, selector: str) -> list[str]:
    """The exact amounts (``data-usd``) shown in the elements matching ``selector``."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.dataset.usd);", selector
    )


def _loaded(driver: Any) -> dict[str, str]:
    """Wait until every panel has been drawn; each panel's state."""
    _wait(
        lambda: driver.execute_script("return document.body.dataset.loaded === 'true'"),
        "every panel to load",
    )
    return driver.execute_script(
        "return Object.fromEntries(arguments[0].map("
        "id => [id, document.getElementById(id).dataset.state]));",
        list(PANELS),
    )


def _console_problems(driver: Any) -> list[str]:
    """Errors and warnings the page logged (failed requests, CSP violations, exceptions)."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] in {"SEVERE", "WARNING"}
    ]


@needs_chromium
def test_every_panel_shows_the_tenants_figures_in_a_real_browser(tmp_path, sqlite_engine, driver):
    from selenium.webdriver.common.by import By

    keys = {
        role.value: create_key(sqlite_engine, tenant="Acme Corp", role=role)[1] for role in Role
    }
    with BackgroundServer(create_app(sqlite_engine, scheduler=False)) as server:
        api = Api(server.url, keys)
        expected = _seed(api, sqlite_engine)
        departments = api.read("/v1/spend", group_by="department", **_this_month())
        budgets = {(b["scope"], b["name"]): b for b in api.read("/v1/budgets")["data"]}
        sessions = api.read("/v1/sessions", limit=20, **_this_month())["data"]

        driver.get(f"{server.url}/#key={keys['read']}")
        assert _loaded(driver) == dict.fromkeys(PANELS, "ready")
        # the key left the address bar and stayed in this tab only
        assert driver.execute_script("return location.hash") == ""
        assert (
            driver.execute_script("return sessionStorage.getItem('p402.dashboard.key')")
            == (keys["read"])
        )

        # KPIs: this month's total, exact to the picodollar, and the budgets at risk
        assert _usd_values(driver, "#kpi-spend .usd") == [_usd(expected["total"])]
        assert departments["total"]["cost_usd"] == _usd(expected["total"])
        events_kpi = driver.find_element(By.CSS_SELECTOR, "#kpi-events .figure").text
        assert events_kpi == str(sum(session[4] for session in SESSIONS))
        # the projection, as the organisation's budget row states it; it falls as time
        # passes at a fixed spend, so it lies between the API's figures before and after
        (projected,) = _usd_values(driver, "#kpi-projection .usd")
        organisation_row = '#budgets tr[data-scope="organization"] .usd'
        assert _usd_values(driver, organisation_row)[3] == projected
        later = {b["scope"]: b for b in api.read("/v1/budgets")["data"]}["organization"]
        (before,) = [b["projected_usd"] for b in budgets.values() if b["scope"] == "organization"]
        assert Decimal(before) >= Decimal(projected) >= Decimal(later["projected_usd"])
        at_risk = sum(b["status"] != "ok" for b in budgets.values())
        budgets_kpi = driver.find_element(By.CSS_SELECTOR, "#kpi-budgets .figure").text
        assert budgets_kpi == f"{at_risk} of 3"
        # projected over the cap, whatever the status (an exceeded budget can be too)
        over = sum(
            Decimal(b["projected_usd"]) > Decimal(b["cap_usd"])
            for b in budgets.values()
            if b["projected_usd"] is not None
        )
        budgets_note = driver.find_element(By.CSS_SELECTOR, "#kpi-budgets .note").text
        assert budgets_note.endswith(f" · {over} projected over the cap")

        # departments: engineering on top, with its exact spend and share of the total
        rows = _cells(driver, "#departments tbody tr")
        assert [row[0] for row in rows] == [r["department"] for r in departments["data"]]
        assert rows[0][0] == "engineering"
        top = _usd_values(driver, "#departments tbody tr:first-child .usd")
        assert top == [_usd(expected["department:engineering"])]
        assert _usd_values(driver, '#departments tr[data-department="legal"] .usd') == [
            _usd(expected["department:legal"])
        ]

        # leaderboard: every employee, most costly first, by the independently priced cost
        rows = _cells(driver, "#employees tbody tr")
        by_cost = sorted(
            (key.split(":", 1)[1] for key in expected if key.startswith("employee:")),
            key=lambda employee: -expected[f"employee:{employee}"],
        )
        assert [row[1] for row in rows] == by_cost
        assert by_cost[0] == "bob"
        assert _usd_values(driver, '#employees tr[data-employee="bob"] .usd') == [
            _usd(expected["employee:bob"])
        ]

        # model mix: every model used, each with its exact spend
        for model in ("gpt-5-mini-2025-08-07", "claude-opus-4-5-20251101"):
            assert _usd_values(driver, f'#models tr[data-model="{model}"] .usd') == [
                _usd(expected[f"model:{model}"])
            ]
        assert len(_cells(driver, "#models tbody tr")) == 4

        # budgets: each budget's figures and status as the API states them
        engineering = budgets[("department", "engineering")]
        row = '#budgets tr[data-scope="department"][data-name="engineering"]'
        assert _usd_values(driver, f"{row} .usd")[:2] == [
            engineering["spent_usd"],
            engineering["cap_usd"],
        ]
        assert engineering["spent_usd"] == _usd(expected["department:engineering"])
        status = driver.find_element(By.CSS_SELECTOR, f"{row} .badge").text
        assert status == engineering["status"].replace("_", " ")

        # daily spend: one bar per day with spend, the highest day on top
        bars = _usd_values(driver, "#timeseries rect.bar-day")
        daily = api.read("/v1/spend/timeseries", interval="day", **_this_month())["data"]
        assert sorted(bars) == sorted(d["cost_usd"] for d in daily if d["events"])

        # routing observations: the measured comparison of economy and premium tiers
        observation = driver.find_element(
            By.CSS_SELECTOR, '#observations [data-task-type="contract_analysis"]'
        )
        assert "economy matches premium" in observation.text
        tiers = _cells(driver, "#observations tbody tr")
        assert [(row[0], row[2], row[7]) for row in tiers] == [
            ("economy", "30", "30"),
            ("premium", "30", "30"),
        ]

        # anomaly queue: alice's tenfold session, open
        rows = _cells(driver, "#anomalies tbody tr")
        assert len(rows) == 1
        assert rows[0][1:4] == ["sess-alice-6", "alice", "legal"]
        assert rows[0][6:] == ["10\N{MULTIPLICATION SIGN}", "open"]

        # session log: the most costly sessions first, each linked to its receipt as JSON
        # and PDF
        rows = driver.find_elements(By.CSS_SELECTOR, "#sessions tbody tr[data-receipt]")
        assert [r.get_attribute("data-session") for r in rows] == [s["session"] for s in sessions]
        assert len(rows) == len({session[2] for session in SESSIONS})
        top = sessions[0]
        assert top["session"] == "sess-bob-1"
        (receipt,) = api.read("/v1/receipts", session=top["session"])["data"]
        assert rows[0].get_attribute("data-receipt") == receipt["id"]
        links = rows[0].find_elements(By.CSS_SELECTOR, "a.receipt-link")
        assert [link.get_attribute("href") for link in links] == [
            f"{server.url}/v1/receipts/{receipt['id']}",
            f"{server.url}/v1/receipts/{receipt['id']}.pdf",
        ]
        assert _usd_values(driver, "#sessions tbody tr:first-child .usd") == [
            top["cost_usd"],
        ]
        assert receipt["receipt"]["cost_usd"] == top["cost_usd"]
        badges = [r.find_element(By.CSS_SELECTOR, ".badge").text for r in rows]
        assert badges == [s["receipt_status"] for s in sessions]
        # a session opens onto its events
        rows[0].find_element(By.CSS_SELECTOR, "button.link").click()
        events = _wait(
            lambda: _cells(driver, "#sessions tr.session-events tbody tr"),
            "the session's events",
        )
        assert len(events) == top["events"] == receipt["receipt"]["events"]["count"]

        screenshot = tmp_path / "dashboard.png"
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1440, height + 40)
        driver.execute_script("window.scrollTo(0, 0)")
        assert driver.save_screenshot(str(screenshot))
        print(f"dashboard screenshot: {screenshot}")

        # Months changed quickly: the answers for the month left behind come late (1.5 s),
        # and never replace those of the month shown.
        this_month = _this_month()["from"][:7]
        year, month = map(int, this_month.split("-"))
        previous = f"{year - (month == 1)}-{(month - 2) % 12 + 1:02d}"
        driver.execute_script(
            """
            const marker = arguments[0], real = window.fetch.bind(window);
            window.fetch = (input, init) => String(input instanceof Request ? input.url : input)
              .includes(marker)
              ? new Promise((done) => setTimeout(done, 1500)).then(() => real(input, init))
              : real(input, init);
            const box = document.getElementById("month");
            for (const value of [arguments[1], arguments[2]]) {
              box.value = value;
              box.dispatchEvent(new Event("change"));
            }
            """,
            f"from={previous}-01",
            previous,
            this_month,
        )
        time.sleep(2.5)  # the late answers have come by now
        assert _loaded(driver) == dict.fromkeys(PANELS, "ready")
        assert _usd_values(driver, "#kpi-spend .usd") == [_usd(expected["total"])]
        assert [row[0] for row in _cells(driver, "#departments tbody tr")] == [
            r["department"] for r in departments["data"]
        ]
        # a past month: the budgets KPI does not show today's budgets as that month's
        driver.execute_script(
            "const box = document.getElementById('month'); box.value = arguments[0];"
            "box.dispatchEvent(new Event('change'));",
            previous,
        )
        _wait(
            lambda: (
                driver.find_element(By.CSS_SELECTOR, "#kpi-budgets .note").text
                == "budgets stand for the current month"
            ),
            "the budgets KPI of a past month",
        )

        assert _console_problems(driver) == []
        api.http.close()


def _key_prompt_message(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    def shown() -> str:
        if not driver.find_element(By.ID, "key-prompt").is_displayed():
            return ""
        return str(driver.find_element(By.ID, "key-message").text)

    return str(_wait(shown, "the key prompt"))


def _enter_key(driver: Any, key: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "key-input")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()


@needs_chromium
def test_a_new_tenant_sees_no_data_yet_once_it_gives_a_read_key(sqlite_engine, driver):
    from selenium.webdriver.common.by import By

    read = create_key(sqlite_engine, tenant="Initech", role=Role.READ)[1]
    ingest = create_key(sqlite_engine, tenant="Initech", role=Role.INGEST)[1]
    with BackgroundServer(create_app(sqlite_engine, scheduler=False)) as server:
        driver.get(f"{server.url}/#key=p402_not_a_key")
        assert "not accepted" in _key_prompt_message(driver)
        assert driver.find_element(By.ID, "dashboard").is_displayed() is False
        assert driver.execute_script("return sessionStorage.getItem('p402.dashboard.key')") is None

        _enter_key(driver, ingest)
        _wait(lambda: "read role" in _key_prompt_message(driver), "the role refusal")

        _enter_key(driver, read)
        assert _loaded(driver) == {"kpis": "empty"} | dict.fromkeys(PANELS[1:], "empty")
        assert _usd_values(driver, "#kpi-spend .usd") == ["0"]
        assert driver.find_element(By.CSS_SELECTOR, "#kpi-events .figure").text == "0"
        assert "No spend recorded" in driver.find_element(By.ID, "departments").text
        assert "No budgets set yet" in driver.find_element(By.ID, "budgets").text
        assert "No anomalous sessions" in driver.find_element(By.ID, "anomalies").text
        assert "No sessions recorded" in driver.find_element(By.ID, "sessions").text


@needs_chromium
def test_each_panel_says_when_the_server_lacks_its_route(driver):
    from selenium.webdriver.common.by import By

    bare = Litestar(route_handlers=[dashboard_page, dashboard_assets])
    with BackgroundServer(bare) as server:
        driver.get(f"{server.url}/#key=p402_any")
        assert _loaded(driver) == dict.fromkeys(PANELS, "unavailable")
        for panel in PANELS[1:]:
            assert "not available" in driver.find_element(By.ID, panel).text.lower()
        kpi = driver.find_element(By.ID, "kpi-spend")
        assert kpi.find_element(By.CSS_SELECTOR, ".figure").text == "—"
        assert "not available" in kpi.text.lower()


def _this_month() -> dict[str, str]:
    start, end = period_bounds(BudgetPeriod.MONTH, now_ms())
    return {"from": to_iso(start)[:10], "to": to_iso(end)[:10]}
