"""The key is checked before the request is read: 401 and 403 come first, whatever the body."""

from __future__ import annotations

import re

import pytest

from p402.api import create_app
from p402.ledger.keys import Role

MALFORMED = b'{"not json'


def _keyed_routes() -> list[tuple[str, str, Role]]:
    """Every route that needs a key of a role: (method, path with its parameters filled, role)."""
    app = create_app(scheduler=False, database_url="sqlite://")
    routes = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            role = handler.opt.get("role")
            if role is None:
                continue
            path = re.sub(r"\{[a-z_]+:[a-z]+\}", "x", route.path)
            routes.extend((method, path, Role(role)) for method in sorted(handler.http_methods))
    return sorted(set(routes))


KEYED_ROUTES = _keyed_routes()


def test_the_routes_include_those_with_bodies_read_before_their_handler():
    bodies = {
        ("POST", "/v1/keys"),
        ("POST", "/v1/anomalies/x/review"),
        ("PUT", "/v1/settings"),
        ("PUT", "/v1/imports/mappings"),
    }
    assert bodies <= {(method, path) for method, path, _ in KEYED_ROUTES}


@pytest.mark.parametrize(("method", "path", "role"), KEYED_ROUTES)
def test_a_request_without_a_key_is_answered_401_whatever_its_body(client, method, path, role):
    response = client.request(
        method, path, content=MALFORMED, headers={"content-type": "application/json"}
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path", "role"), KEYED_ROUTES)
def test_a_key_of_another_role_is_answered_403_whatever_the_body(client, keys, method, path, role):
    other = Role.READ if role is not Role.READ else Role.INGEST
    response = client.request(
        method,
        path,
        content=MALFORMED,
        headers={"content-type": "application/json", "x-p402-api-key": keys[other.value]},
    )
    assert response.status_code == 403, response.text
    assert f"needs a key with the {role.value} role" in response.json()["error"]["message"]
