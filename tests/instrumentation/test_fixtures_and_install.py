"""The stand-in's fixtures, and the instrumentation distribution on its own."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from p402.instrumentation.testing import FIXTURES_DIR

REPO = Path(__file__).resolve().parents[2]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures" / "providers"


@pytest.mark.skipif(not SHARED_FIXTURES.is_dir(), reason="no shared fixtures beside the repo")
def test_packaged_fixtures_are_the_shared_ones():
    shared = {path.name: path.read_bytes() for path in SHARED_FIXTURES.iterdir()}
    packaged = {
        path.name: path.read_bytes() for path in FIXTURES_DIR.iterdir() if path.suffix != ".py"
    }
    assert packaged == shared


def test_the_instrumentation_installs_alone_without_server_dependencies(tmp_path):
    uv = shutil.which("uv")
    assert uv, "uv is needed to build the empty environment"
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "-q", "-p", str(python), str(REPO / "instrumentation")],
        check=True,
    )
    probe = (
        "import importlib.util, p402.instrumentation as p;"
        "p.P402Instrumentor().instrument(endpoint='http://127.0.0.1:9');"
        "p.P402Instrumentor().uninstrument();"
        "heavy = ['sqlalchemy', 'sqlmodel', 'web3', 'litestar', 'uvicorn', 'psycopg'];"
        "print(','.join(m for m in heavy if importlib.util.find_spec(m)))"
    )
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
