"""The API against its own OpenAPI schema (``/schema``), fuzzed with Schemathesis: whatever
the parameters, with a key of any role, no operation answers a server error (5xx) or a body
that its documented response schema does not allow (errors included)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from litestar.testing import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from p402.api import create_app
from p402.ledger.clock import now_ms, to_iso

EXAMPLES = 6  # per operation, role and generation mode: the whole run stays well under a minute
CHECKS = [not_a_server_error, response_schema_conformance]
ROLES = ("read", "ingest", "admin")
# Erasing the tenant would leave the other operations nothing but 401s to answer.
SKIPPED = {("DELETE", "/v1/tenant")}


@pytest.fixture
def quiet_app_logs() -> Iterator[None]:
    """The app logs every error it answers; hundreds of fuzzed 4xx need not be printed."""
    logger = logging.getLogger("litestar")
    disabled, logger.disabled = logger.disabled, True
    yield
    logger.disabled = disabled


def _seed(app, key: str) -> None:
    """A few events of the tenant, so that queries have something to group and page."""
    events = [
        {
            "id": f"fuzz-{n}",
            "timestamp": to_iso(now_ms() - n * 3_600_000),
            "provider": "openai",
            "operation": "chat",
            "model_used": "gpt-5-mini",
            "input_tokens": 100 + n,
            "output_tokens": 10,
            "department": ["legal", "sales"][n % 2],
            "session": f"s{n % 3}",
            "outcome": "accepted" if n % 4 == 0 else None,
        }
        for n in range(24)
    ]
    with TestClient(app) as client:
        response = client.post(
            "/v1/events",
            content=json.dumps(events),
            headers={"x-p402-api-key": key, "content-type": "application/json"},
        )
        assert response.status_code == 200, response.text


def _fuzz(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    headers: dict[str, str],
    answered: Counter[int],
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        answered[response.status_code] += 1

    fuzz()


def test_no_operation_answers_a_server_error_or_breaks_its_response_schema(
    engine, keys, quiet_app_logs
):
    app = create_app(engine, scheduler=False)
    _seed(app, keys["ingest"])
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {"/v1/spend", "/v1/spend/timeseries", "/v1/drift", "/v1/events"} <= {
        operation.path for operation in operations
    }
    failures: list[str] = []
    answered: Counter[int] = Counter()
    for operation in operations:
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        runs = [(role, GenerationMode.POSITIVE) for role in ROLES]
        if any(parameter.location == "query" for parameter in operation.iter_parameters()):
            # invalid values: parameters are checked before the key's role, admin reaches all
            runs.append(("admin", GenerationMode.NEGATIVE))
        for role, mode in runs:
            try:
                _fuzz(operation, mode, {"x-p402-api-key": keys[role]}, answered)
            except Exception as error:  # a failure group: report every operation's
                label = f"{operation.method.upper()} {operation.path} ({role}, {mode.value})"
                failures.append(f"{label}: {error}")
    assert not failures, "\n\n".join(failures)
    assert answered[200] > 0 and answered[400] > 0 and answered[403] > 0
