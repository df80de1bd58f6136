"""The idempotency keys' store, on the embedded store and through PyMongo on the wire
double (or on the MongoDB of MONGODB_URI)."""

import asyncio
from datetime import timedelta

import pytest
from bson import ObjectId

from app.store.database import Database
from app.store.documents import (
    IdempotencyRecord,
    RequestRef,
    StoredAnswer,
    idempotency_record_id,
)
from app.store.store import Store
from tests.support import FakeClock


@pytest.fixture
async def store(database_per_backend: Database) -> Store:
    store = Store(database_per_backend)
    await store.ensure_indexes()
    return store


def record(
    clock: FakeClock, key: str = "order-1", tenant: str = "acme", token: str = "t1"
) -> IdempotencyRecord:
    now = clock()
    return IdempotencyRecord(
        id=idempotency_record_id(tenant, key),
        tenant=tenant,
        key=key,
        fingerprint="f" * 64,
        mode="json",
        token=token,
        created_at=now,
        expires_at=now + timedelta(hours=24),
        lease_expires_at=now + timedelta(seconds=30),
        run_id=ObjectId(),
    )


ANSWER = StoredAnswer(
    status_code=202,
    headers={"Location": "http://testserver/v1/runs/x"},
    body_json='{"events": [{"data": {"$odd.key": 1}}]}',
)


async def test_a_key_is_claimed_once_even_by_parallel_inserts(store: Store) -> None:
    clock = FakeClock.from_real_time()
    claimed = await asyncio.gather(
        *(store.idempotency.claim(record(clock, token=f"t{i}")) for i in range(20))
    )
    assert sorted(claimed) == [False] * 19 + [True]
    found = await store.idempotency.find("acme", "order-1")
    assert found is not None and found.token == f"t{claimed.index(True)}"


async def test_records_round_trip_and_stay_with_their_tenant(store: Store) -> None:
    clock = FakeClock.from_real_time()
    first = record(clock)
    assert await store.idempotency.claim(first)
    assert await store.idempotency.find("acme", "order-1") == first
    assert await store.idempotency.find("globex", "order-1") is None
    # The same key is another tenant's own, and no tenant's name can pose as another's.
    assert await store.idempotency.claim(record(clock, tenant="globex"))
    assert await store.idempotency.claim(record(clock, key="1", tenant="acme:order-"))
    assert idempotency_record_id("acme:order-", "1") != idempotency_record_id("acme", "order-1")


async def test_link_answer_and_release_match_only_their_attempt(store: Store) -> None:
    clock = FakeClock.from_real_time()
    first = record(clock)
    await store.idempotency.claim(first)
    await store.idempotency.link(RequestRef(key_id=first.id, token="other"), 5)
    await store.idempotency.link(RequestRef(key_id=first.id, token="t1"), 2)
    await store.idempotency.link(RequestRef(key_id=first.id, token="t1"), 3)  # already linked
    found = await store.idempotency.find("acme", "order-1")
    assert found is not None and found.turn == 2

    assert not await store.idempotency.answer(record(clock, token="other"), 2, ANSWER)
    assert await store.idempotency.answer(first, 2, ANSWER)
    found = await store.idempotency.find("acme", "order-1")
    assert found is not None and found.answer == ANSWER and found.turn == 2

    await store.idempotency.release(record(clock, token="other"))
    assert await store.idempotency.find("acme", "order-1") is not None
    await store.idempotency.release(first)
    assert await store.idempotency.find("acme", "order-1") is None


async def test_a_record_is_taken_over_once(store: Store) -> None:
    clock = FakeClock.from_real_time()
    first = record(clock)
    await store.idempotency.claim(first)
    clock.advance(24 * 3600)
    second, third = record(clock, token="t2"), record(clock, token="t3")
    taken = await asyncio.gather(
        store.idempotency.take_over(first, second), store.idempotency.take_over(first, third)
    )
    assert sorted(taken) == [False, True]
    found = await store.idempotency.find("acme", "order-1")
    assert found in (second, third)


async def test_expired_records_are_deleted_by_a_ttl_index(
    store: Store, database_per_backend: Database
) -> None:
    indexes = await database_per_backend["idempotency_keys"].index_information()
    ttl = [index for index in indexes.values() if "expireAfterSeconds" in index]
    assert len(ttl) == 1
    assert ttl[0]["key"] == [("expires_at", 1)] and ttl[0]["expireAfterSeconds"] == 0


async def test_a_record_is_a_plain_document(store: Store, database_per_backend: Database) -> None:
    clock = FakeClock.from_real_time()
    first = record(clock)
    await store.idempotency.claim(first)
    raw = await database_per_backend["idempotency_keys"].find_one({"tenant": "acme"})
    assert raw is not None
    assert raw["_id"] == "acme:order-1" and raw["key"] == "order-1" and raw["turn"] is None
    assert raw["expires_at"] == first.expires_at and raw["answer"] is None
