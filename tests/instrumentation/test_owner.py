"""The owner context: context manager, decorator, nesting, tasks and threads."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from concurrent.futures import ThreadPoolExecutor

import pytest

from p402.instrumentation import current_owner, owner
from p402.instrumentation.vocabulary import OWNER_DIMENSIONS


def test_owner_accepts_exactly_the_owner_dimensions():
    parameters = set(inspect.signature(owner).parameters)
    assert parameters == set(OWNER_DIMENSIONS)


def test_nested_owners_override_outer_values_and_restore_them():
    with owner(department="legal", employee="alice"):
        with owner(employee="bob", session="s1"):
            assert current_owner() == {"department": "legal", "employee": "bob", "session": "s1"}
        assert current_owner() == {"department": "legal", "employee": "alice"}
    assert current_owner() == {}


def test_owner_as_a_decorator_on_sync_and_async_functions():
    @owner(department="finance")
    def sync_job() -> dict[str, str]:
        return dict(current_owner())

    @owner(project="close")
    async def async_job() -> dict[str, str]:
        await asyncio.sleep(0)
        return dict(current_owner())

    assert sync_job() == {"department": "finance"}
    with owner(department="finance"):
        assert asyncio.run(async_job()) == {"department": "finance", "project": "close"}
    assert current_owner() == {}


def test_owner_follows_asyncio_tasks_and_copied_thread_contexts():
    async def main() -> list[dict[str, str]]:
        with owner(department="engineering"):
            inner = await asyncio.create_task(_read())
            threaded = await asyncio.to_thread(_read_sync)
        return [inner, threaded]

    async def _read() -> dict[str, str]:
        return dict(current_owner())

    def _read_sync() -> dict[str, str]:
        return dict(current_owner())

    assert asyncio.run(main()) == [{"department": "engineering"}] * 2
    with owner(department="ops"), ThreadPoolExecutor(1) as pool:
        context = contextvars.copy_context()
        assert pool.submit(context.run, _read_sync).result() == {"department": "ops"}


def test_owner_values_must_be_strings():
    with pytest.raises(TypeError, match="department must be a str"):
        owner(department=7)  # type: ignore[arg-type]
