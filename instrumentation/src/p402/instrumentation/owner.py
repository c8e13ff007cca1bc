"""Owner context: who a call is for, attached to every economic event made inside it.

    with owner(department="legal", employee="alice", session="sess_abc"):
        client.chat.completions.create(...)

``owner`` is a context manager and a decorator (sync and async functions), and nests: inner
values override outer ones. It lives in a :mod:`contextvars` variable, so it follows
``asyncio`` tasks created inside it; while P402 is instrumented, threads and executor tasks
started inside it see it too. Values from
``P402_OWNER_<DIMENSION>`` variables are the outermost defaults. The owner context is never
sent to an LLM provider.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType
from typing import Any, Final, TypeVar, cast

__all__ = ["current_owner", "owner", "owner_values"]

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})
_current: ContextVar[Mapping[str, str]] = ContextVar("p402_owner", default=_EMPTY)

_F = TypeVar("_F", bound=Callable[..., Any])


def current_owner() -> Mapping[str, str]:
    """The owner values in force here (without environment defaults)."""
    return _current.get()


@contextmanager
def owner_values(values: Mapping[str, str]) -> Iterator[None]:
    """Run with exactly ``values`` as the owner context (not merged with the current one)."""
    token = _current.set(values)
    try:
        yield
    finally:
        _current.reset(token)


class owner:
    """Attribute the LLM calls made inside to these owners; see the module docstring."""

    __slots__ = ("_tokens", "_values")

    def __init__(
        self,
        *,
        department: str | None = None,
        project: str | None = None,
        client: str | None = None,
        employee: str | None = None,
        session: str | None = None,
        workflow: str | None = None,
        feature: str | None = None,
        customer: str | None = None,
        task_type: str | None = None,
    ) -> None:
        given = {
            "department": department,
            "project": project,
            "client": client,
            "employee": employee,
            "session": session,
            "workflow": workflow,
            "feature": feature,
            "customer": customer,
            "task_type": task_type,
        }
        for dimension, value in given.items():
            if value is not None and not isinstance(value, str):
                raise TypeError(f"owner {dimension} must be a str, not {type(value).__name__}")
        self._values = {key: value for key, value in given.items() if value is not None}
        self._tokens: list[Token[Mapping[str, str]]] = []

    @property
    def values(self) -> Mapping[str, str]:
        return MappingProxyType(self._values)

    def __enter__(self) -> Mapping[str, str]:
        merged = {**_current.get(), **self._values}
        self._tokens.append(_current.set(MappingProxyType(merged)))
        return merged

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _current.reset(self._tokens.pop())

    def __call__(self, func: _F) -> _F:
        values = dict(self._values)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with owner(**values):
                    return await func(*args, **kwargs)

            return cast(_F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with owner(**values):
                return func(*args, **kwargs)

        return cast(_F, wrapper)
