"""What metering an LLM call costs the application: P402 against stock OpenTelemetry.

    uv run python benchmarks/instrumentation_overhead.py            # ~1.5 minutes, 2 cores
    uv run python benchmarks/instrumentation_overhead.py --help     # calls, rounds, warm-up
    uv run python benchmarks/instrumentation_overhead.py --profile 300   # + P402 hot spots

What is measured. The same real ``openai`` SDK call (``client.chat.completions.create(
model="gpt-5-mini", messages=[...])``, once non-streaming and once streaming with
``stream_options={"include_usage": True}``, iterating the whole stream) against a local
``StandInProvider``, in three configurations:

``baseline``
    uninstrumented;
``stock OTel``
    ``HTTPX2ClientInstrumentor`` (the openai SDK runs on httpx2) with an SDK
    ``TracerProvider`` + ``BatchSpanProcessor(OTLPSpanExporter(...))``;
``P402``
    ``P402Instrumentor().instrument(endpoint=..., api_key=..., providers=...)``, i.e. P402's
    own always-on batch + OTLP/HTTP pipeline;
``control``
    uninstrumented again, measured exactly like the others: an A/A control. Its overhead
    over the baseline should be 0; what it shows instead is the bias the machine's noise put
    into this run's figures.

Both instrumented variants export over OTLP/HTTP to the same real P402 receiver (the API
server on a temporary SQLite ledger), which stores P402's economic events and ignores the
stock instrumentor's plain HTTP spans.

How the client side is isolated. The stand-in provider and the receiver each run in their
own subprocess (this script re-run with ``--serve standin|receiver``), so
``time.process_time_ns()`` of this process counts only the client: the openai SDK, httpx2,
the instrumentation and the export (the span processor's thread, or the flushing thread,
runs in this process, so protobuf encoding and the HTTP POST are included). The stand-in
process turns Nagle's algorithm off (see ``_serve``): otherwise every non-streaming call
waits ~40 ms for a delayed ACK and latency measures that stall.

Cores (``--pin``, the default on a machine with two or more CPUs). In production the provider
runs elsewhere; here its stand-in shares the machine. Unpinned, on two cores, a client thread
working in the background (P402's recorder, the stock span processor's exporter) can take the
core the stand-in needs to write the stream, and the call then waits for the stand-in, not for
the instrumentation. So this process and all of its threads run on the first CPU it may use,
and the two server processes on the others. The application's thread and the
instrumentation's thread still share one core (and one GIL, as they would anyway), so their
contention is measured; only the stand-in's is taken out. ``--no-pin`` measures unpinned.

One measurement, a *block*: instrument the variant, make a few untimed calls and flush them,
then ``K`` timed calls, then ``force_flush()`` (P402) or ``provider.force_flush()`` (stock)
*inside* the CPU measurement, so exporting the block's spans is charged to it; then
uninstrument. Each call is also timed with ``time.perf_counter_ns()``: the block's export
happens in the closing flush, after the calls, so latency is the hot path only.

Rounds. The machine is assumed noisy, so the variants are interleaved in rounds (the order
rotates every round: ABCD, BCDA, CDAB, ...) and every figure is the median over rounds, in us:

``CPU/call``
    process CPU of the block (calls + closing flush) / K;
``+CPU``, ``+p50``, ``+p95``
    the overhead: median over rounds of (variant - baseline of the same round);
``interval``
    a 95% confidence interval of the overhead's median (the sign test's, which assumes
    nothing of the noise's distribution): when it is wide, the figure is noise-limited; run
    more ``--rounds``;
``flush``
    the part of ``CPU/call`` spent in the closing flush, i.e. (nearly all of) the export;
    ``CPU/call - flush`` is what the application's own thread pays per call;
``x base``
    median over rounds of variant / baseline CPU;
``p50``, ``p95``
    percentiles of the per-call wall-clock latency within a round.

Below each table, a cross-check (the overhead between the best round of each variant, which
is less sensitive to other load on the machine), the noise check (whether the control's
intervals hold 0) and the ratio stock overhead / P402 overhead, with its interval. Then the
targets: P402 adds <= 100 us of CPU per call (export included) and <= 50 us to the median
latency, and its CPU overhead is at least 3x smaller than the stock instrumentor's. A target
is PASS when the whole interval meets it, MISS when none of it does, and UNCLEAR when the
interval straddles it. The ratio is judged round by round, as the two overheads are measured
against the same round's baseline: each round's margin, stock's overhead - 3 x P402's, and
the interval of the margins' median (the ratio's own interval is the set of ratios whose
margins' interval holds 0, the sign test inverted). The verdicts are
informational; the script exits 0 either way. Finally the ledger is asked
(``GET /v1/spend?group_by=model``) how many economic events arrived, so a mode P402 does not
meter (yet) shows. Absolute times only compare within one run, on one machine.

Instruction counts (``--instructions``, ~5 minutes). On a busy machine the CPU-time
overheads above drown in noise (see ``interval``). This measure does not: a child process runs
one block per mode and variant (``--instruction-calls`` calls and the closing flush, after a
few untimed ones; ``--instruction-repeats`` times) under valgrind's callgrind, which counts
the instructions every thread of the process executes, whatever else the machine does. The
blocks are delimited from Python (see ``_ZERO_AT``); the background pipelines' timers are
stretched by valgrind's slowdown (see ``_VALGRIND_SLOWDOWN``). It prints instructions per
call, the overhead of each variant over the baseline, and the stock / P402 ratio of the
overheads; when timed rounds ran too, it converts the overheads to microseconds with the
baseline's CPU time per instruction in those rounds (an estimate: P402's code and the openai
SDK's are both mostly interpreted Python). ``--rounds 0 --warmup 1 --instructions`` runs
only this measure.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import math
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Protocol

MODES = ("non-streaming", "streaming")
MESSAGES: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]
MODEL = "gpt-5-mini"

CONTROL: Final = "control"
"""A second uninstrumented variant, measured like the others: its overhead over the baseline
should be 0, and what it shows instead is the bias this run's noise put into every figure."""
CONFIDENCE: Final = 0.95

TARGET_CPU_US = 100.0
TARGET_P50_US = 50.0
TARGET_RATIO = 3.0
FLUSH_TIMEOUT_MS = 30_000


# --------------------------------------------------------------------------- the servers


def _serve(role: str, cpus: str | None) -> None:
    """Child process: run one server, print its coordinates as JSON, stop at stdin EOF."""
    if cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    if role == "standin":
        import socketserver

        from p402.instrumentation.testing import StandInProvider

        # The stand-in writes the response headers and the body in two send() calls; with
        # Nagle's algorithm on, the body then waits for the client's delayed ACK (~40 ms on
        # Linux) and the non-streaming call measures that stall. This process only.
        socketserver.StreamRequestHandler.disable_nagle_algorithm = True

        with StandInProvider() as standin:
            print(json.dumps({"url": standin.base_url}), flush=True)
            sys.stdin.readline()
        return

    from p402.api import create_app
    from p402.api.server import BackgroundServer
    from p402.ledger.database import connect
    from p402.ledger.keys import Role, create_key

    with tempfile.TemporaryDirectory(prefix="p402-bench-") as directory:
        engine = connect(f"sqlite:///{directory}/p402.db")
        app = create_app(engine)  # prepares the schema
        _, ingest_key = create_key(engine, tenant="bench", role=Role.INGEST)
        _, read_key = create_key(engine, tenant="bench", role=Role.READ)
        with BackgroundServer(app) as server:
            info = {"url": server.url, "ingest_key": ingest_key, "read_key": read_key}
            print(json.dumps(info), flush=True)
            sys.stdin.readline()
        engine.dispose()


@contextmanager
def _server_process(role: str, cpus: set[int] | None) -> Iterator[dict[str, str]]:
    pinned = ["--cpus", ",".join(map(str, sorted(cpus)))] if cpus else []
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", role, *pinned],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {role} server process did not start")
        yield json.loads(line)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- the variants


class Variant(Protocol):
    name: str

    def setup(self) -> None: ...
    def flush(self) -> None: ...
    def teardown(self) -> None: ...


class Baseline:
    name = "baseline"

    def __init__(self, name: str = "baseline") -> None:
        self.name = name

    def setup(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def teardown(self) -> None:
        pass


class StockOTel:
    name = "stock OTel"

    def __init__(self, receiver: str, api_key: str) -> None:
        from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor

        self._endpoint = f"{receiver}/v1/traces"
        self._headers = {"x-p402-api-key": api_key}
        self._instrumentor = HTTPX2ClientInstrumentor()
        self._provider: Any = None

    def setup(self) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self._provider = TracerProvider(resource=Resource.create())
        exporter = OTLPSpanExporter(endpoint=self._endpoint, headers=self._headers)
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._instrumentor.instrument(tracer_provider=self._provider)

    def flush(self) -> None:
        if not self._provider.force_flush(FLUSH_TIMEOUT_MS):
            raise RuntimeError("stock OTel: force_flush timed out")

    def teardown(self) -> None:
        self._instrumentor.uninstrument()
        self._provider.shutdown()
        self._provider = None


class P402:
    name = "P402"

    def __init__(self, receiver: str, api_key: str, provider_url: str) -> None:
        from p402.instrumentation import P402Instrumentor

        self._instrumentor = P402Instrumentor()
        self._kwargs = {
            "endpoint": receiver,
            "api_key": api_key,
            "providers": f"openai={provider_url}",
        }

    def setup(self) -> None:
        self._instrumentor.instrument(**self._kwargs)

    def flush(self) -> None:
        if not self._instrumentor.force_flush(FLUSH_TIMEOUT_MS):
            raise RuntimeError("P402: force_flush timed out")

    def teardown(self) -> None:
        self._instrumentor.uninstrument()


# --------------------------------------------------------------------------- measuring


def _call_function(client: Any, mode: str) -> Callable[[], None]:
    create = client.chat.completions.create

    def plain() -> None:
        create(model=MODEL, messages=MESSAGES)

    def streamed() -> None:
        with create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ) as stream:
            for _ in stream:
                pass

    return plain if mode == "non-streaming" else streamed


@dataclass
class Block:
    cpu_per_call_us: float
    flush_per_call_us: float
    p50_us: float
    p95_us: float


@dataclass
class Results:
    blocks: dict[tuple[str, str], list[Block]] = field(default_factory=dict)
    calls: dict[tuple[str, str], int] = field(default_factory=dict)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, mode: str, variant: str, block: Block) -> None:
        self.blocks.setdefault((mode, variant), []).append(block)

    def count(self, mode: str, variant: str, calls: int) -> None:
        self.calls[mode, variant] = self.calls.get((mode, variant), 0) + calls

    def attempt(self, mode: str, variant: Variant, run: Callable[[], Block]) -> Block | None:
        """Run one block; a variant that raises is reported and left out from then on."""
        if (mode, variant.name) in self.failures:
            return None
        try:
            return run()
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            self.failures[mode, variant.name] = reason
            print(f"  {variant.name}, {mode}: FAILED, left out from now on ({reason})")
            return None


def _percentile(sorted_values: list[int], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return float(sorted_values[index])


def run_block(call: Callable[[], None], variant: Variant, calls: int, untimed: int) -> Block:
    variant.setup()
    try:
        for _ in range(untimed):
            call()
        variant.flush()  # the untimed calls' spans are not charged to the block
        gc.collect()
        latencies: list[int] = []
        append = latencies.append
        clock = time.perf_counter_ns
        cpu_start = time.process_time_ns()
        for _ in range(calls):
            start = clock()
            call()
            append(clock() - start)
        cpu_flush_start = time.process_time_ns()
        variant.flush()
        cpu_end = time.process_time_ns()
    finally:
        variant.teardown()
    latencies.sort()
    return Block(
        cpu_per_call_us=(cpu_end - cpu_start) / calls / 1000,
        flush_per_call_us=(cpu_end - cpu_flush_start) / calls / 1000,
        p50_us=_percentile(latencies, 0.50) / 1000,
        p95_us=_percentile(latencies, 0.95) / 1000,
    )


class _ExportProblems(logging.Handler):
    """Collects the warnings and errors OpenTelemetry and P402 log (failed exports, drops)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


def _sanity_check_stock(client: Any, provider_url: str) -> int:
    """Spans the stock instrumentor makes for one call of each mode (expected: 2)."""
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = HTTPX2ClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        for mode in MODES:
            _call_function(client, mode)()
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    return len(memory.get_finished_spans())


# --------------------------------------------------------------------------- reporting


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _median_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A distribution-free confidence interval for the median of ``values`` (the sign test's:
    order statistics ``k`` and ``n - k + 1``, with ``k`` from the binomial distribution); with
    too few values for ``confidence``, their whole range."""
    ordered = sorted(values)
    n = len(ordered)
    tail = (1 - confidence) / 2
    k, below = 0, 0.0  # below: P(X <= k - 1) for X ~ Binomial(n, 1/2)
    while k < n // 2:
        below_next = below + math.comb(n, k) / 2**n
        if below_next > tail:
            break
        below, k = below_next, k + 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


@dataclass
class Summary:
    cpu: float
    p50: float
    p95: float
    cpu_ratio: float
    cpu_added: float
    cpu_added_interval: tuple[float, float]
    p50_added: float
    p50_added_interval: tuple[float, float]
    p95_added: float
    cpu_best: float
    flush: float


def _rounds(baseline: list[Block], blocks: list[Block]) -> list[tuple[Block, Block]]:
    """The baseline's and the variant's block of each round; a variant that failed part-way
    has fewer blocks than the baseline."""
    return list(zip(baseline, blocks, strict=False))


def summarise(baseline: list[Block], blocks: list[Block]) -> Summary:
    pairs = _rounds(baseline, blocks)
    cpu_added = [b.cpu_per_call_us - a.cpu_per_call_us for a, b in pairs]
    p50_added = [b.p50_us - a.p50_us for a, b in pairs]
    return Summary(
        cpu=_median([b.cpu_per_call_us for b in blocks]),
        p50=_median([b.p50_us for b in blocks]),
        p95=_median([b.p95_us for b in blocks]),
        cpu_ratio=_median([b.cpu_per_call_us / a.cpu_per_call_us for a, b in pairs]),
        cpu_added=_median(cpu_added),
        cpu_added_interval=_median_interval(cpu_added),
        p50_added=_median(p50_added),
        p50_added_interval=_median_interval(p50_added),
        p95_added=_median([b.p95_us - a.p95_us for a, b in pairs]),
        cpu_best=min(b.cpu_per_call_us for b in blocks),
        flush=_median([b.flush_per_call_us for b in blocks]),
    )


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _interval_verdict(low: float, high: float, limit: float) -> str:
    """PASS: the whole interval is within ``limit``; MISS: none of it; UNCLEAR: it straddles
    the limit (more ``--rounds``, or a quieter machine, would tell)."""
    if high <= limit:
        return "PASS"
    return "MISS" if low > limit else "UNCLEAR"


def _interval_text(interval: tuple[float, float]) -> str:
    return f"[{interval[0]:+.0f},{interval[1]:+.0f}]"


def _margins(stock_added: list[float], p402_added: list[float], ratio: float) -> list[float]:
    """Per round, how much more the stock instrumentor added than ``ratio`` x P402's."""
    return [s - ratio * p for s, p in zip(stock_added, p402_added, strict=False)]


def _ratio_interval(stock_added: list[float], p402_added: list[float]) -> tuple[float, float]:
    """A confidence interval of the stock / P402 overhead ratio, by inverting the sign test:
    the ratios ``k`` for which the interval of the median of the rounds' margins
    ``stock - k x P402`` holds 0 (each end found by bisection between 0 and 1,000)."""

    def holds_zero_from_above(k: float) -> bool:  # the margin's interval is all >= 0
        return _median_interval(_margins(stock_added, p402_added, k))[0] >= 0

    def holds_zero_from_below(k: float) -> bool:  # the margin's interval is all <= 0
        return _median_interval(_margins(stock_added, p402_added, k))[1] <= 0

    def last_true(test: Callable[[float], bool], low: float, high: float) -> float:
        if not test(low):
            return low
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (middle, high) if test(middle) else (low, middle)
        return low

    def first_true(test: Callable[[float], bool], low: float, high: float) -> float:
        if not test(high):
            return math.inf
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (low, middle) if test(middle) else (middle, high)
        return high

    return (
        last_true(holds_zero_from_above, 0.0, 1000.0),
        first_true(holds_zero_from_below, 0.0, 1000.0),
    )


def _ratio_text(
    baseline: list[Block], stock: list[Block], p402: list[Block]
) -> tuple[str, str, str]:
    """The stock / P402 CPU overhead ratio (of the medians), its interval, and the verdict.

    Paired by round: each round's margin ``stock - 3 x P402`` (both overheads over that
    round's baseline) says whether the stock instrumentor added at least three times what
    P402 did in that round. PASS when the whole interval of the margins' median is >= 0,
    MISS when all of it is < 0, UNCLEAR otherwise."""
    stock_added = [b.cpu_per_call_us - a.cpu_per_call_us for a, b in _rounds(baseline, stock)]
    p402_added = [b.cpu_per_call_us - a.cpu_per_call_us for a, b in _rounds(baseline, p402)]
    low, high = _median_interval(_margins(stock_added, p402_added, TARGET_RATIO))
    verdict = "PASS" if low >= 0 else "MISS" if high < 0 else "UNCLEAR"
    p402_median = _median(p402_added)
    if p402_median <= 0:
        return "inf (P402 <= 0)", "-", verdict
    ratio_low, ratio_high = _ratio_interval(stock_added, p402_added)
    interval = f"[{ratio_low:.1f}x, {'inf' if math.isinf(ratio_high) else f'{ratio_high:.1f}x'}]"
    return f"{_median(stock_added) / p402_median:.1f}x", interval, verdict


def report(results: Results, variants: list[str], calls: int, rounds: int) -> None:
    na = "n/a"
    targets: dict[str, list[str]] = {"cpu": [], "p50": [], "ratio": []}
    confidence = f"{CONFIDENCE:.0%}"
    for mode in MODES:
        baseline = results.blocks.get((mode, "baseline"), [])
        summaries = {
            name: summarise(baseline, results.blocks[mode, name])
            for name in variants
            if baseline and results.blocks.get((mode, name))
        }
        print()
        print(
            f"{mode}: {calls} calls/block x {rounds} rounds, medians over rounds (us), "
            f"{confidence} intervals of the overheads' medians"
        )
        header = (
            f"  {'variant':<11}{'CPU/call':>10}{'+CPU':>9}{'interval':>13}{'flush':>7}"
            f"{'x base':>8}{'p50':>9}{'+p50':>8}{'interval':>13}{'p95':>9}{'+p95':>8}  rounds"
        )
        print(header)
        print("  " + "-" * (len(header) - 2))
        for name in variants:
            s = summaries.get(name)
            measured = len(results.blocks.get((mode, name), []))
            failure = results.failures.get((mode, name))
            note = f"  {measured}" + (f" (then failed: {failure})" if failure else "")
            if s is None:
                print(f"  {name:<11}{'no figures':>10}{note}")
            elif name == "baseline":
                print(
                    f"  {name:<11}{s.cpu:>10.1f}{'-':>9}{'-':>13}{'-':>7}{1.0:>8.2f}"
                    f"{s.p50:>9.1f}{'-':>8}{'-':>13}{s.p95:>9.1f}{'-':>8}{note}"
                )
            else:
                print(
                    f"  {name:<11}{s.cpu:>10.1f}{s.cpu_added:>+9.1f}"
                    f"{_interval_text(s.cpu_added_interval):>13}{s.flush:>7.1f}"
                    f"{s.cpu_ratio:>8.2f}{s.p50:>9.1f}{s.p50_added:>+8.1f}"
                    f"{_interval_text(s.p50_added_interval):>13}{s.p95:>9.1f}"
                    f"{s.p95_added:>+8.1f}{note}"
                )
        base = summaries.get("baseline")
        if base is not None and len(summaries) > 1:
            best = ", ".join(
                f"{name} {s.cpu_best - base.cpu_best:+.1f}"
                for name, s in summaries.items()
                if name != "baseline"
            )
            print(f"  cross-check, CPU overhead between the best rounds: {best}")
        control = summaries.get(CONTROL)
        if control is not None:
            biased = [
                f"{what} {interval[0]:+.0f} to {interval[1]:+.0f} us"
                for what, interval in (
                    ("CPU", control.cpu_added_interval),
                    ("p50", control.p50_added_interval),
                )
                if not interval[0] <= 0 <= interval[1]
            ]
            verdict = (
                "it does, within its intervals"
                if not biased
                else f"it adds {', '.join(biased)}: this run's noise biased its figures"
            )
            print(f"  noise check: the control (uninstrumented) should add 0; {verdict}")
        p402, stock = summaries.get("P402"), summaries.get("stock OTel")
        if p402 is None:
            targets["cpu"].append(na)
            targets["p50"].append(na)
        else:
            cpu_low, cpu_high = p402.cpu_added_interval
            p50_low, p50_high = p402.p50_added_interval
            targets["cpu"].append(
                f"{p402.cpu_added:+.1f} us {_interval_verdict(cpu_low, cpu_high, TARGET_CPU_US)}"
            )
            targets["p50"].append(
                f"{p402.p50_added:+.1f} us {_interval_verdict(p50_low, p50_high, TARGET_P50_US)}"
            )
        if p402 is None or stock is None:
            targets["ratio"].append(na)
        else:
            ratio, interval, ratio_verdict = _ratio_text(
                baseline, results.blocks[mode, "stock OTel"], results.blocks[mode, "P402"]
            )
            print(f"  CPU overhead, stock OTel / P402: {ratio}, {confidence} interval {interval}")
            targets["ratio"].append(f"{ratio} {ratio_verdict}")

    print()
    print(
        f"targets (informational; PASS or MISS when the whole {confidence} interval is on one "
        "side, UNCLEAR when it straddles)"
    )
    rows = [
        (f"P402 CPU overhead <= {TARGET_CPU_US:.0f} us/call (export incl.)", targets["cpu"]),
        (f"P402 p50 latency overhead <= {TARGET_P50_US:.0f} us", targets["p50"]),
        (f"stock / P402 CPU overhead >= {TARGET_RATIO:.0f}x", targets["ratio"]),
    ]
    print(f"  {'target':<48}" + "".join(f" {mode:>25}" for mode in MODES))
    for label, values in rows:
        print(f"  {label:<48}" + "".join(f" {value:>25}" for value in values))


def _ledger_events(receiver: dict[str, str]) -> list[dict[str, Any]]:
    import httpx

    with httpx.Client(
        base_url=receiver["url"], headers={"x-p402-api-key": receiver["read_key"]}
    ) as api:
        response = api.get("/v1/spend", params={"group_by": "model"})
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()["data"]
    return rows


def profile_p402(
    client: Any, receiver: dict[str, str], provider_url: str, calls: int, top: int
) -> None:
    """cProfile ``calls`` P402-metered calls per mode (flush included); print the top entries."""
    variant = P402(receiver["url"], receiver["ingest_key"], provider_url)
    for mode in MODES:
        call = _call_function(client, mode)
        variant.setup()
        try:
            for _ in range(5):
                call()
            variant.flush()
            profiler = cProfile.Profile(time.process_time)  # CPU, not time spent waiting
            profiler.enable()
            for _ in range(calls):
                call()
            variant.flush()
            profiler.disable()
        finally:
            variant.teardown()
        print()
        print(f"cProfile (process CPU time), P402, {mode}, {calls} calls and the closing flush,")
        print("main thread only. Entries from p402 / opentelemetry / wrapt, by cumulative time:")
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(r"p402|opentelemetry|wrapt", top)


# --------------------------------------------------------------------------- instructions

# Under callgrind, a call of either of these CPython functions (``os.getpgrp()``,
# ``os.getppid()``: nothing else in the process calls them) zeroes the counters or writes them
# out, so the blocks are delimited from Python itself.
_ZERO_AT: Final = "os_getpgrp"
_DUMP_AT: Final = "os_getppid"
# Under callgrind the process runs ~50x slower, so a background thread that wakes every T
# seconds of wall-clock time would wake ~50x as often per call as it does natively, and its
# per-wake-up work would be overcharged to every call. The child stretches both pipelines'
# timers by this factor: P402's recorder interval (``INTERVAL``) and batch delay (1 s), and the
# stock BatchSpanProcessor's schedule delay (OTEL_BSP_SCHEDULE_DELAY, 5 s).
_VALGRIND_SLOWDOWN: Final = 50


def _count_blocks(args: argparse.Namespace) -> None:
    """Child process, run under callgrind: one block per mode and variant, each dumped."""
    from openai import OpenAI

    from p402.instrumentation import _pipeline, _recorder

    native_init = _recorder.Recorder.__init__

    def stretched(
        recorder: Any, *args: Any, interval: float = _recorder.INTERVAL, **kwargs: Any
    ) -> None:
        native_init(recorder, *args, interval=interval * _VALGRIND_SLOWDOWN, **kwargs)

    _recorder.Recorder.__init__ = stretched  # type: ignore[method-assign, assignment]
    native_sink_init = _pipeline.OtlpSink.__init__

    def stretched_sink(sink: Any, *args: Any, max_delay: float = 1.0, **kwargs: Any) -> None:
        native_sink_init(sink, *args, max_delay=max_delay * _VALGRIND_SLOWDOWN, **kwargs)

    _pipeline.OtlpSink.__init__ = stretched_sink  # type: ignore[method-assign, assignment]
    global FLUSH_TIMEOUT_MS
    FLUSH_TIMEOUT_MS *= _VALGRIND_SLOWDOWN
    zero, dump = os.getpgrp, os.getppid
    coordinates = json.loads(args.count_child)
    os.environ.setdefault("P402_SPOOL_DIR", coordinates["spool"])
    client = OpenAI(base_url=coordinates["provider_url"], api_key="x", max_retries=0)
    receiver = coordinates["receiver"]
    variants: list[Variant] = [
        Baseline(),
        StockOTel(receiver["url"], receiver["ingest_key"]),
        P402(receiver["url"], receiver["ingest_key"], coordinates["provider_url"]),
    ]
    # A first pass, not counted, so that no block pays a variant's one-off costs (imports,
    # caches, P402's price data); then the counted ones. The first pass is dumped too, and
    # the parent discards it: whatever runs first under callgrind counts ~3x its later runs.
    for passed in range(1 + args.instruction_repeats):
        for mode in MODES:
            call = _call_function(client, mode)
            for variant in variants:
                variant.setup()
                try:
                    for _ in range(args.untimed):
                        call()
                    variant.flush()
                    gc.collect()
                    zero()
                    for _ in range(args.instruction_calls):
                        call()
                    variant.flush()
                    dump()
                finally:
                    variant.teardown()
                if passed:
                    print(f"  {mode}, {variant.name}: counted", flush=True)
    client.close()


_TOTALS = re.compile(rb"^summary:\s*(\d+)", re.MULTILINE)


def count_instructions(
    args: argparse.Namespace, provider_url: str, receiver: dict[str, str], spool: str
) -> dict[tuple[str, str], list[float]]:
    """Instructions per call of each (mode, variant), from a child process under callgrind."""
    names = ["baseline", "stock OTel", "P402"]
    with tempfile.TemporaryDirectory(prefix="p402-bench-callgrind-") as directory:
        coordinates = {"provider_url": provider_url, "receiver": receiver, "spool": spool}
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={directory}/callgrind.out",
            f"--zero-before={_ZERO_AT}",
            f"--dump-before={_DUMP_AT}",
            sys.executable,
            __file__,
            "--count-child",
            json.dumps(coordinates),
            "--instruction-calls",
            str(args.instruction_calls),
            "--instruction-repeats",
            str(args.instruction_repeats),
            "--untimed",
            str(args.untimed),
        ]
        environment = {
            **os.environ,
            "PYTHONHASHSEED": "0",
            "OTEL_BSP_SCHEDULE_DELAY": str(5000 * _VALGRIND_SLOWDOWN),
        }
        child = subprocess.run(command, env=environment, stderr=subprocess.PIPE, text=True)
        if child.returncode != 0:
            raise RuntimeError(
                "the callgrind child failed:\n" + "\n".join(child.stderr.splitlines()[-20:])
            )
        dumps = sorted(
            (path for path in os.listdir(directory) if re.fullmatch(r"callgrind\.out\.\d+", path)),
            key=lambda path: int(path.rsplit(".", 1)[1]),
        )
        totals = []
        for path in dumps:
            with open(os.path.join(directory, path), "rb") as dump_file:
                found = _TOTALS.search(dump_file.read())
            if found is None:
                raise RuntimeError(f"callgrind dump {path} has no totals")
            totals.append(int(found.group(1)))
    passes = 1 + args.instruction_repeats
    expected = passes * len(MODES) * len(names)
    if len(totals) != expected:
        raise RuntimeError(f"expected {expected} callgrind dumps, found {len(totals)}")
    per_call: dict[tuple[str, str], list[float]] = {}
    blocks = iter(totals[len(MODES) * len(names) :])  # the first pass is not counted
    for _ in range(args.instruction_repeats):
        for mode in MODES:
            for name in names:
                per_call.setdefault((mode, name), []).append(next(blocks) / args.instruction_calls)
    return per_call


def report_instructions(
    per_call: dict[tuple[str, str], list[float]], results: Results, calls: int
) -> None:
    """The instruction-count overheads, and what they come to in CPU time on this machine."""
    print()
    print(
        f"instructions per call under callgrind ({calls} calls/block, flush included; "
        "repeatable whatever the load):"
    )
    targets: list[str] = []
    for mode in MODES:
        base = min(per_call[mode, "baseline"])
        # The baseline's CPU time per instruction in the timed rounds of this run, if any.
        timed = results.blocks.get((mode, "baseline"))
        ns_per_instruction = (
            _median([b.cpu_per_call_us for b in timed]) * 1000 / base if timed else None
        )
        print(f"  {mode}:")
        added: dict[str, float] = {}
        for name in ("baseline", "stock OTel", "P402"):
            counts = per_call[mode, name]
            best = min(counts)
            spread = (max(counts) - best) / best
            line = f"    {name:<11}{best:>14,.0f} instr/call (spread {spread:.2%})"
            if name != "baseline":
                added[name] = best - base
                line += f"  {added[name]:>+12,.0f}"
                if ns_per_instruction is not None:
                    line += f"  ~ {added[name] * ns_per_instruction / 1000:+.1f} us CPU"
            print(line)
        if ns_per_instruction is not None:
            print(
                f"    (us from the timed baseline of this run: "
                f"{ns_per_instruction:.3f} ns per instruction)"
            )
        stock, p402 = added["stock OTel"], added["P402"]
        ratio = f"{stock / p402:.1f}x" if p402 > 0 else "inf"
        print(f"    instructions added, stock OTel / P402: {ratio}")
        verdict = _verdict(p402 <= 0 or stock / p402 >= TARGET_RATIO)
        cpu = (
            f", ~{p402 * ns_per_instruction / 1000:+.1f} us "
            f"{_verdict(p402 * ns_per_instruction / 1000 <= TARGET_CPU_US)}"
            if ns_per_instruction is not None
            else ""
        )
        targets.append(f"{mode}: stock/P402 {ratio} {verdict}{cpu}")
    print("  targets by instruction count: " + "; ".join(targets))


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=100, help="timed calls per block (<= 2048)")
    parser.add_argument("--rounds", type=int, default=30, help="rounds of interleaved blocks")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up calls per variant")
    parser.add_argument(
        "--untimed", type=int, default=3, help="untimed calls at the start of every block"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="afterwards, cProfile N P402-metered calls per mode and print the hot spots",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="afterwards, count instructions per call under valgrind's callgrind (slow, "
        "~5 minutes; repeatable however busy the machine is)",
    )
    parser.add_argument(
        "--instruction-calls", type=int, default=50, help="calls per callgrind block"
    )
    parser.add_argument(
        "--instruction-repeats", type=int, default=2, help="callgrind blocks per variant"
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="this process on one CPU, the servers on the others (default: with >= 2 CPUs)",
    )
    parser.add_argument("--serve", choices=["standin", "receiver"], help=argparse.SUPPRESS)
    parser.add_argument("--cpus", help=argparse.SUPPRESS)
    parser.add_argument("--count-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.cpus)
        return
    if args.count_child:
        _count_blocks(args)
        return
    if not 1 <= args.calls <= 2048:
        parser.error("--calls must be between 1 and 2048 (the BatchSpanProcessor queue size)")

    from openai import OpenAI

    problems = _ExportProblems()
    for name in ("opentelemetry", "p402"):
        logging.getLogger(name).addHandler(problems)

    available = sorted(os.sched_getaffinity(0))
    pin = len(available) >= 2 if args.pin is None else args.pin
    if pin and len(available) < 2:
        parser.error(f"--pin needs two CPUs; this process may use {len(available)}")
    server_cpus = set(available[1:]) if pin else None
    if pin:
        # before any thread starts: every thread of this process inherits it
        os.sched_setaffinity(0, {available[0]})

    with (
        tempfile.TemporaryDirectory(prefix="p402-bench-spool-") as spool,
        _server_process("standin", server_cpus) as standin,
        _server_process("receiver", server_cpus) as receiver,
    ):
        # Batches P402 could not deliver would otherwise be left in ~/.cache/p402/spool/,
        # under the hash of this run's random receiver port, forever.
        os.environ.setdefault("P402_SPOOL_DIR", spool)
        provider_url = f"{standin['url']}/v1"
        client = OpenAI(base_url=provider_url, api_key="x", max_retries=0)
        variants: list[Variant] = [
            Baseline(),
            StockOTel(receiver["url"], receiver["ingest_key"]),
            P402(receiver["url"], receiver["ingest_key"], provider_url),
            Baseline(CONTROL),
        ]
        names = [variant.name for variant in variants]
        results = Results()
        print(f"stand-in provider {standin['url']}, P402 receiver {receiver['url']}")
        if server_cpus:
            print(f"pinned: this process on CPU {available[0]}, the servers on {server_cpus}")
        else:
            print(f"not pinned: every process may use CPUs {set(available)}")
        print(f"stock OTel sanity check: {_sanity_check_stock(client, provider_url)} spans (2)")

        started = time.monotonic()
        print(f"warm-up: {args.warmup} calls per variant and mode")
        for mode in MODES:
            call = _call_function(client, mode)
            for variant in variants:
                warm = max(1, args.warmup)
                if results.attempt(mode, variant, partial(run_block, call, variant, warm, 0)):
                    results.count(mode, variant.name, warm)

        for round_index in range(args.rounds):
            shift = round_index % len(variants)
            order = variants[shift:] + variants[:shift]
            for mode in MODES:
                call = _call_function(client, mode)
                for variant in order:
                    run = partial(run_block, call, variant, args.calls, args.untimed)
                    block = results.attempt(mode, variant, run)
                    if block is not None:
                        results.add(mode, variant.name, block)
                        results.count(mode, variant.name, args.calls + args.untimed)
            print(
                f"  round {round_index + 1}/{args.rounds} done "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )

        if args.rounds:
            report(results, names, args.calls, args.rounds)
        if args.instructions:
            print()
            print("callgrind: one block per mode and variant, in a child process")
            per_call = count_instructions(args, provider_url, receiver, spool)
            report_instructions(per_call, results, args.instruction_calls)
            # the child's calls, its first pass included, were metered into the same ledger
            for mode in MODES:
                passes = 1 + args.instruction_repeats
                results.count(mode, "P402", passes * (args.untimed + args.instruction_calls))

        print()
        expected = {mode: results.calls.get((mode, "P402"), 0) for mode in MODES}
        print(
            "ledger check (economic events from the P402 variant; expected "
            + ", ".join(f"{count} {mode}" for mode, count in expected.items())
            + "):"
        )
        rows = _ledger_events(receiver)
        if not rows:
            print("  no events in the ledger")
        for row in rows:
            print(f"  model {row.get('model')!s:<28} events {row.get('events')}")
        if problems.messages:
            print(f"OpenTelemetry / P402 logged {len(problems.messages)} warning(s), first ones:")
            for message in problems.messages[:5]:
                print(f"  {message}")

        if args.profile:
            profile_p402(client, receiver, provider_url, args.profile, top=30)
        client.close()


if __name__ == "__main__":
    main()
