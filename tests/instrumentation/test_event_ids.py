"""Economic-event ids: UUIDv7, unique, time-ordered, and never repeated by a forked child."""

from __future__ import annotations

import os
import time
import uuid

from p402.instrumentation.ids import new_event_id


def test_ids_are_unique_version_7_uuids_in_canonical_text() -> None:
    ids = [new_event_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_ids_carry_their_creation_millisecond_and_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    first = new_event_id()
    time.sleep(0.002)
    second = new_event_id()
    after = time.time_ns() // 1_000_000
    assert before <= uuid.UUID(first).int >> 80 <= after
    assert first < second


def test_a_forked_child_does_not_repeat_the_ids_its_parent_makes_next() -> None:
    new_event_id()  # the parent holds random bits for more ids
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read)
        os.write(write, ",".join(new_event_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_ids = pipe.read().split(",")
    os.waitpid(child, 0)
    parent_ids = [new_event_id() for _ in range(10)]
    random_part = {text[19:] for text in parent_ids}  # variant and rand_b
    assert len(child_ids) == 10
    assert not random_part & {text[19:] for text in child_ids}
