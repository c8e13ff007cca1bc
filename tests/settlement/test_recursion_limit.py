"""The chain libraries raise the interpreter's recursion limit on import (py_ecc to 100,000,
py-evm to 12,288); P402 puts it back, so that a deeply nested JSON body raises
``RecursionError`` instead of overflowing the C stack and killing a server."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import json, sys
default = sys.getrecursionlimit()
import p402.api.app
from p402.settlement.chain import embedded_chain
embedded_chain()
assert sys.getrecursionlimit() == default, sys.getrecursionlimit()
try:
    json.loads("[" * 200_000 + "]" * 200_000)
except RecursionError:
    print("RecursionError")
"""


def test_importing_the_app_and_the_embedded_chain_keeps_deep_json_a_recursion_error():
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "RecursionError"
