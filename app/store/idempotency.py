"""Idempotency keys of ``POST .../execute``: one record a tenant's key (``idempotency_keys``).

Claiming a key is one insert: the record's ``_id`` is the tenant's key, so that of any
number of parallel requests with one key exactly one inserts it, and the others get a
duplicate-key error and read the winner's record instead. Every later write of an attempt
matches its ``token``, so that an attempt that lost its record (taken over once expired or
abandoned) changes nothing. A TTL index deletes a record once ``expires_at`` has passed;
MongoDB's TTL monitor runs about once a minute (and the embedded store has none), so
readers check ``expires_at`` themselves.
"""

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from app.store.database import Database
from app.store.documents import (
    IdempotencyRecord,
    RequestRef,
    StoredAnswer,
    from_document,
    idempotency_record_id,
    to_document,
)


class IdempotencyStore:
    def __init__(self, database: Database) -> None:
        self._keys = database["idempotency_keys"]

    async def ensure_indexes(self) -> None:
        # Uniqueness is the _id's; this one deletes expired records.
        await self._keys.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)

    async def claim(self, record: IdempotencyRecord) -> bool:
        """Insert a new key's record; False if the tenant has a record for that key."""
        try:
            await self._keys.insert_one(to_document(record))
        except DuplicateKeyError:
            return False
        return True

    async def find(self, tenant: str, key: str) -> IdempotencyRecord | None:
        raw = await self._keys.find_one(
            {"_id": idempotency_record_id(tenant, key), "tenant": tenant}
        )
        return from_document(raw, IdempotencyRecord) if raw else None

    async def take_over(self, old: IdempotencyRecord, new: IdempotencyRecord) -> bool:
        """Replace ``old`` (expired, or abandoned by its attempt) with ``new``, if no one
        else has changed it since it was read."""
        result = await self._keys.replace_one({"_id": old.id, "token": old.token}, to_document(new))
        return result.matched_count == 1

    async def link(self, request: RequestRef, turn: int) -> None:
        """Record which turn answers a keyed request (nothing if it is already known, or if
        the record has gone to another attempt)."""
        await self._keys.update_one(
            {"_id": request.key_id, "token": request.token, "turn": None},
            {"$set": {"turn": turn}},
        )

    async def answer(self, record: IdempotencyRecord, turn: int, answer: StoredAnswer) -> bool:
        """Store the answer of the attempt ``record``, and the turn that gave it; False if
        the record has gone to another attempt."""
        result = await self._keys.update_one(
            {"_id": record.id, "token": record.token},
            {"$set": {"turn": turn, "answer": to_document(answer)}},
        )
        return result.matched_count == 1

    async def release(self, record: IdempotencyRecord) -> None:
        """Forget the key of an attempt refused before it changed anything."""
        await self._keys.delete_one({"_id": record.id, "token": record.token})
