"""``private_gateway``: events are signed with the sending key, and the receiver verifies it."""

from __future__ import annotations

import hashlib
import time

import httpx
from openai import OpenAI
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from p402.api import create_app
from p402.api.server import BackgroundServer
from p402.instrumentation import P402Instrumentor
from p402.instrumentation.privacy import sign_attributes
from p402.instrumentation.vocabulary import PrivacyMode
from p402.ledger.keys import Role, create_key
from p402.ledger.tenants import set_max_privacy_mode


def _metered_call(
    endpoint: str, api_key: str, standin, tmp_path, signing_key: str | None = None
) -> None:
    """One chat call through the real openai SDK, metered in ``private_gateway`` mode."""
    instrumentor = P402Instrumentor()
    instrumentor.instrument(
        endpoint=endpoint,
        api_key=api_key,
        providers=f"openai={standin.url('/v1')}",
        privacy_mode="private_gateway",
        signing_key=signing_key,
        spool_dir=tmp_path / "spool",
    )
    try:
        with OpenAI(base_url=standin.url("/v1"), api_key="sk-test") as client:
            client.chat.completions.create(model="gpt-5-mini", messages=[])
        assert instrumentor.force_flush()
    finally:
        instrumentor.uninstrument()


def _signed_request(attributes: dict[str, object], key: bytes, tamper: bool) -> bytes:
    signature = sign_attributes(attributes, key)
    if tamper:
        attributes = {**attributes, "gen_ai.usage.output_tokens": 1}
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span(
        "chat",
        attributes={**attributes, "p402.event.signature": signature},  # type: ignore[dict-item]
    )
    span.end()
    return bytes(encode_spans(exporter.get_finished_spans()).SerializeToString())


def test_signed_events_are_verified_against_the_key_that_sent_them(engine, standin, tmp_path):
    identity, ingest_key = create_key(engine, tenant="acme", role=Role.INGEST)
    set_max_privacy_mode(engine, identity.tenant_id, PrivacyMode.PRIVATE_GATEWAY)
    _, read_key = create_key(engine, tenant="acme", role=Role.READ)
    _, other_key = create_key(engine, tenant="acme", role=Role.INGEST)
    with BackgroundServer(create_app(engine)) as server:
        _metered_call(server.url, ingest_key, standin, tmp_path)

        key = hashlib.sha256(ingest_key.encode()).hexdigest().encode()
        attributes: dict[str, object] = {
            "p402.event.id": "signed-by-hand",
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-5-mini",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 5,
        }
        answers = []
        with httpx.Client(base_url=server.url) as http:
            for sender, tamper in ((other_key, False), (ingest_key, True)):
                response = http.post(
                    "/v1/traces",
                    content=_signed_request(attributes, key, tamper),
                    headers={"x-p402-api-key": sender, "content-type": "application/x-protobuf"},
                )
                answers.append(ExportTraceServiceResponse.FromString(response.content))
            time.sleep(0.1)
            events = http.get("/v1/events", headers={"x-p402-api-key": read_key}).json()["data"]
    # The instrumented call arrived signed and verified; the forged and the tampered did not.
    assert [event["privacy_mode"] for event in events] == ["private_gateway"]
    for answer in answers:
        assert answer.partial_success.rejected_spans == 1
        assert "signature does not match" in answer.partial_success.error_message


def test_events_signed_with_the_tenants_signing_key_verify_whichever_key_sends_them(
    engine, standin, tmp_path, caplog
):
    identity, ingest_key = create_key(engine, tenant="acme", role=Role.INGEST)
    set_max_privacy_mode(engine, identity.tenant_id, PrivacyMode.PRIVATE_GATEWAY)
    _, read_key = create_key(engine, tenant="acme", role=Role.READ)
    _, admin_key = create_key(engine, tenant="acme", role=Role.ADMIN)
    with BackgroundServer(create_app(engine)) as server, httpx.Client(base_url=server.url) as http:
        rotated = http.put(
            "/v1/settings", json={"signing_key": "rotate"}, headers={"x-p402-api-key": admin_key}
        )
        tenant_key = rotated.json()["signing_key"]["key"]

        def metered_call(signing_key: str) -> None:
            _metered_call(server.url, ingest_key, standin, tmp_path, signing_key=signing_key)

        def stored() -> int:
            time.sleep(0.1)
            answer = http.get("/v1/events", headers={"x-p402-api-key": read_key})
            return len(answer.json()["data"])

        metered_call(tenant_key.upper())  # as pasted: the digits in either case
        assert stored() == 1
        caplog.clear()
        metered_call("ab" * 32)  # another key: refused, and the service's log says so
        assert stored() == 1
        refusals = [r for r in caplog.records if "refused 1 economic event" in r.getMessage()]
        assert [r.levelname for r in refusals] == ["ERROR"]
        assert "signature does not match" in refusals[0].getMessage()
        http.put("/v1/settings", json={"signing_key": None}, headers={"x-p402-api-key": admin_key})
        metered_call(tenant_key)  # the tenant no longer has that key
        assert stored() == 1
