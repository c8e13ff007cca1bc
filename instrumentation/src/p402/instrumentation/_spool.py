"""Durable export: a batch of economic events the P402 endpoint cannot take now waits on disk.

:class:`SpoolingSpanExporter` serializes each batch to OTLP protobuf once and POSTs it to
``{endpoint}/v1/traces`` over a kept-alive HTTP/1.1 connection of its own
(:mod:`p402.instrumentation._http`; never ``httpx``, whose ``send`` the instrumentation
hooks), with every other instrumentation suppressed. As with ``requests``, a proxy comes
from ``HTTP(S)_PROXY`` / ``NO_PROXY`` and the CA bundle from ``REQUESTS_CA_BUNDLE`` /
``CURL_CA_BUNDLE`` (else certifi's), both read once; through a proxy, or to a URL with
credentials in it, the POST goes over ``urllib3``. The answer decides:

* 2xx: delivered.
* A connection error, a timeout, 408, 429, 5xx (anything but a refusal): the endpoint may
  take the batch later, so it goes to the :class:`Spool`.
* Any other 4xx: the endpoint refused the data and always will; it is dropped with an error.

The spool is one directory of files, one per batch, written atomically (temporary file,
``fsync``, ``os.replace``, ``fsync`` of the directory) and named
``<time_ns>-<pid>.<tag>.batch`` so that lexical order is creation order. ``tag`` hashes the
URL and headers (the API key), so processes exporting to different endpoints or tenants can
share a directory without ever delivering each other's batches. The directory is bounded
by ``spool_max_bytes``: past it, new batches are dropped, counted in ``dropped_spans``, with
a warning at most once a minute.

Spooled batches are delivered oldest first and deleted after a 2xx, before every new export
and by a daemon thread that retries with backoff (1 s doubling to 30 s) while any wait, so
the spool drains even when no new spans come. A new batch never overtakes spooled ones:
while the spool cannot be drained, new batches join it. To send a file, a process first
claims it by renaming it to ``<name>.sending-<pid>``; only one process can win that rename,
so each batch is sent once. A failed send renames it back. A claim older than five minutes
belongs to a crashed process and is taken back; only then (a crash between the receiver's
2xx and the delete) can a batch arrive twice, which the receiver ignores (it keeps one event
per ``p402.event.id``). ``export`` never raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import ssl
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import urllib3
from google.protobuf.message import DecodeError
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from p402.instrumentation._http import ILLEGAL_IN_HEADER, Connection
from p402.instrumentation.version import __version__

__all__ = ["Spool", "SpoolingSpanExporter"]

logger = logging.getLogger(__name__)

BATCH_SUFFIX = ".batch"
CLAIM_MARK = ".sending-"
TEMP_SUFFIX = ".tmp"
STALE_CLAIM_SECONDS = 300.0
WARNING_INTERVAL_SECONDS = 60.0
MAX_BYTES_SETTING = "P402_SPOOL_MAX_BYTES (spool_max_bytes)"
_RETRYABLE_4XX = frozenset({408, 429})


class _Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REFUSED = "refused"


class _Throttle:
    """``ready()`` is true at most once per ``interval`` seconds."""

    def __init__(self, interval: float = WARNING_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._last: float | None = None

    def ready(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True


class Spool:
    """A directory of serialized batches for one destination, at most ``max_bytes`` in all.

    Files of other destinations (other tags) are left alone but count towards the bound.
    Not thread-safe: :class:`SpoolingSpanExporter` calls it under its lock.
    """

    def __init__(self, directory: Path, max_bytes: int, tag: str) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.suffix = f".{tag}{BATCH_SUFFIX}"
        self._last_ns = 0

    def _entries(self) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self.directory) as entries:
                return [entry for entry in entries if entry.is_file()]
        except OSError:  # not created yet (or unusable: put() reports that)
            return []

    def pending(self) -> list[str]:
        """The names of this destination's unclaimed batches, oldest first, after taking back
        stale claims and deleting stale temporary files."""
        names = []
        stale = time.time() - STALE_CLAIM_SECONDS
        for entry in self._entries():
            name = entry.name
            with contextlib.suppress(FileNotFoundError):
                if name.endswith(self.suffix):
                    names.append(name)
                elif CLAIM_MARK in name and entry.stat().st_mtime < stale:
                    original = name.partition(CLAIM_MARK)[0]
                    if original.endswith(self.suffix):
                        os.rename(entry.path, self.directory / original)
                        logger.warning("P402 spool: took back %s from a stopped process", name)
                        names.append(original)
                elif name.endswith(TEMP_SUFFIX) and entry.stat().st_mtime < stale:
                    os.unlink(entry.path)
        return sorted(names)

    def usage(self) -> int:
        total = 0
        for entry in self._entries():
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_size
        return total

    def put(self, body: bytes) -> bool:
        """Store ``body`` durably as the newest batch; ``False`` when it would not fit."""
        if self.usage() + len(body) > self.max_bytes:
            return False
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        name = f"{self._last_ns:020d}-{os.getpid()}{self.suffix}"
        temporary = self.directory / f".{name}{TEMP_SUFFIX}"
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(descriptor, "wb") as file:
                file.write(body)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.directory / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        if os.name == "posix":
            descriptor = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        return True

    def claim(self, name: str) -> Path | None:
        """Rename the batch to this process's claim; ``None`` if another process got it."""
        claimed = self.directory / f"{name}{CLAIM_MARK}{os.getpid()}"
        try:
            os.rename(self.directory / name, claimed)
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):
            os.utime(claimed)  # the claim's age, for taking back claims of crashed processes
        return claimed

    def release(self, claimed: Path) -> None:
        os.rename(claimed, claimed.with_name(claimed.name.partition(CLAIM_MARK)[0]))

    def remove(self, claimed: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(claimed)


def _ca_bundle(url: str) -> tuple[str | None, str | None]:
    """The CA file and CA directory to verify ``url``'s server with (``None``, ``None`` for
    plain HTTP): ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``, else certifi's."""
    ca_certs = ca_cert_dir = None
    if url.startswith("https:"):
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle is None:
            with contextlib.suppress(ImportError):
                import certifi

                bundle = certifi.where()
        if bundle is not None and os.path.isdir(bundle):
            ca_cert_dir = bundle
        else:
            ca_certs = bundle
    return ca_certs, ca_cert_dir


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url``, if any."""
    parts = urlsplit(url)
    if proxy_bypass(parts.hostname or ""):
        return None
    proxies = getproxies()
    return proxies.get(parts.scheme) or proxies.get("all") or None


def _pool_for(url: str) -> urllib3.PoolManager:
    """Connections to ``url``'s host, through the proxy the environment names for it."""
    ca_certs, ca_cert_dir = _ca_bundle(url)
    proxy = _proxy_for(url)
    if proxy:
        return urllib3.ProxyManager(
            proxy, retries=False, ca_certs=ca_certs, ca_cert_dir=ca_cert_dir
        )
    return urllib3.PoolManager(retries=False, ca_certs=ca_certs, ca_cert_dir=ca_cert_dir)


_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_USER_AGENT: Final = f"p402-instrumentation/{__version__}"


class _DirectPost:
    """POSTs to ``url`` over one kept-alive HTTP/1.1 connection of its own
    (:class:`~p402.instrumentation._http.Connection`): the request's head is built once, and
    each POST is one write of head and body and a lean reading of the answer."""

    __slots__ = ("_connection", "_head")

    def __init__(self, connection: Connection, head: bytes) -> None:
        self._connection = connection
        self._head = head

    def post(self, body: bytes) -> tuple[int, bytes]:
        """Status and body of the answer; raises ``OSError`` when there is none."""
        connection = self._connection
        connection.is_stale()  # a kept-alive connection the server has closed meanwhile
        length = str(len(body)).encode("ascii")
        return connection.exchange(b"".join((self._head, length, b"\r\n\r\n", body)))

    def close(self) -> None:
        self._connection.close()


def _direct_post_for(url: str, headers: Mapping[str, str], timeout: float) -> _DirectPost | None:
    """A :class:`_DirectPost` to ``url``; ``None`` when it goes through a proxy, or when
    the URL or the headers are anything but plain (``urllib3`` then sends it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or _proxy_for(url):
        return None
    if parts.username is not None or parts.password is not None:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    lines = [
        f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"User-Agent: {_USER_AGENT}",
    ]
    for name, value in headers.items():
        if (
            not _HEADER_NAME.fullmatch(name)
            or name.lower() in ("host", "content-length", "transfer-encoding", "connection")
            or ILLEGAL_IN_HEADER.search(value)
        ):
            return None
        lines.append(f"{name}: {value}")
    lines.append("Content-Length: ")
    try:
        head = "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        return None
    context = None
    if parts.scheme == "https":
        ca_certs, ca_cert_dir = _ca_bundle(url)
        try:
            context = ssl.create_default_context(cafile=ca_certs, capath=ca_cert_dir)
        except (OSError, ssl.SSLError):  # an unreadable bundle: urllib3 reports it per POST
            return None
    connection = Connection(
        parts.hostname, port, https=parts.scheme == "https", timeout=timeout, context=context
    )
    return _DirectPost(connection, head)


def _destination_tag(url: str, headers: Mapping[str, str]) -> str:
    identity = "\0".join([url, *(f"{k.lower()}={v}" for k, v in sorted(headers.items()))])
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


class SpoolingSpanExporter(SpanExporter):
    """OTLP/HTTP protobuf export to ``url`` that spools what cannot be delivered yet.

    See the module docstring. ``dropped_spans`` counts the spans lost to a full (or
    unwritable) spool.
    """

    def __init__(
        self,
        url: str,
        spool_dir: Path,
        *,
        headers: Mapping[str, str] | None = None,
        max_bytes: int,
        timeout: float = 10.0,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.url = url
        self.headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        self.spool = Spool(spool_dir, max_bytes, _destination_tag(url, headers or {}))
        self.timeout = timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.dropped_spans = 0
        self._closed = False
        self._drop_warning = _Throttle()
        self._failure_warning = _Throttle()
        self._rejection_warning = _Throttle()
        self.rejected_spans = 0
        """Spans the endpoint took but refused (OTLP ``partial_success``): lost."""
        self._start()
        if hasattr(os, "register_at_fork"):
            reference = weakref.WeakMethod(self._start)

            def restart_in_child() -> None:
                if (start := reference()) is not None:
                    start()

            os.register_at_fork(after_in_child=restart_in_child)

    def _start(self) -> None:
        """Fresh locks, session and no retry thread (also in a forked child), then resume
        the delivery of whatever the spool holds."""
        self._lock = threading.Lock()
        self._pool = _pool_for(self.url)
        self._direct = _direct_post_for(self.url, self.headers, self.timeout)
        self._stop = threading.Event()
        self._pending = threading.Event()
        self._thread: threading.Thread | None = None
        with contextlib.suppress(OSError):
            if not self._closed and self.spool.pending():
                self._wake_retry_thread()

    # -- the SpanExporter interface ------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Deliver the batch, or spool it; ``SUCCESS`` unless it was refused or dropped."""
        try:
            body = encode_spans(spans).SerializeToString()
        except Exception:
            logger.exception("P402 could not encode %d economic event(s)", len(spans))
            return SpanExportResult.FAILURE
        return self.export_encoded(body, len(spans))

    def export_encoded(self, body: bytes, count: int) -> SpanExportResult:
        """:meth:`export` for a batch already encoded as an ``ExportTraceServiceRequest``."""
        try:
            with self._lock:
                outcome = self._post(body) if self._ready_locked() else _Outcome.RETRY
                if outcome is _Outcome.RETRY:
                    return self._keep(body, count)
        except Exception:
            logger.exception("P402 could not export %d economic event(s)", count)
            return SpanExportResult.FAILURE
        if outcome is _Outcome.DELIVERED:
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Try to deliver every spooled batch now; ``True`` when none is left."""
        try:
            return self._drain(time.monotonic() + timeout_millis / 1000)
        except Exception:
            logger.exception("P402 could not deliver its spooled economic events")
            return False

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Stop the retry thread, then try once more to empty the spool. Later batches are
        spooled for the next process that exports to this endpoint."""
        if self._closed:
            return
        deadline = time.monotonic() + timeout_millis / 1000
        self._closed = True
        self._stop.set()
        self._pending.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self.force_flush(max(0, int((deadline - time.monotonic()) * 1000)))
        with self._lock:
            self._pool.clear()
            if self._direct is not None:
                self._direct.close()

    # -- delivery ------------------------------------------------------------------------

    def _post(self, body: bytes) -> _Outcome:
        try:
            with suppress_instrumentation():
                if self._direct is not None:
                    status, answer = self._direct.post(body)
                else:
                    response = self._pool.request(
                        "POST", self.url, body=body, headers=self.headers, timeout=self.timeout
                    )
                    status, answer = response.status, response.data
        except Exception as error:  # connection refused, timeout, TLS, ...
            self._warn_failure(f"{type(error).__name__}: {error}")
            return _Outcome.RETRY
        if 200 <= status < 300:
            if answer:  # an empty answer: every span was taken
                self._note_rejections(answer)
            return _Outcome.DELIVERED
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            logger.error(
                "P402 endpoint %s refused a batch of economic events with HTTP %d (%s); "
                "it is dropped, since sending it again cannot succeed",
                self.url,
                status,
                answer[:200].decode("utf-8", "replace"),
            )
            return _Outcome.REFUSED
        self._warn_failure(f"HTTP {status}")
        return _Outcome.RETRY

    def _note_rejections(self, answer: bytes) -> None:
        """Count the spans a delivered batch had refused (invalid, or signed with a key the
        endpoint does not know), and say so: sending them again cannot succeed."""
        try:
            partial = ExportTraceServiceResponse.FromString(answer).partial_success
        except DecodeError:
            return
        if partial.rejected_spans:
            self.rejected_spans += partial.rejected_spans
            if self._rejection_warning.ready():
                logger.error(
                    "P402 endpoint %s refused %d economic event(s) in all so far; they are "
                    "lost (latest reason: %s)",
                    self.url,
                    self.rejected_spans,
                    partial.error_message[:500] or "none given",
                )

    def _warn_failure(self, reason: str) -> None:
        if self._failure_warning.ready():
            logger.warning(
                "P402 endpoint %s is unavailable (%s); economic events wait in %s and are retried",
                self.url,
                reason,
                self.spool.directory,
            )

    def _ready_locked(self) -> bool:
        """Whether a new batch may be sent now: open, and nothing older waits in the spool."""
        if self._closed:
            return False
        try:
            return self._drain_locked(deadline=None)
        except Exception:
            logger.exception("P402 could not deliver its spooled economic events")
            return False

    def _drain(self, deadline: float | None) -> bool:
        timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            return self._drain_locked(deadline)
        finally:
            self._lock.release()

    def _drain_locked(self, deadline: float | None) -> bool:
        """Send spooled batches oldest first until one fails; ``True`` when none is left."""
        while names := self.spool.pending():
            progressed = False
            for name in names:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                claimed = self.spool.claim(name)
                if claimed is None:
                    continue
                try:
                    outcome = self._post(claimed.read_bytes())
                except BaseException:
                    self.spool.release(claimed)
                    raise
                if outcome is _Outcome.RETRY:
                    self.spool.release(claimed)
                    return False
                self.spool.remove(claimed)
                progressed = True
            if not progressed:
                return not self.spool.pending()
        return True

    def _keep(self, body: bytes, count: int) -> SpanExportResult:
        try:
            if self.spool.put(body):
                self._wake_retry_thread()
                return SpanExportResult.SUCCESS
            problem = (
                f"is full ({self.spool.usage()} bytes used, limit {self.spool.max_bytes} bytes; "
                f"raise {MAX_BYTES_SETTING} to keep more)"
            )
        except OSError as error:
            problem = f"cannot be written ({error})"
        self.dropped_spans += count
        if self._drop_warning.ready():
            logger.warning(
                "P402 spool %s %s: economic events that %s cannot take now are dropped; "
                "%d span(s) dropped so far",
                self.spool.directory,
                problem,
                self.url,
                self.dropped_spans,
            )
        return SpanExportResult.FAILURE

    # -- the retry thread ----------------------------------------------------------------

    def _wake_retry_thread(self) -> None:
        self._pending.set()
        if self._closed or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._retry, name="p402-spool-retry", daemon=True)
        self._thread.start()

    def _retry(self) -> None:
        delay = self.min_backoff
        while not self._stop.is_set():
            self._pending.wait()
            if self._stop.wait(delay):
                return
            self._pending.clear()
            try:
                empty = self._drain(deadline=None)
            except Exception:
                logger.exception("P402 could not deliver its spooled economic events")
                empty = False
            if empty:
                delay = self.min_backoff
            else:
                self._pending.set()
                delay = min(delay * 2, self.max_backoff)
