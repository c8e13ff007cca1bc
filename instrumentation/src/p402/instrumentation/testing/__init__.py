"""Testing helpers shipped with P402: a stand-in LLM provider that serves recorded responses.

    from p402.instrumentation.testing import StandInProvider

    with StandInProvider() as provider:
        client = OpenAI(base_url=provider.url("/v1"), api_key="test")
        ...
        provider.requests  # what the application sent

Point real SDKs at it with their base-URL options and map it with ``P402_PROVIDERS`` (e.g.
``openai=<provider.url('/v1')>``), exactly as a self-hosted gateway would be mapped.
"""

from p402.instrumentation.testing.fixtures import FIXTURES_DIR, fixture_bytes, manifest
from p402.instrumentation.testing.standin import RecordedRequest, StandInProvider

__all__ = ["FIXTURES_DIR", "RecordedRequest", "StandInProvider", "fixture_bytes", "manifest"]
