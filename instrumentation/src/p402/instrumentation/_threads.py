"""Owner context for threads started inside it.

``contextvars`` follow ``asyncio`` tasks, but a plain ``threading.Thread`` (or a
``ThreadPoolExecutor`` task) starts with an empty context. While instrumented, a thread
inherits the owner values in force where ``start()`` was called, and an executor task those
where it was submitted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from p402.instrumentation.owner import current_owner, owner_values

__all__ = ["patch_threads", "unpatch_threads"]

_OWNER_ATTRIBUTE = "_p402_owner"


def _start(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    setattr(instance, _OWNER_ATTRIBUTE, current_owner())
    return wrapped(*args, **kwargs)


def _run(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    values: Mapping[str, str] | None = getattr(instance, _OWNER_ATTRIBUTE, None)
    if not values:
        return wrapped(*args, **kwargs)
    with owner_values(values):
        return wrapped(*args, **kwargs)


def _submit(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    values = current_owner()
    fn, *rest = args

    def run_as_submitter(*fn_args: Any, **fn_kwargs: Any) -> Any:
        # Pool threads are reused: set exactly the submitter's owners, even when empty.
        with owner_values(values):
            return fn(*fn_args, **fn_kwargs)

    return wrapped(run_as_submitter, *rest, **kwargs)


def patch_threads() -> None:
    wrapt.wrap_function_wrapper(threading.Thread, "start", _start)
    wrapt.wrap_function_wrapper(threading.Thread, "run", _run)
    wrapt.wrap_function_wrapper(ThreadPoolExecutor, "submit", _submit)


def unpatch_threads() -> None:
    unwrap(threading.Thread, "start")
    unwrap(threading.Thread, "run")
    unwrap(ThreadPoolExecutor, "submit")
