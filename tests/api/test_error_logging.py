"""The server's log holds what went wrong on the server, not what clients got wrong: a 4xx
answer is not logged, an unexpected error is logged with its traceback."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from p402.api.errors import error_answer
from p402.ledger.database import connect


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def test_client_errors_are_answered_without_a_logged_error(client, keys, logged):
    read, admin = {"x-p402-api-key": keys["read"]}, {"x-p402-api-key": keys["admin"]}
    answers = {
        401: client.get("/v1/events"),
        403: client.get("/v1/keys", headers=read),
        404: client.delete("/v1/keys/key_0123abcd", headers=admin),
        400: client.get("/v1/events", params={"limit": "1001"}, headers=read),
        415: client.post(
            "/v1/traces",
            content=b"x",
            headers={"x-p402-api-key": keys["ingest"], "content-type": "text/plain"},
        ),
        405: client.put("/v1/events", headers=read),
    }
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        assert "error" in response.json()
    problems = [record for record in logged.records if record.levelno >= logging.WARNING]
    assert problems == []
    assert "Traceback" not in logged.text


def test_a_sum_past_sqlites_integers_is_explained_not_a_503(tmp_path, logged):
    engine = connect(f"sqlite:///{tmp_path}/sums.db")
    total = f"SELECT SUM(x) FROM (SELECT {2**63 - 1} AS x UNION ALL SELECT 1)"
    try:
        with pytest.raises(OperationalError) as caught, engine.connect() as connection:
            connection.execute(text(total))
    finally:
        engine.dispose()
    status, body, headers = error_answer(caught.value, logging.getLogger("p402.test"))
    assert (status, body["error"]["code"], headers) == (500, "sum_out_of_range", {})
    assert "9.2 million USD" in body["error"]["message"]
    assert "PostgreSQL" in body["error"]["message"]
    assert "integer overflow" in logged.text  # the operator sees it too
