"""``p402 export``, ``p402 import`` and ``p402 tenant delete``.

``export`` and ``import`` talk to a running P402 server (``--endpoint`` / ``P402_ENDPOINT``,
``--api-key`` / ``P402_API_KEY``), so they work from any machine with a key and respect its
role and tenant. ``tenant delete`` is an operator's command: it works directly on the
``P402_DATABASE_URL`` database, like ``p402 keys create``, so a tenant can be erased even
when none of its keys is left.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import click

from p402.api.cli_database import ledger
from p402.api.remote import ApiClient, RemoteError
from p402.instrumentation.vocabulary import (
    EVENT_FILTERS,
    EXPORT_FORMATS,
    EXPORT_MEDIA_TYPES,
    TOTAL_EVENTS_HEADER,
)
from p402.ledger.provider_csv import CSV_MEDIA_TYPE, looks_like_csv
from p402.ledger.provider_reports import PROVIDERS

__all__ = ["export_command", "import_command", "tenant"]

_CHUNK: Final = 1 << 16
_IMPORT_FIGURES: Final = ("results", "inserted", "updated", "unchanged")
_F = TypeVar("_F", bound=Callable[..., Any])


def _say(message: str) -> None:
    click.echo(message, err=True)


def _remote_options(command: _F) -> _F:
    command = click.option(
        "--api-key", envvar="P402_API_KEY", help="An API key of the tenant (or P402_API_KEY)."
    )(command)
    return click.option(
        "--endpoint",
        envvar="P402_ENDPOINT",
        help="The P402 server (or P402_ENDPOINT; default http://127.0.0.1:4318).",
    )(command)


def _client(endpoint: str | None, api_key: str | None) -> ApiClient:
    try:
        return ApiClient(endpoint, api_key)
    except RemoteError as error:
        raise click.UsageError(str(error)) from None


def _fail(error: RemoteError) -> None:
    where = f"HTTP {error.status}, " if error.status else ""
    _say(f"error ({where}{error.code}): {error}")
    sys.exit(1)


class _CsvRecords:
    """Counts the records of a CSV stream as it passes: a line end outside quotes ends one."""

    def __init__(self) -> None:
        self.count = 0
        self._quoted = False

    def feed(self, data: bytes) -> None:
        if not self._quoted and b'"' not in data:
            self.count += data.count(b"\n")
            return
        for byte in data:
            if byte == 0x22:  # '"': escaped quotes ("") toggle twice
                self._quoted = not self._quoted
            elif byte == 0x0A and not self._quoted:
                self.count += 1


class _Progress:
    """Progress on standard error: updated in place on a terminal, now and then otherwise."""

    def __init__(self, total: int | None, unit: str) -> None:
        self.total = total
        self.unit = unit
        self._tty = sys.stderr.isatty()
        self._shown = time.monotonic()

    def _line(self, done: int) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        return f"exported {done}{of} {self.unit}"

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self._shown < (0.2 if self._tty else 5.0):
            return
        self._shown = now
        click.echo(("\r" if self._tty else "") + self._line(done), err=True, nl=not self._tty)

    def finish(self, done: int, where: str) -> None:
        click.echo(("\r" if self._tty else "") + f"{self._line(done)} to {where}", err=True)


@click.command("export")
@click.option(
    "--format",
    "export_format",
    type=click.Choice(EXPORT_FORMATS),
    default="csv",
    show_default=True,
    help="csv (the event fields), focus (FinOps FOCUS 1.2 CSV) or bundle (finance zip).",
)
@click.option(
    "--output",
    "-o",
    default="-",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    help="File to write (default: standard output).",
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="NAME=VALUE",
    help=f"Only matching events; NAME is one of {', '.join(EVENT_FILTERS)}. Repeatable.",
)
@click.option("--from", "from_", metavar="ISO", help="Start (inclusive), ISO-8601.")
@click.option("--to", metavar="ISO", help="End (exclusive), ISO-8601.")
@_remote_options
def export_command(
    export_format: str,
    output: str,
    filters: tuple[str, ...],
    from_: str | None,
    to: str | None,
    endpoint: str | None,
    api_key: str | None,
) -> None:
    """Export the tenant's events (GET /v1/export) to a file or standard output."""
    query: list[tuple[str, str]] = [("format", export_format)]
    for item in filters:
        name, sep, value = item.partition("=")
        if not sep or name not in EVENT_FILTERS:
            raise click.BadParameter(
                f"{item!r}: expected NAME=VALUE, NAME one of {', '.join(EVENT_FILTERS)}",
                param_hint="--filter",
            )
        query.append((name, value))
    query += [(name, value) for name, value in (("from", from_), ("to", to)) if value]
    client = _client(endpoint, api_key)
    try:
        response = client.open("GET", "/v1/export", query=query)
    except RemoteError as error:
        _fail(error)
        return
    total_header = response.headers.get(TOTAL_EVENTS_HEADER) or ""
    media_type = (response.headers.get("content-type") or "").split(";")[0].strip()
    if not total_header.isdigit() or media_type != EXPORT_MEDIA_TYPES[export_format]:
        response.close()
        _fail(
            RemoteError(
                None,
                "bad_answer",
                f"{client.endpoint} did not answer as a P402 server "
                f"({media_type or 'no content type'}, no count of events)",
            )
        )
        return
    total = int(total_header)
    rows = _CsvRecords() if export_format != "bundle" else None
    progress = _Progress(total, "rows") if rows else _Progress(None, "bytes")
    written = 0
    where = "standard output" if output == "-" else output
    # A file is written beside its name and takes it once whole: an export cut short (an
    # error, Ctrl-C, the process killed) never leaves a truncated file under that name.
    part = None if output == "-" else f"{output}.part"
    try:
        target = click.open_file(part or output, "wb")
    except OSError as error:
        response.close()
        _say(f"error: cannot write {where}: {error}")
        sys.exit(1)
    try:
        with response, target:
            sink: IO[bytes] = target
            while chunk := response.read(_CHUNK):
                sink.write(chunk)
                written += len(chunk)
                if rows is not None:
                    rows.feed(chunk)
                    progress.update(max(rows.count - 1, 0))  # the header is not a row
                else:
                    progress.update(written)
    except (OSError, http.client.HTTPException) as error:
        _broken_off(part, f"the export to {where} broke off after {written:,} bytes: {error}")
    except KeyboardInterrupt:
        _broken_off(part, f"the export to {where} was interrupted after {written:,} bytes", 130)
    if rows is not None:
        exported = max(rows.count - 1, 0)
        if exported < total:  # more may have arrived since the count; never fewer
            _broken_off(part, f"the export ended after {exported} of {total} rows")
    if part is not None:
        Path(part).replace(output)
    if rows is not None:
        progress.finish(exported, where)
    else:
        progress.total, progress.unit = total, f"events ({written} bytes)"
        progress.finish(total, where)


def _broken_off(part: str | None, message: str, status: int = 1) -> None:
    """Say that an export is incomplete, remove what was written of it, and exit."""
    if part is not None:
        Path(part).unlink(missing_ok=True)
    _say(f"error: {message}; nothing is left of it")
    sys.exit(status)


@click.command("import")
@click.argument("provider", type=click.Choice(PROVIDERS))
@click.argument("files", nargs=-1, required=True, type=click.File("rb"))
@_remote_options
def import_command(
    provider: str, files: tuple[IO[bytes], ...], endpoint: str | None, api_key: str | None
) -> None:
    """Import PROVIDER's usage or cost reports from FILES (POST /v1/imports/PROVIDER): the
    Admin API's JSON pages, or the console's CSV exports (a .csv file, or any file that is not
    JSON); prints each file's outcome as a JSON line."""
    client = _client(endpoint, api_key)
    for file in files:
        body = file.read()
        csv_export = looks_like_csv(file.name, body[:4096])
        try:
            outcome = client.json(
                "POST",
                f"/v1/imports/{provider}",
                body=body,
                content_type=f"{CSV_MEDIA_TYPE}; charset=utf-8"
                if csv_export
                else "application/json",
            )
        except RemoteError as error:
            _say(f"{file.name}: not imported")
            _fail(error)
            return
        if not all(name in outcome for name in _IMPORT_FIGURES):
            _say(f"{file.name}: not known to be imported")
            _fail(RemoteError(None, "bad_answer", f"{client.endpoint} answered {outcome}"))
            return
        _say(
            f"{file.name}: {outcome['results']} results, {outcome['inserted']} new, "
            f"{outcome['updated']} updated, {outcome['unchanged']} unchanged"
        )
        click.echo(json.dumps({"file": file.name, **outcome}))


@click.group()
def tenant() -> None:
    """Manage tenants (directly on the P402_DATABASE_URL database)."""


@tenant.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def tenant_delete(name: str, yes: bool) -> None:
    """Delete every row of tenant NAME in every table, the tenant and its keys included."""
    from p402.ledger.erasure import erase_tenant
    from p402.ledger.keys import tenant_id

    engine = ledger()
    try:
        found = tenant_id(engine, name)
        if found is None:
            _say(f"no tenant {name!r}")
            sys.exit(1)
        if not yes:
            click.confirm(
                f"Delete all data of tenant {name!r}? This cannot be undone", abort=True, err=True
            )
        deleted = erase_tenant(engine, found)
    finally:
        engine.dispose()
    _say(f"deleted tenant {name!r}: {sum(deleted.values())} rows")
    click.echo(json.dumps({"tenant": name, "deleted": deleted}))
