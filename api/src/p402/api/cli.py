"""The ``p402`` command line. Results go to standard output, messages to standard error."""

from __future__ import annotations

import gc
import os
import sys
from typing import BinaryIO

import click

from p402.api.cli_data import export_command, import_command, tenant
from p402.api.cli_database import ledger, redact_url
from p402.instrumentation.vocabulary import Role

__all__ = ["main"]


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="p402-api", prog_name="p402")
def main() -> None:
    """P402: the metering layer that makes AI spend auditable."""


@main.command()
@click.option(
    "--host",
    default=lambda: os.environ.get("P402_HOST", "127.0.0.1"),
    show_default="127.0.0.1 or P402_HOST",
)
@click.option(
    "--port",
    type=click.IntRange(min=1, max=65535),
    envvar="P402_PORT",
    default=4318,
    show_default="4318 or P402_PORT",
)
@click.option(
    "--grpc-port",
    type=click.IntRange(min=0, max=65535),
    envvar="P402_GRPC_PORT",
    default=4317,
    show_default="4317 or P402_GRPC_PORT",
    help="Port of the OTLP/gRPC receiver (0: none).",
)
def serve(host: str, port: int, grpc_port: int) -> None:
    """Serve the API and the OTLP receiver on the database of P402_DATABASE_URL."""
    import uvicorn

    from p402.api.app import create_app
    from p402.api.otlp_grpc import OtlpGrpcServer
    from p402.api.scheduler import SettingsError
    from p402.ledger.database import database_url

    url = database_url()
    engine = ledger(url)
    try:
        app = create_app(engine)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    _say(f"P402 serving on http://{host}:{port} (database {redact_url(url)})")
    grpc_server = None
    if grpc_port:
        try:
            grpc_server = OtlpGrpcServer(engine, host, grpc_port).start()
        except OSError as error:
            _say(f"OTLP/gRPC not served: {error} (choose another --grpc-port, or 0 for none)")
        else:
            _say(f"OTLP/gRPC receiver on {grpc_server.address}")
    # What is loaded by now lives as long as the server: kept out of the garbage collector's
    # full passes, which then take a fraction of the time (a pause on every request in
    # flight).
    gc.collect()
    gc.freeze()
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        if grpc_server is not None:
            grpc_server.stop()


@main.command("migrate")
def migrate_command() -> None:
    """Apply the ledger's migrations to the P402_DATABASE_URL database (creating it)."""
    from p402.ledger.database import database_url

    url = database_url()
    ledger(url)
    _say(f"schema at the latest migration on {redact_url(url)}")


@main.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant (organisation) name; created if new.")
@click.option("--role", required=True, type=click.Choice([role.value for role in Role]))
def keys_create(tenant: str, role: str) -> None:
    """Create an API key and print it, once, alone on standard output."""
    from p402.ledger.keys import check_tenant_name, create_key

    try:
        check_tenant_name(tenant)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--tenant") from None
    engine = ledger()
    identity, key = create_key(engine, tenant=tenant, role=Role(role))
    _say(f"created {role} key {identity.key_id} for tenant {tenant!r}; it is shown only once")
    click.echo(key)


@main.command()
@click.option("--once", is_flag=True, help="Exit after printing the summary.")
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    envvar="P402_PORT",
    default=4318,
    show_default="4318 or P402_PORT, or a free port if taken",
)
def demo(once: bool, port: int) -> None:
    """Run P402 end to end on embedded defaults and print the resulting spend."""
    from p402.api.demo import run_demo

    sys.exit(run_demo(once=once, port=port))


def _address(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    from web3 import Web3

    if value is not None and not Web3.is_address(value):
        raise click.BadParameter(f"{value!r} is not an address (0x and 40 hex digits)")
    return value


@main.command()
@click.argument("bundle", type=click.File("rb"))
@click.option(
    "--rpc-url",
    envvar="P402_CHAIN_RPC_URL",
    required=True,
    help="A JSON-RPC URL of the chain the receipt is anchored on (or P402_CHAIN_RPC_URL).",
)
@click.option(
    "--confirmations",
    type=click.IntRange(min=1),
    default=1,
    show_default="1: Tempo's finality is deterministic",
    help="Blocks, the anchor's included, needed for the anchor to count as final.",
)
@click.option(
    "--require-finalized",
    is_flag=True,
    help="Also require the node's 'finalized' block to cover the anchor's block.",
)
@click.option(
    "--submitter",
    metavar="ADDRESS",
    callback=_address,
    help="The address the receipts' issuer anchors from: the anchor must come from it "
    "(without it, the submitter the bundle names is taken at its word).",
)
def verify(
    bundle: BinaryIO,
    rpc_url: str,
    confirmations: int,
    require_finalized: bool,
    submitter: str | None,
) -> None:
    """Verify a receipt's proof bundle (GET /v1/receipts/{id}/proof; '-' reads standard input)
    against the chain alone: receipt hash, Merkle audit path, anchor transaction, submitter,
    root on chain, block and finality. Exits 1 naming the failed check (2: not a bundle,
    3: node unreachable)."""
    from p402.settlement.chain import EMBEDDED
    from p402.settlement.verify import verify_command

    if rpc_url.strip() in ("", EMBEDDED):
        raise click.BadParameter(
            "names no node. A receipt is verified against a node of the chain it is anchored "
            "on; the embedded chain (P402_CHAIN_RPC_URL unset) lives only in its server's "
            "process, so its receipts cannot be checked from outside: anchor on a real chain "
            "for receipts anyone can verify.",
            param_hint="--rpc-url",
        )
    sys.exit(
        verify_command(
            bundle.read(),
            rpc_url,
            confirmations=confirmations,
            require_finalized_tag=require_finalized,
            submitter=submitter,
            out=click.echo,
            err=_say,
        )
    )


for _command in (export_command, import_command, tenant):
    main.add_command(_command)
