"""What importing a part of P402 loads: the instrumentor, Alembic, psycopg, fpdf2 and (for the
command line) SQLAlchemy only when used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _loaded_after(statement: str, *modules: str) -> dict[str, bool]:
    """Run ``statement`` in a fresh interpreter; which of ``modules`` it loaded."""
    report = f"print(json.dumps({{m: m in sys.modules for m in {list(modules)!r}}}))"
    probe = f"{statement}\nimport json, sys\n{report}"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    loaded: dict[str, bool] = json.loads(done.stdout.splitlines()[-1])
    return loaded


HEAVY = ("p402.instrumentation.instrumentor", "opentelemetry.sdk.trace", "alembic", "psycopg")


@pytest.mark.parametrize(
    "statement",
    [
        "import p402.instrumentation.vocabulary, p402.instrumentation.money",
        "import p402.receiver.conversion",
        "import p402.ledger.events, p402.ledger.database",
    ],
)
def test_the_vocabulary_receiver_and_ledger_load_no_instrumentor_alembic_or_psycopg(statement):
    assert _loaded_after(statement, *HEAVY) == dict.fromkeys(HEAVY, False)


def test_the_command_line_loads_no_database_layer_until_a_command_needs_it():
    assert _loaded_after("import p402.api.cli", "sqlalchemy", *HEAVY) == dict.fromkeys(
        ("sqlalchemy", *HEAVY), False
    )


def test_receipt_documents_load_fpdf_only_when_one_is_made():
    statement = "import p402.settlement.documents as documents"
    assert _loaded_after(statement, "fpdf") == {"fpdf": False}


def test_the_packages_names_are_there_when_used():
    statement = (
        "import types, p402.instrumentation.owner\n"
        "from p402.instrumentation import P402Instrumentor, current_owner, owner\n"
        "assert callable(owner) and not isinstance(owner, types.ModuleType)\n"
        "assert P402Instrumentor.__module__ == 'p402.instrumentation.instrumentor'\n"
        "import p402.instrumentation as package\n"
        "assert {'P402Instrumentor', 'owner'} <= set(dir(package))"
    )
    assert _loaded_after(statement, "p402.instrumentation.instrumentor") == {
        "p402.instrumentation.instrumentor": True
    }


def test_a_missing_name_of_the_package_is_an_attribute_error():
    import p402.instrumentation

    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        p402.instrumentation.Nothing  # noqa: B018
