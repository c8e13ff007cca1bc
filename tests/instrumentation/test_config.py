"""Settings from keywords and the P402_* environment."""

from __future__ import annotations

import pytest

from p402.instrumentation import ConfigurationError
from p402.instrumentation.config import Enforcement, FailMode, P402Config
from p402.instrumentation.providers import ProviderRegistry, ProviderRoute, parse_providers
from p402.instrumentation.vocabulary import ApiFormat, PrivacyMode


def test_defaults_without_environment():
    config = P402Config.load({})
    assert config.endpoint == "http://127.0.0.1:4318"
    assert config.api_key is None
    assert config.privacy_mode is PrivacyMode.METADATA_ONLY
    assert config.enforcement is Enforcement.CACHED
    assert config.fail_mode is FailMode.OPEN
    assert config.providers == ()


def test_environment_is_read_and_keywords_win():
    env = {
        "P402_ENDPOINT": "http://p402.internal:4318/",
        "P402_API_KEY": "p402_env",
        "P402_PRIVACY_MODE": "fingerprint_only",
        "P402_ENFORCEMENT": "strict",
        "P402_FAIL_MODE": "closed",
        "P402_OWNER_DEPARTMENT": "legal",
        "P402_PROVIDERS": "openai=http://127.0.0.1:8080/v1",
    }
    config = P402Config.load(env, api_key="p402_keyword")
    assert config.endpoint == "http://p402.internal:4318"
    assert config.api_key == "p402_keyword"
    assert config.privacy_mode is PrivacyMode.FINGERPRINT_ONLY
    assert config.enforcement is Enforcement.STRICT
    assert config.fail_mode is FailMode.CLOSED
    assert config.owner_defaults == {"department": "legal"}
    assert config.providers == (("http://127.0.0.1:8080/v1", ProviderRoute("openai", "openai")),)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"P402_PRIVACY_MODE": "everything"}, "P402_PRIVACY_MODE='everything' is not one of"),
        ({"P402_ENFORCEMENT": "hard"}, "P402_ENFORCEMENT='hard'"),
        ({"P402_PROVIDERS": "vllm=http://gpu:8000/v1"}, "its format must be given as vllm:FORMAT"),
        ({"P402_PROVIDERS": "openai"}, "is not NAME[:FORMAT]=BASE_URL"),
        ({"P402_PROVIDERS": "x:grpc=http://h/v1"}, "unknown format 'grpc'"),
        ({"P402_PROVIDERS": "openai=gpu-box:8000"}, "must be an http:// or https:// URL"),
        ({"P402_PROVIDERS": "openai=http://"}, "must be an http:// or https:// URL with a host"),
        (
            {"P402_PROVIDERS": "openai=http://a:1/v1;anthropic=http://b:2"},
            "entries are separated by commas",
        ),
        ({"P402_ENDPOINT": "not a url"}, "P402_ENDPOINT='not a url' is not the http"),
        ({"P402_ENDPOINT": "p402.internal:4318"}, "is not the http:// or https:// URL"),
        ({"P402_OWNER_DEPT": "legal"}, "P402_OWNER_DEPT names no owner dimension"),
    ],
)
def test_unusable_settings_are_refused_with_a_clear_message(env, message):
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        P402Config.load(env)


def test_providers_spec_names_format_and_known_defaults():
    entries = parse_providers(
        "openai=http://127.0.0.1:8080/v1, vllm:openai=http://gpu-box:8000/v1,"
        "anthropic=https://llm-gw.corp/anthropic"
    )
    assert entries == (
        ("http://127.0.0.1:8080/v1", ProviderRoute("openai", ApiFormat.OPENAI)),
        ("http://gpu-box:8000/v1", ProviderRoute("vllm", ApiFormat.OPENAI)),
        ("https://llm-gw.corp/anthropic", ProviderRoute("anthropic", ApiFormat.ANTHROPIC)),
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.openai.com/v1/chat/completions", ("openai", "openai")),
        ("https://eu.api.openai.com/v1/chat/completions", ("openai", "openai")),
        (
            "https://acme.openai.azure.com/openai/deployments/x/chat/completions",
            ("azure.ai.openai", "openai"),
        ),
        ("https://api.anthropic.com/v1/messages", ("anthropic", "anthropic")),
        (
            "https://generativelanguage.googleapis.com/v1/models/g:generateContent",
            ("gcp.gemini", "gemini"),
        ),
        ("https://openrouter.ai/api/v1/chat/completions", ("openrouter", "openai")),
        ("http://gpu-box:8000/v1/chat/completions", ("vllm", "openai")),
        ("http://gpu-box:8000/v10/chat/completions", None),
        ("https://example.com/v1/chat/completions", None),
    ],
)
def test_registry_maps_urls_to_provider_routes(url, expected):
    import httpx

    registry = ProviderRegistry(parse_providers("vllm:openai=http://gpu-box:8000/v1"))
    parsed = httpx.URL(url)
    route = registry.match(url, parsed.host, parsed.path)
    assert (route and (route.name, route.format)) == (expected and expected)


def test_owner_defaults_also_come_from_the_resource_attributes_and_p402_owner_wins():
    env = {
        "OTEL_RESOURCE_ATTRIBUTES": (
            "service.name=contracts, p402.owner.department=finance,"
            "p402.owner.project=legal%20review,p402.owner.colour=blue,p402.owner.employee="
        ),
        "P402_OWNER_DEPARTMENT": "legal",
    }
    config = P402Config.load(env)
    assert config.owner_defaults == {"department": "legal", "project": "legal review"}
    assert P402Config.load(env, owner_defaults={"project": "phoenix"}).owner_defaults == {
        "department": "legal",
        "project": "phoenix",
    }
    assert (
        P402Config.load({"OTEL_RESOURCE_ATTRIBUTES": "p402.owner.department"}).owner_defaults == {}
    )


@pytest.mark.parametrize(
    "value",
    ["ab" * 32 + "c", "ab" * 31, "0x" + "ab" * 32, "my own secret"],
)
def test_a_signing_key_that_is_not_a_tenants_key_is_refused(value):
    with pytest.raises(ConfigurationError, match="P402_SIGNING_KEY is not the tenant's"):
        P402Config.load({"P402_SIGNING_KEY": value})


def test_a_tenants_signing_key_is_taken_in_either_case():
    assert P402Config.load({"P402_SIGNING_KEY": "AB" * 32}).signing_key == "AB" * 32


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("ab" * 32, True),
        ("shared fingerprint secret", True),
        ("ab" * 31 + "a", False),
        ("0x" + "ab" * 32, False),
    ],
)
def test_a_fingerprint_key_is_a_tenants_key_or_text_but_no_near_miss(value, accepted):
    if accepted:
        assert P402Config.load({"P402_FINGERPRINT_KEY": value}).fingerprint_key == value
    else:
        with pytest.raises(ConfigurationError, match="P402_FINGERPRINT_KEY looks like a key"):
            P402Config.load({"P402_FINGERPRINT_KEY": value})
