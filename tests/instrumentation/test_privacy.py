"""Privacy modes on the client side: what content may leave the process, and how."""

from __future__ import annotations

import hashlib
import json
import time

import openai
import pytest

from p402.instrumentation import P402Instrumentor
from p402.instrumentation.privacy import Redactor, canonical_json, sign_attributes
from p402.instrumentation.vocabulary import PrivacyMode

SECRET_PROMPT = (
    "Email jane.doe@initech.com or call +1 (415) 555-0132 about card 4111 1111 1111 1111; "
    "the key is sk-proj-abcdefghijklmnopqrstuvwxyz123456 and password=hunter2hunter2. "
    "Project NIGHTJAR-42 is secret."
)


@pytest.fixture
def call_in_mode(spans, standin):
    def call(mode: PrivacyMode, **settings: object) -> dict[str, object]:
        instrumentor = P402Instrumentor()
        instrumentor.instrument(
            tracer_provider=spans.provider,
            providers=f"openai={standin.url('/v1')}",
            privacy_mode=mode.value,
            api_key="p402_test_key_for_signing_and_fingerprints",
            **settings,
        )
        try:
            with openai.OpenAI(base_url=standin.url("/v1"), api_key="sk-test") as client:
                client.chat.completions.create(
                    model="gpt-5-mini", messages=[{"role": "user", "content": SECRET_PROMPT}]
                )
        finally:
            instrumentor.uninstrument()
        return dict(spans.all()[-1].attributes or {})

    return call


def test_metadata_only_carries_no_content_and_no_fingerprint(call_in_mode):
    attributes = call_in_mode(PrivacyMode.METADATA_ONLY)
    assert not [key for key in attributes if "messages" in key or "fingerprint" in key]
    assert "jane.doe" not in json.dumps(attributes)


def test_fingerprint_only_carries_keyed_fingerprints_and_no_content(call_in_mode):
    first = call_in_mode(PrivacyMode.FINGERPRINT_ONLY, fingerprint_key="tenant-secret")
    second = call_in_mode(PrivacyMode.FINGERPRINT_ONLY, fingerprint_key="tenant-secret")
    other_key = call_in_mode(PrivacyMode.FINGERPRINT_ONLY, fingerprint_key="another-secret")
    for attributes in (first, second, other_key):
        assert "gen_ai.input.messages" not in attributes
        assert "gen_ai.output.messages" not in attributes
        assert len(str(attributes["p402.content.fingerprint.input"])) == 64
    assert first["p402.content.fingerprint.input"] == second["p402.content.fingerprint.input"]
    assert first["p402.content.fingerprint.input"] != other_key["p402.content.fingerprint.input"]
    assert first["p402.content.fingerprint.output"] != first["p402.content.fingerprint.input"]
    plain = hashlib.sha256(
        canonical_json([{"role": "user", "parts": [{"type": "text", "content": SECRET_PROMPT}]}])
    ).hexdigest()
    assert first["p402.content.fingerprint.input"] != plain  # keyed, not a bare hash


def test_redacted_trace_redacts_pii_secrets_and_tenant_patterns(call_in_mode):
    attributes = call_in_mode(PrivacyMode.REDACTED_TRACE, redact_patterns=["NIGHTJAR-\\d+"])
    (message,) = json.loads(str(attributes["gen_ai.input.messages"]))
    text = message["parts"][0]["content"]
    for secret in (
        "jane.doe@initech.com",
        "555-0132",
        "4111 1111 1111 1111",
        "sk-proj-abcdefghij",
        "hunter2",
        "NIGHTJAR-42",
    ):
        assert secret not in text
    for marker in ("EMAIL", "PHONE", "CARD", "SECRET", "PATTERN"):
        assert f"[REDACTED:{marker}]" in text
    assert "about card" in text  # only the sensitive parts go
    (answer,) = json.loads(str(attributes["gen_ai.output.messages"]))
    assert answer["parts"][0]["content"] == "Paris is the capital of France."
    assert answer["finish_reason"] == "stop"


def test_full_trace_carries_content_verbatim(call_in_mode):
    attributes = call_in_mode(PrivacyMode.FULL_TRACE)
    (message,) = json.loads(str(attributes["gen_ai.input.messages"]))
    assert message == {"role": "user", "parts": [{"type": "text", "content": SECRET_PROMPT}]}


def test_private_gateway_signs_the_event_with_the_tenant_key(call_in_mode):
    attributes = call_in_mode(PrivacyMode.PRIVATE_GATEWAY)
    signature = attributes["p402.event.signature"]
    # Without a signing key, the key is the SHA-256 of the API key: what the receiver stores.
    key = hashlib.sha256(b"p402_test_key_for_signing_and_fingerprints").hexdigest().encode()
    assert signature == sign_attributes(attributes, key)
    tampered = {**attributes, "gen_ai.usage.input_tokens": 1}
    assert sign_attributes(tampered, key) != signature
    assert "jane.doe" not in str(attributes["gen_ai.input.messages"])


def test_card_numbers_are_redacted_only_when_they_pass_luhn():
    redactor = Redactor()
    assert redactor.redact("card 4111-1111-1111-1111") == "card [REDACTED:CARD]"
    assert "1234 5678 9012 3456" in redactor.redact("order 1234 5678 9012 3456")


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("mail alice@example.com now", "mail [REDACTED:EMAIL] now"),
        ("(bob.smith+tag@corp.co.uk)", "([REDACTED:EMAIL])"),
        ("e-mail:first.last@ex-ample.com.", "e-mail:[REDACTED:EMAIL]."),
        ("user@localhost, a@b.c", "user@localhost, a@b.c"),
    ],
)
def test_email_addresses_are_redacted_whole(text, redacted):
    assert Redactor().redact(text) == redacted


@pytest.mark.parametrize("unit", ["a.", "+1", "a-", "x%", "a@", "1 "])
def test_redacting_long_text_takes_time_in_proportion_to_its_length(unit):
    # 200,000 characters of what an address or a number could start with: read in one pass,
    # a few milliseconds. (Retried at every position, as a pattern can be, it takes minutes.)
    text = unit * 100_000
    started = time.perf_counter()
    Redactor().redact(text)
    assert time.perf_counter() - started < 2.0
