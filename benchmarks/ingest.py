"""What one receiver core ingests: OTLP/protobuf export requests into the ledger, per second.

    uv run python benchmarks/ingest.py                  # ~1 minute (more on a busy machine)
    uv run python benchmarks/ingest.py --help           # requests, spans, warm-up, backends
    uv run python benchmarks/ingest.py --profile 10     # + cProfile of ingest_traces

What is sent. ``--requests`` OTLP/HTTP export request bodies (``application/x-protobuf``, not
compressed) of ``--spans`` spans each (default 1,000), shaped like the economic-event spans
P402's instrumentation emits: 28 attributes per span (``p402.event.id`` a fresh UUIDv7 per
span, the ``gen_ai.*`` operation/provider/models/response id/finish reasons, the five
``gen_ai.usage.*`` token counts, ``gen_ai.usage.cost.*`` as the client computed it, owners
drawn from small pools, ``p402.*`` evidence, price version, privacy mode, policy result and
attempt, ``server.*`` and ``http.response.status_code``). The spans are made with the
OpenTelemetry SDK and encoded once, up front, with the OTLP exporter's own ``encode_spans``;
building them is not timed. The token counts are chosen so the receiver's price equals the
client's ``0.0005331`` USD (no ``cost_mismatch``), as for a well-behaved client.

What is timed, in one process and one thread (i.e. one receiver core), per request:

``decode-only``
    the baseline, what any receiver must do anyway: ``otlp.parse_protobuf(body)`` and
    iterating ``otlp.spans(request)`` to the end (the span and attribute walk into
    ``PlainSpan``);
``ingest_traces, <backend>``
    ``ingest_traces(engine, tenant_id, body, content_type="application/x-protobuf")`` end to
    end: decode, ``convert_spans`` (validation, pricing with ``Decimal``), the tenant's
    privacy lookup and ``insert_events`` (one transaction, committed durably: SQLite in WAL
    mode with ``synchronous=FULL`` on a temporary file, PostgreSQL on 127.0.0.1:5432 in a
    throwaway database with the server's own fsync settings).

The breakdown: the stages of ``ingest_traces`` timed one by one on the same payloads, for
another tenant of the same ledger: ``parse_protobuf``, ``list(spans(...))`` (the walk),
``convert_spans`` on that list, and ``insert_events`` per backend. ``rest`` is the median
``ingest_traces`` minus the sum of the stage medians: the tenant's privacy lookup, the call's
own overhead, and noise (it can be negative). ``share`` is of the median ``ingest_traces``.

The floor, below the breakdown (not a stage of ``ingest_traces``): the same converted rows,
for a tenant of their own, written into ``economic_event`` alone and committed in the cheapest
way each driver has (SQLite ``executemany``, PostgreSQL ``COPY``), with no conversion, rollups,
owners or duplicate checks: what storing the events costs in this schema, with its indexes.
The bounds at the end add it to the decode-only median: the best rate and ratio any ingest of
these payloads into this schema could reach if everything else were free. A bound below a
target means the target is out of reach on that backend without changing the schema or the
database.

Decode-only, ``ingest_traces`` per backend and the stages run interleaved, request by request,
in an order that rotates, so that other load on the machine hits them alike. Each backend gets
a fresh ledger; each tenant sees every event id once, so every span is inserted (checked:
``inserted == spans`` for every request, and the row count at the end). A few untimed
warm-up requests go first (``--warmup``, a tenant of their own).

How to read it. ``events/s`` is spans per wall-clock second of the one thread; ``(median)``
is ``spans / median request latency``, ``(total)`` is all spans / all time, which includes the
slow requests (SQLite WAL checkpoints, GC, other load). ``events/CPU-s`` counts only this
process's CPU time, i.e. excludes waiting for the PostgreSQL server or for fsync: the gap
to ``events/s`` is time the core would be free for another request if the receiver were
concurrent, or time lost to other load. The line below the table says how much of a core the
(pure-CPU) decode-only runs got: well below 100% means the machine was busy, and the CPU
columns are then the more faithful ones. ``x decode`` is the median ingest rate over the
median decode-only rate. ``p50`` and ``p99`` are percentiles of the per-request latency (with
fewer than 100 requests, p99 is close to the maximum). Absolute figures only compare within one
run, on one machine.

Targets (informational, the script exits 0 either way): ingest >= 50,000 events/s per core on
both backends, and >= 0.6 x the decode-only rate, judged on the median wall-clock rates (the
CPU-time figure is printed beside each).

``--profile N`` then runs ``ingest_traces`` under cProfile on N more requests per backend
(another tenant, same payloads) and prints the top functions by own time and by cumulative
time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.metadata
import io
import operator
import pstats
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Final

from _ledgers import server_version, throwaway_postgres, throwaway_sqlite
from google.protobuf.internal import api_implementation
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind
from sqlalchemy import Engine, text

from p402.instrumentation.ids import new_event_id
from p402.instrumentation.pricing import price_version
from p402.instrumentation.vocabulary import PrivacyMode
from p402.ledger.events import EventRecord, insert_events
from p402.ledger.keys import Role, create_key
from p402.receiver import otlp
from p402.receiver.conversion import convert_spans
from p402.receiver.ingest import ingest_traces

CONTENT_TYPE: Final = "application/x-protobuf"
TARGET_RATE: Final = 50_000.0
TARGET_RATIO: Final = 0.6
DECODE: Final = "decode-only"
DECODE_LABEL: Final = "decode-only (parse + spans())"
DEFAULT_POSTGRES: Final = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

MODEL: Final = "gpt-5-mini"
RESPONSE_MODEL: Final = "gpt-5-mini-2025-08-07"
# gpt-5-mini: 0.25 USD/M input, 0.025 USD/M cached input, 2 USD/M output (reasoning included):
# 1070 x 0.25 + 1024 x 0.025 + 120 x 2 = 533.1 USD/M, i.e. 0.0005331 USD, the client's figure.
USAGE: Final = {
    "gen_ai.usage.input_tokens": 2094,
    "gen_ai.usage.output_tokens": 120,
    "gen_ai.usage.cache_read.input_tokens": 1024,
    "gen_ai.usage.cache_write.input_tokens": 0,
    "gen_ai.usage.reasoning.output_tokens": 64,
}
COST: Final = "0.0005331"
DEPARTMENTS: Final = ("engineering", "support", "sales", "research", "finance")
PROJECTS: Final = ("checkout-assistant", "ticket-triage", "search", "summaries", "eval")
EMPLOYEES: Final = tuple(f"employee-{n:03d}" for n in range(40))
SESSIONS: Final = tuple(f"session-{n:04d}" for n in range(200))


# --------------------------------------------------------------------------- payloads


def _span_attributes(rng: random.Random, price_version: str, event_id: str) -> dict[str, Any]:
    return {
        "p402.event.id": event_id,
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": RESPONSE_MODEL,
        "gen_ai.response.id": "chatcmpl-" + rng.randbytes(15).hex(),
        "gen_ai.response.finish_reasons": ("stop",),
        **USAGE,
        "gen_ai.usage.cost.amount": COST,
        "gen_ai.usage.cost.currency": "USD",
        "gen_ai.usage.cost.source": "local",
        "p402.owner.department": rng.choice(DEPARTMENTS),
        "p402.owner.project": rng.choice(PROJECTS),
        "p402.owner.employee": rng.choice(EMPLOYEES),
        "p402.owner.session": rng.choice(SESSIONS),
        "p402.usage.evidence": "provider_response",
        "p402.cost.evidence": "computed",
        "p402.price.version": price_version,
        "p402.privacy.mode": "metadata_only",
        "p402.policy.result": "allowed",
        "p402.attempt": 0,
        "server.address": "api.openai.com",
        "server.port": 443,
        "http.response.status_code": 200,
    }


ATTRIBUTES_PER_SPAN: Final = len(_span_attributes(random.Random(0), "", ""))


def build_payloads(requests: int, spans_per_request: int, seed: int) -> list[bytes]:
    """``requests`` encoded ExportTraceServiceRequest bodies; every span has its own event id."""
    rng = random.Random(seed)
    version = price_version()
    resource = Resource.create(
        {
            "service.name": "checkout-api",
            "service.version": "1.4.2",
            "deployment.environment": "prod",
        }
    )
    provider = TracerProvider(resource=resource)
    tracer = provider.get_tracer("p402.instrumentation", "0.1.0")
    payloads: list[bytes] = []
    for _ in range(requests):
        batch: list[ReadableSpan] = []
        for _ in range(spans_per_request):
            start = time.time_ns() - rng.randrange(1_000_000_000, 60_000_000_000)
            span = tracer.start_span(
                f"chat {MODEL}",
                kind=SpanKind.CLIENT,
                attributes=_span_attributes(rng, version, new_event_id()),
                start_time=start,
            )
            span.end(end_time=start + rng.randrange(300_000_000, 4_000_000_000))
            assert isinstance(span, ReadableSpan)  # the SDK's span
            batch.append(span)
        payloads.append(encode_spans(batch).SerializeToString())
    provider.shutdown()
    return payloads


# --------------------------------------------------------------------------- backends


@dataclass
class Backend:
    name: str
    engine: Engine
    tenants: dict[str, int] = field(default_factory=dict)

    def tenant(self, purpose: str) -> int:
        """A tenant of its own per purpose, so the same payloads insert new rows each time."""
        if purpose not in self.tenants:
            identity, _ = create_key(self.engine, tenant=f"bench-{purpose}", role=Role.INGEST)
            self.tenants[purpose] = identity.tenant_id
        return self.tenants[purpose]

    def rows(self, purpose: str) -> tuple[int, int]:
        """(rows, rows with cost_mismatch) stored for the tenant of ``purpose``."""
        with self.engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT count(*), sum(CASE WHEN cost_mismatch THEN 1 ELSE 0 END) "
                    "FROM economic_event WHERE tenant_id = :tenant"
                ),
                {"tenant": self.tenants[purpose]},
            ).one()
        return int(row[0]), int(row[1] or 0)


@contextmanager
def sqlite_backend() -> Iterator[Backend]:
    with throwaway_sqlite("p402-ingest-bench-") as engine:
        yield Backend("SQLite", engine)


@contextmanager
def postgres_backend(admin_url: str) -> Iterator[Backend]:
    with throwaway_postgres(admin_url, "p402_ingest_bench_") as engine:
        yield Backend("PostgreSQL", engine)


# --------------------------------------------------------------------------- measuring


@dataclass
class Samples:
    """Per-request wall-clock and CPU times, in ns."""

    wall: list[int] = field(default_factory=list)
    cpu: list[int] = field(default_factory=list)

    @contextmanager
    def timed(self) -> Iterator[None]:
        cpu, wall = time.process_time_ns(), time.perf_counter_ns()
        yield
        self.wall.append(time.perf_counter_ns() - wall)
        self.cpu.append(time.process_time_ns() - cpu)

    def median_ms(self) -> float:
        return statistics.median(self.wall) / 1e6


def decode_only(payload: bytes) -> int:
    """The baseline: what the receiver must do with a request anyway."""
    count = 0
    for _ in otlp.spans(otlp.parse_protobuf(payload)):
        count += 1
    return count


def ingest(backend: Backend, tenant_id: int, payload: bytes, spans: int) -> None:
    result = ingest_traces(backend.engine, tenant_id, payload, content_type=CONTENT_TYPE)
    if result.inserted != spans or result.rejected or result.ignored:
        raise RuntimeError(f"{backend.name}: expected {spans} new events, got {result}")


@dataclass
class Breakdown:
    parse: Samples = field(default_factory=Samples)
    walk: Samples = field(default_factory=Samples)
    convert: Samples = field(default_factory=Samples)
    insert: dict[str, Samples] = field(default_factory=dict)
    floor: dict[str, Samples] = field(default_factory=dict)


_ROW_COLUMNS: Final = (*(f.name for f in fields(EventRecord)), "tenant_id", "received_ms", "batch")
_row_values = operator.attrgetter(*(f.name for f in fields(EventRecord)))


def floor_rows(records: Sequence[EventRecord], tenant_id: int) -> list[tuple[Any, ...]]:
    """The rows of ``records`` as ``economic_event`` stores them (not timed)."""
    tail = (tenant_id, int(time.time() * 1000), uuid.uuid4().hex)
    return [_row_values(record) + tail for record in records]


def write_floor(engine: Engine, rows: Sequence[tuple[Any, ...]]) -> None:
    """The floor: ready rows written into ``economic_event`` alone and committed, in the
    cheapest way each driver has (SQLite ``executemany``, PostgreSQL ``COPY``): what storing
    the events costs in this schema, with its indexes, before any conversion, rollup or
    owner registration."""
    columns = ", ".join(_ROW_COLUMNS)
    with engine.begin() as connection:
        driver: Any = connection.connection.driver_connection
        if engine.dialect.name == "sqlite":
            marks = ", ".join("?" * len(_ROW_COLUMNS))
            driver.executemany(f"INSERT INTO economic_event ({columns}) VALUES ({marks})", rows)
        else:
            with (
                driver.cursor() as cursor,
                cursor.copy(f"COPY economic_event ({columns}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)


def staged(
    breakdown: Breakdown, backends: Sequence[Backend], spans: int, purpose: str
) -> Callable[[bytes], None]:
    """The stages of ingest_traces timed one by one on a payload, for another tenant."""
    tenants = {backend.name: backend.tenant(purpose) for backend in backends}
    floor_tenants = {backend.name: backend.tenant(purpose + "-floor") for backend in backends}
    for backend in backends:
        breakdown.insert.setdefault(backend.name, Samples())
        breakdown.floor.setdefault(backend.name, Samples())
    rounds = 0

    def run(payload: bytes) -> None:
        nonlocal rounds
        with breakdown.parse.timed():
            request = otlp.parse_protobuf(payload)
        with breakdown.walk.timed():
            plain = list(otlp.spans(request))
        with breakdown.convert.timed():
            conversion = convert_spans(plain, PrivacyMode.METADATA_ONLY)
        if len(conversion.records) != spans:
            raise RuntimeError(f"convert_spans kept {len(conversion.records)} of {spans} spans")
        del plain, request
        shift, rounds = rounds % len(backends), rounds + 1
        for backend in [*backends[shift:], *backends[:shift]]:
            with breakdown.insert[backend.name].timed():
                inserted = insert_events(backend.engine, tenants[backend.name], conversion.records)
            if inserted != spans:
                raise RuntimeError(f"{backend.name}: insert_events inserted {inserted}/{spans}")
            rows = floor_rows(conversion.records, floor_tenants[backend.name])
            with breakdown.floor[backend.name].timed():
                write_floor(backend.engine, rows)

    return run


def measure_rounds(
    payloads: Sequence[bytes],
    backends: Sequence[Backend],
    spans: int,
    purpose: str,
    breakdown: Breakdown | None = None,
) -> dict[str, Samples]:
    """decode-only, ingest_traces per backend and (with ``breakdown``) the stages one by one,
    interleaved request by request, in an order that rotates."""
    samples = {DECODE: Samples(), **{backend.name: Samples() for backend in backends}}
    tasks: list[tuple[str, Callable[[bytes], object]]] = [(DECODE, decode_only)]
    for backend in backends:
        tenant_id = backend.tenant(purpose)
        tasks.append((backend.name, partial(ingest, backend, tenant_id, spans=spans)))
    if breakdown is not None:
        tasks.append(("stages", staged(breakdown, backends, spans, purpose + "-stages")))
    gc.collect()
    for index, payload in enumerate(payloads):
        shift = index % len(tasks)
        for name, task in tasks[shift:] + tasks[:shift]:
            if name in samples:
                with samples[name].timed():
                    task(payload)
            else:
                task(payload)  # times its own stages
    return samples


def profile_ingest(
    payloads: Sequence[bytes], backend: Backend, spans: int, requests: int, top: int
) -> None:
    tenant_id = backend.tenant("profile")
    profiler = cProfile.Profile()
    gc.collect()
    chosen = payloads[:requests]  # each once: new event ids for the tenant
    profiler.enable()
    for payload in chosen:
        ingest(backend, tenant_id, payload, spans)
    profiler.disable()
    for sort in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats(sort).print_stats(top)
        listing = out.getvalue()
        start = listing.find("   ncalls")
        body = listing[start:] if start >= 0 else listing
        print(f"\n--- cProfile, ingest_traces on {backend.name}, {requests} requests, by {sort}")
        print(f"    (total {stats.total_tt:.2f} s under the profiler)")  # type: ignore[attr-defined]
        print(body.rstrip())


# --------------------------------------------------------------------------- reporting


def _percentile_ms(values: list[int], percent: int) -> float:
    if len(values) == 1:
        return values[0] / 1e6
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1] / 1e6


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(
    samples: dict[str, Samples],
    breakdown: Breakdown | None,
    backends: Sequence[Backend],
    spans: int,
) -> None:
    decode = samples[DECODE]
    decode_rate = spans / (statistics.median(decode.wall) / 1e9)

    print()
    print(f"throughput and latency per request of {spans:,} spans (one thread)")
    header = (
        f"  {'':<32}{'events/s':>11}{'events/s':>11}{'events/':>11}"
        f"{'x decode':>10}{'p50 ms':>9}{'p99 ms':>9}"
    )
    print(header)
    print(f"  {'':<32}{'(median)':>11}{'(total)':>11}{'CPU-s':>11}")
    rows = [(DECODE_LABEL, decode)]
    rows += [(f"ingest_traces, {b.name}", samples[b.name]) for b in backends]
    rates: dict[str, tuple[float, float]] = {}
    for label, series in rows:
        median_rate = spans / (statistics.median(series.wall) / 1e9)
        total_rate = spans * len(series.wall) / (sum(series.wall) / 1e9)
        cpu_rate = spans * len(series.cpu) / (max(sum(series.cpu), 1) / 1e9)
        rates[label] = median_rate, cpu_rate
        print(
            f"  {label:<32}{median_rate:>11,.0f}{total_rate:>11,.0f}{cpu_rate:>11,.0f}"
            f"{median_rate / decode_rate:>10.2f}{_percentile_ms(series.wall, 50):>9.1f}"
            f"{_percentile_ms(series.wall, 99):>9.1f}"
        )
    share = sum(decode.cpu) / max(sum(decode.wall), 1)
    print(
        f"  (decode-only got {share:.0%} of a core, CPU/wall: much below 100% means other load\n"
        "   on the machine; compare events/CPU-s then)"
    )

    if breakdown is not None:
        report_breakdown(samples, breakdown, backends, spans)
    report_targets(rates, decode_rate, backends)
    if breakdown is not None:
        report_bounds(samples, breakdown, backends, spans)


def report_breakdown(
    samples: dict[str, Samples], breakdown: Breakdown, backends: Sequence[Backend], spans: int
) -> None:
    """Median wall ms per stage, its share of the median ingest_traces, and median CPU ms."""
    print()
    print(f"breakdown per {spans:,}-span request (stages timed one by one, medians)")
    print(f"  {'':<34}" + "".join(f"{b.name:>26}" for b in backends))
    print(f"  {'':<34}" + f"{'wall ms':>10}{'share':>7}{'CPU ms':>9}" * len(backends))

    def cell(wall_ms: float, cpu_ms: float | None, total_ms: float) -> str:
        cpu = "" if cpu_ms is None else f"{cpu_ms:.1f}"
        return f"{wall_ms:>10.1f}{wall_ms / total_ms:>7.0%}{cpu:>9}"

    def cpu_ms(series: Samples) -> float:
        return statistics.median(series.cpu) / 1e6

    shared = [
        ("otlp.parse_protobuf", breakdown.parse),
        ("otlp.spans() walk -> PlainSpan", breakdown.walk),
        ("convert_spans (incl. pricing)", breakdown.convert),
    ]
    totals = {b.name: samples[b.name].median_ms() for b in backends}
    for label, series in shared:
        cells = "".join(cell(series.median_ms(), cpu_ms(series), totals[b.name]) for b in backends)
        print(f"  {label:<34}{cells}")
    inserts = {b.name: breakdown.insert[b.name] for b in backends}
    cells = "".join(
        cell(inserts[b.name].median_ms(), cpu_ms(inserts[b.name]), totals[b.name]) for b in backends
    )
    print(f"  {'insert_events (one transaction)':<34}{cells}")
    cells = ""
    for backend in backends:
        rest = totals[backend.name] - inserts[backend.name].median_ms()
        rest -= sum(series.median_ms() for _, series in shared)
        cells += cell(rest, None, totals[backend.name])
    print(f"  {'rest (tenant lookup, overhead)':<34}{cells}")
    cells = "".join(cell(totals[b.name], cpu_ms(samples[b.name]), totals[b.name]) for b in backends)
    print(f"  {'= ingest_traces':<34}{cells}")
    floors = {b.name: breakdown.floor[b.name] for b in backends}
    cells = "".join(
        cell(floors[b.name].median_ms(), cpu_ms(floors[b.name]), totals[b.name]) for b in backends
    )
    print(f"  {'floor: the rows alone (not a stage)':<34}{cells}")
    print(
        "  (floor: the same rows written into economic_event alone and committed, the cheapest\n"
        "   way the driver has, for a tenant of their own: what storing them costs in this schema)"
    )


def report_targets(
    rates: dict[str, tuple[float, float]], decode_rate: float, backends: Sequence[Backend]
) -> None:
    """Verdicts on the median wall-clock rates; the CPU-time figures beside them, for load."""
    decode_cpu = rates[DECODE_LABEL][1]
    print()
    print("targets (informational; verdict on the median rate, CPU-time figure in brackets)")
    for backend in backends:
        rate, cpu_rate = rates[f"ingest_traces, {backend.name}"]
        print(
            f"  {backend.name + ':':<12} ingest {rate:>9,.0f} events/s per core ({cpu_rate:,.0f})"
            f"{'':>6}target >= {TARGET_RATE:,.0f}   {_verdict(rate >= TARGET_RATE)}"
        )
    for backend in backends:
        rate, cpu_rate = rates[f"ingest_traces, {backend.name}"]
        ratio, cpu_ratio = rate / decode_rate, cpu_rate / decode_cpu
        print(
            f"  {backend.name + ':':<12} ingest / decode-only {ratio:>6.2f} ({cpu_ratio:.2f})"
            f"{'':>14}target >= {TARGET_RATIO:.1f}      {_verdict(ratio >= TARGET_RATIO)}"
        )


def report_bounds(
    samples: dict[str, Samples], breakdown: Breakdown, backends: Sequence[Backend], spans: int
) -> None:
    """The best an ingest could do if converting, pricing, rollups and owners cost nothing:
    the decode-only median plus the floor's."""
    decode = samples[DECODE]
    decode_wall = statistics.median(decode.wall)
    decode_cpu = statistics.median(decode.cpu)
    print()
    print("bounds: decode-only + floor, i.e. everything else free (CPU-time figure in brackets)")
    for backend in backends:
        floor = breakdown.floor[backend.name]
        wall = decode_wall + statistics.median(floor.wall)
        cpu = decode_cpu + statistics.median(floor.cpu)
        print(
            f"  {backend.name + ':':<12} at most {spans / (wall / 1e9):>9,.0f} events/s "
            f"({spans / (cpu / 1e9):,.0f}), at most {decode_wall / wall:.2f} x decode-only "
            f"({decode_cpu / cpu:.2f})"
        )


def _versions() -> str:
    parts = [f"Python {sys.version.split()[0]}"]
    for name in ("protobuf", "SQLAlchemy", "psycopg"):
        with suppress(importlib.metadata.PackageNotFoundError):
            version = importlib.metadata.version(name)
            if name == "protobuf":
                version += f" ({api_implementation.Type()})"
            parts.append(f"{name} {version}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=25, help="timed requests per backend")
    parser.add_argument("--spans", type=int, default=1000, help="spans per export request")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per backend")
    parser.add_argument("--seed", type=int, default=402, help="seed of the attribute values")
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES,
        help="a database to connect to for creating (and dropping) a throwaway one",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the stage timings")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="cProfile N requests per backend"
    )
    parser.add_argument("--profile-top", type=int, default=25, help="functions per profile")
    args = parser.parse_args()
    if args.requests < 1 or args.spans < 1 or min(args.warmup, args.profile) < 0:
        parser.error("--requests and --spans must be >= 1, --warmup and --profile >= 0")

    started = time.perf_counter()
    count = max(args.requests, args.warmup, args.profile)
    print(
        f"building {count} export requests x {args.spans:,} spans x {ATTRIBUTES_PER_SPAN} "
        "attributes with the OpenTelemetry SDK (not timed) ..."
    )
    payloads = build_payloads(count, args.spans, args.seed)
    sizes = [len(payload) for payload in payloads]
    print(
        f"  {statistics.mean(sizes) / 1e6:.2f} MB per request (protobuf, not compressed), "
        f"{statistics.mean(sizes) / args.spans:.0f} bytes per span, "
        f"built in {time.perf_counter() - started:.0f} s"
    )
    print(f"  {_versions()}")

    with ExitStack() as stack:
        backends = [stack.enter_context(sqlite_backend())]
        if not args.no_postgres:
            try:
                backends.append(stack.enter_context(postgres_backend(args.postgres_url)))
            except Exception as error:  # the server is optional: go on with SQLite
                print(f"  PostgreSQL left out: {type(error).__name__}: {error}")
        print("  " + ", ".join(server_version(backend.engine) for backend in backends))
        breakdown = None if args.no_breakdown else Breakdown()
        if args.warmup:
            warmup = None if breakdown is None else Breakdown()
            measure_rounds(payloads[: args.warmup], backends, args.spans, "warmup", warmup)
        names = [DECODE] + [f"ingest_traces {b.name}" for b in backends]
        names += [] if breakdown is None else ["stages one by one"]
        print(f"timing {args.requests} requests, interleaved: {', '.join(names)} ...")
        samples = measure_rounds(
            payloads[: args.requests], backends, args.spans, "ingest", breakdown
        )
        for backend in backends:
            stored, mismatched = backend.rows("ingest")
            expected = args.requests * args.spans
            if stored != expected:
                raise RuntimeError(f"{backend.name}: {stored} rows stored, {expected} expected")
            if mismatched:
                print(f"  note: {backend.name}: {mismatched} events flagged cost_mismatch")
        report(samples, breakdown, backends, args.spans)
        for backend in backends:
            if args.profile:
                profile_ingest(payloads, backend, args.spans, args.profile, args.profile_top)
    print(f"\n({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
