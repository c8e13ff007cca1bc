"""Owner context across threads; what is never metered; one event per call."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import anthropic
import genai_prices.update_prices
import httpx2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from p402.instrumentation import P402Instrumentor, current_owner, owner
from p402.instrumentation._recorder import Recorder
from p402.instrumentation.providers import ProviderRegistry


def test_threads_and_executor_tasks_started_inside_an_owner_see_it(instrument):
    seen: dict[str, dict[str, str]] = {}

    def record(name: str) -> None:
        seen[name] = dict(current_owner())

    with ThreadPoolExecutor(1) as pool:
        with owner(department="legal"):
            thread = threading.Thread(target=record, args=("thread",))
            thread.start()
            thread.join()
            pool.submit(record, "task").result()
        pool.submit(record, "later task").result()  # the reused worker does not keep it
    assert seen == {
        "thread": {"department": "legal"},
        "task": {"department": "legal"},
        "later task": {},
    }


def test_threads_are_left_alone_after_uninstrument(instrument):
    instrument.uninstrument()
    seen: list[dict[str, str]] = []
    with owner(department="legal"):
        thread = threading.Thread(target=lambda: seen.append(dict(current_owner())))
        thread.start()
        thread.join()
    assert seen == [{}]
    instrument.instrument(tracer_provider=TracerProvider())


def test_price_updates_are_never_metered():
    update_url = httpx2.URL(genai_prices.update_prices.DEFAULT_UPDATE_URL)
    assert ProviderRegistry().match(str(update_url), update_url.host, update_url.path) is None


def test_the_anthropic_sdks_own_spans_do_not_make_a_second_event(spans, standin):
    # The SDK's built-in GenAI tracing goes to the application's pipeline, not P402's.
    application_exporter = InMemorySpanExporter()
    application = TracerProvider()
    application.add_span_processor(SimpleSpanProcessor(application_exporter))
    instrumentor = P402Instrumentor()
    instrumentor.instrument(
        tracer_provider=spans.provider, providers=f"anthropic={standin.url('/anthropic')}"
    )
    try:
        client = anthropic.Anthropic(
            base_url=standin.url("/anthropic"),
            api_key="k",
            open_telemetry={"tracer_provider": application},
        )
        client.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[])
        client.close()
    finally:
        instrumentor.uninstrument()
    sdk_spans = application_exporter.get_finished_spans()
    assert any("gen_ai.request.model" in (span.attributes or {}) for span in sdk_spans)
    (event,) = spans.all()
    assert (event.attributes or {})["gen_ai.response.id"] == "msg_01TD1GKJuDa6ZrY4zkYPcA4s"


def test_a_job_the_recorder_thread_submits_runs_at_once_and_flush_waits_for_it():
    recorder = Recorder(interval=60.0)
    order: list[str] = []

    def outer() -> None:
        order.append("outer starts")
        recorder.submit(lambda: order.append("inner"))
        order.append("outer ends")

    try:
        recorder.submit(outer)
        assert recorder.flush(5.0)
        assert order == ["outer starts", "inner", "outer ends"]
    finally:
        recorder.shutdown()
