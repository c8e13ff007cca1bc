"""A service that meters its OpenAI calls with P402.

    export P402_API_KEY=p402_... P402_ENDPOINT=http://127.0.0.1:4318
    python examples/instrumented_service.py

Set OPENAI_BASE_URL (and map it in P402_PROVIDERS) to use a gateway instead of api.openai.com.
"""

from __future__ import annotations

from openai import OpenAI

from p402.instrumentation import P402Instrumentor, owner


def main() -> None:
    instrumentor = P402Instrumentor()
    instrumentor.instrument()
    client = OpenAI()
    with owner(department="legal", employee="alice", project="phoenix", session="sess_abc"):
        reply = client.chat.completions.create(
            model="gpt-5-mini",
            messages=[{"role": "user", "content": "Summarise clause 7 in one sentence."}],
        )
    print(reply.choices[0].message.content)
    instrumentor.force_flush()


if __name__ == "__main__":
    main()
