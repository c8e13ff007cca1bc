"""API keys (``POST|GET /v1/keys``, ``DELETE /v1/keys/{id}``) and tenant data deletion
(``DELETE /v1/tenant``), over HTTP on both databases."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select, update
from sqlmodel import SQLModel

from p402.ledger.keys import hash_key, resolve_key

FIXTURES = Path(__file__).parent.parent / "fixtures" / "imports"


def _admin(keys):
    return {"x-p402-api-key": keys["admin"]}


def test_a_created_key_is_answered_once_and_works_in_its_role(client, keys, engine):
    response = client.post(
        "/v1/keys", json={"tenant": "acme", "role": "read"}, headers=_admin(keys)
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["tenant"] == "acme" and created["role"] == "read"
    assert created["key"].startswith("p402_") and created["revoked_at"] is None
    identity = resolve_key(engine, created["key"])
    assert identity is not None and identity.key_id == created["id"]
    assert identity.tenant_id == resolve_key(engine, keys["admin"]).tenant_id
    new_key = {"x-p402-api-key": created["key"]}
    assert client.get("/v1/events", headers=new_key).status_code == 200
    assert client.get("/v1/keys", headers=new_key).status_code == 403  # read is not admin
    listed = client.get("/v1/keys", headers=_admin(keys)).text
    assert created["key"] not in listed and hash_key(created["key"]) not in listed


def test_the_tenant_defaults_to_the_callers_and_no_other_can_be_named(client, keys):
    own = client.post("/v1/keys", json={"role": "ingest"}, headers=_admin(keys))
    assert own.status_code == 201 and own.json()["tenant"] == "acme"
    other = client.post(
        "/v1/keys", json={"tenant": "globex", "role": "admin"}, headers=_admin(keys)
    )
    assert other.status_code == 403 and other.json()["error"]["code"] == "forbidden"
    bad_role = client.post("/v1/keys", json={"role": "owner"}, headers=_admin(keys))
    assert bad_role.status_code == 400 and bad_role.json()["error"]["code"] == "invalid_role"
    read = {"x-p402-api-key": keys["read"]}
    assert client.post("/v1/keys", json={"role": "read"}, headers=read).status_code == 403


def test_keys_are_listed_without_secrets_and_paged(client, keys):
    response = client.get("/v1/keys?limit=2", headers=_admin(keys))
    assert response.status_code == 200
    page = response.json()
    assert len(page["data"]) == 2 and page["next_cursor"]
    assert set(page["data"][0]) == {"id", "role", "created_at", "revoked_at"}
    rest = client.get(f"/v1/keys?limit=2&cursor={page['next_cursor']}", headers=_admin(keys))
    roles = [key["role"] for key in page["data"] + rest.json()["data"]]
    assert sorted(roles) == ["admin", "ingest", "read"]  # acme's keys only, not globex's
    assert rest.json()["next_cursor"] is None
    bad = client.get("/v1/keys?cursor=nonsense", headers=_admin(keys))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"


def test_a_revoked_key_answers_401_at_once(client, keys, engine):
    read_id = resolve_key(engine, keys["read"]).key_id
    read = {"x-p402-api-key": keys["read"]}
    assert client.get("/v1/events", headers=read).status_code == 200
    revoked = client.delete(f"/v1/keys/{read_id}", headers=_admin(keys))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    after = client.get("/v1/events", headers=read)
    assert after.status_code == 401 and after.json()["error"]["code"] == "unauthorized"
    again = client.delete(f"/v1/keys/{read_id}", headers=_admin(keys))
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    listed = {k["id"]: k for k in client.get("/v1/keys", headers=_admin(keys)).json()["data"]}
    assert listed[read_id]["revoked_at"] == revoked.json()["revoked_at"]


def _authorize(client, key: str, event_id: str):
    body = {"event_id": event_id, "model": "gpt-5", "provider": "openai", "max_cost_usd": "1"}
    return client.post(
        "/v1/authorize",
        content=json.dumps(body),
        headers={"x-p402-api-key": key, "content-type": "application/json"},
    )


def _holds(engine, event_id: str) -> int:
    holds = SQLModel.metadata.tables["budget_hold"]
    with engine.connect() as connection:
        return connection.execute(
            select(func.count()).select_from(holds).where(holds.c.event_id == event_id)
        ).scalar_one()


def test_a_key_revoked_by_another_server_cannot_reserve_from_its_next_authorisation(
    client, keys, engine
):
    # POST /v1/authorize remembers the identity of a key it has seen; the key is then revoked
    # in the ledger by another server (this process is not told), and is refused at once.
    assert _authorize(client, keys["ingest"], "e1").status_code == 200
    api_keys = SQLModel.metadata.tables["api_key"]
    with engine.begin() as connection:
        connection.execute(
            update(api_keys)
            .where(api_keys.c.key_hash == hash_key(keys["ingest"]))
            .values(revoked_ms=1)
        )
    refused = _authorize(client, keys["ingest"], "e2")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert (_holds(engine, "e1"), _holds(engine, "e2")) == (1, 0)
    # A key revoked through the API is refused too, and so are a missing and a wrong key.
    admin_id = resolve_key(engine, keys["admin"]).key_id
    assert _authorize(client, keys["admin"], "e3").status_code == 200
    assert client.delete(f"/v1/keys/{admin_id}", headers=_admin(keys)).status_code == 200
    assert _authorize(client, keys["admin"], "e4").status_code == 401
    assert _authorize(client, "p402_unknown", "e5").status_code == 401
    missing = client.post("/v1/authorize", content=b"{}")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert _holds(engine, "e4") == _holds(engine, "e5") == 0


def test_another_tenants_key_cannot_be_revoked(client, keys, engine):
    globex_id = resolve_key(engine, keys["globex_read"]).key_id
    response = client.delete(f"/v1/keys/{globex_id}", headers=_admin(keys))
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert (
        client.get("/v1/events", headers={"x-p402-api-key": keys["globex_read"]}).status_code == 200
    )
    assert client.delete("/v1/keys/key_unknown", headers=_admin(keys)).status_code == 404


# --- tenant deletion -----------------------------------------------------------------------


def _populate(client, keys, ingest_key, admin_key=None):
    event = {
        "id": "ev",
        "timestamp": "2026-11-20T09:30:00Z",
        "provider": "openai",
        "operation": "chat",
        "model_used": "gpt-5-mini-2025-08-07",
        "input_tokens": 10,
        "output_tokens": 5,
        "department": "legal",
        "project": "phoenix",
        "employee": "alice",
        "session": "sess-1",
    }
    response = client.post(
        "/v1/events",
        content=json.dumps([event, {**event, "id": "ev2", "department": "finance"}]),
        headers={"x-p402-api-key": ingest_key, "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    if admin_key:
        headers = {"x-p402-api-key": admin_key, "content-type": "application/json"}
        client.post(
            "/v1/imports/openai",
            content=(FIXTURES / "openai_costs.json").read_bytes(),
            headers=headers,
        )
        client.put(
            "/v1/imports/mappings",
            json=[{"provider": "openai", "field": "project_id", "value": "p", "department": "x"}],
            headers={"x-p402-api-key": admin_key},
        )


def _rows_per_table(engine, tenant_id):
    """Rows of the tenant in every table with a tenant_id column (and the tenant row)."""
    counts = {}
    with engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            if "tenant_id" in table.c:
                column = table.c.tenant_id
            elif table.name == "tenant":
                column = table.c.id
            else:
                continue
            counts[table.name] = connection.execute(
                select(func.count()).select_from(table).where(column == tenant_id)
            ).scalar_one()
    return counts


def test_deleting_a_tenant_leaves_no_row_of_it_and_the_other_tenant_intact(client, keys, engine):
    acme = resolve_key(engine, keys["admin"]).tenant_id
    globex = resolve_key(engine, keys["globex_read"]).tenant_id
    _populate(client, keys, keys["ingest"], keys["admin"])
    _populate(client, keys, keys["globex_ingest"])
    assert _authorize(client, keys["ingest"], "before-deletion").status_code == 200
    before_acme = _rows_per_table(engine, acme)
    before_globex = _rows_per_table(engine, globex)
    for table in (
        "economic_event",
        "spend_rollup",
        "department",
        "session",
        "api_key",
        "budget_hold",
        "imported_usage",
        "import_mapping",
        "tenant",
    ):
        assert before_acme[table] > 0, table

    refused = client.delete("/v1/tenant", headers=_admin(keys))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "confirmation_required"
    wrong = client.delete("/v1/tenant?confirm=globex", headers=_admin(keys))
    assert wrong.status_code == 400
    assert (
        client.delete(
            "/v1/tenant?confirm=acme", headers={"x-p402-api-key": keys["read"]}
        ).status_code
        == 403
    )
    assert _rows_per_table(engine, acme) == before_acme  # nothing happened yet

    response = client.delete("/v1/tenant?confirm=acme", headers=_admin(keys))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["tenant"] == "acme"
    assert answer["deleted"]["economic_event"] == 2
    assert answer["deleted"]["tenant"] == 1

    assert set(_rows_per_table(engine, acme).values()) == {0}  # a scan of every table
    assert _rows_per_table(engine, globex) == before_globex
    assert client.get("/v1/events", headers={"x-p402-api-key": keys["admin"]}).status_code == 401
    assert _authorize(client, keys["ingest"], "after-deletion").status_code == 401
    globex_events = client.get("/v1/events", headers={"x-p402-api-key": keys["globex_read"]})
    assert len(globex_events.json()["data"]) == 2
