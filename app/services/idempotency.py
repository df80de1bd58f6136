"""Idempotent turns: ``Idempotency-Key`` on ``POST .../execute``, as the IETF draft "The
Idempotency-Key HTTP Header Field" describes it.

A keyed request claims its key before anything else, with one insert (see
``IdempotencyStore``): of parallel duplicates, one executes and the others find its
record. The record holds the request's fingerprint, the run it turns, the turn that
answers it once the run is claimed, and its answer once sent. The same key with the same
request gets that answer again and executes nothing; with another request, ``422``.

What became of the first request is read from its run, not from the process that served
it, which may have died. The run's claim names the keyed request (``Claim.request``),
and the record is linked to its turn before that turn can commit: by the request right
after it claims the run, or, if its server died first, by the recovery that executes the
turn again (``TurnExecutor.recover``). So a retry finding no answer yet:
- if the record is linked, reads that turn from the run, recovering it first if its
  server died (as any read of a run does): its answer once committed, else ``409
  request_in_progress``;
- if not, and the attempt's lease has expired (its server died before it linked), reads
  the run, which recovers (and so links) a turn the attempt had claimed; a turn of it
  still executing is in progress; if it never claimed the run, nothing happened, and the
  retry takes the key over and executes the request itself.
So a message is executed once however the first attempt ended, and never twice.

A request refused before its turn executes (``400``, ``404``, ``409 turn_in_progress``,
``409 run_terminal``, ``422 invalid_definition``) changed nothing: its key is released,
not stored, and a retry is judged afresh, as a request without a key would be. Only
answers of turns that executed (a stop included) are stored.

Round trips a keyed request adds: one insert (the claim); then, for a request that
executes, one update to link its turn before it executes and one to store its answer
(an asynchronous turn does both in one, before its ``202``). A replay costs one insert
refused and one read; a retry of a request whose answer was never stored also reads
its run.
"""

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.clock import Clock
from app.errors import IdempotencyKeyReused, NotFound, RequestInProgress
from app.services.reading import RunReader
from app.services.turn_model import TurnRequest, TurnResult, run_id_at
from app.store.documents import (
    AnswerMode,
    IdempotencyRecord,
    RequestRef,
    StoredAnswer,
    idempotency_record_id,
)

__all__ = [
    "AnswerMode",
    "IdempotentTurns",
    "KeyAnswered",
    "KeyClaimed",
    "KeyOutcome",
    "KeyTurnDone",
    "StoredAnswer",
]
from app.store.idempotency import IdempotencyStore

logger = logging.getLogger("tandem")
CLAIM_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class KeyClaimed:
    """This request holds the key: it executes ``turn`` (which names the request), links
    the turn before it executes, and stores its answer."""

    record: IdempotencyRecord
    turn: TurnRequest


@dataclass(frozen=True, slots=True)
class KeyAnswered:
    """The key's first request was answered: ``answer`` is sent again."""

    record: IdempotencyRecord
    answer: StoredAnswer


@dataclass(frozen=True, slots=True)
class KeyTurnDone:
    """The turn of the key's first request has executed, but its answer was never stored
    (its server died, and a recovery executed the turn): the answer is made from
    ``result`` (None for an asynchronous request, whose ``202`` needs only the run and
    the turn) and stored."""

    record: IdempotencyRecord
    turn: int
    result: TurnResult | None


KeyOutcome = KeyClaimed | KeyAnswered | KeyTurnDone


class IdempotentTurns:
    def __init__(
        self,
        keys: IdempotencyStore,
        reader: RunReader,
        clock: Clock,
        lifetime: timedelta,
        lease: timedelta,
    ) -> None:
        self._keys = keys
        self._reader = reader
        self._clock = clock
        self._lifetime = lifetime
        self._lease = lease
        # Answers being stored once their turn, completing in the background, ends.
        self._storing: set[asyncio.Task[None]] = set()

    async def begin(
        self, tenant: str, key: str, fingerprint: str, mode: AnswerMode, turn: TurnRequest
    ) -> KeyOutcome:
        """Claim ``key`` for this request, or say what became of the key's first request.
        Raises ``IdempotencyKeyReused`` for another request under the key, and
        ``RequestInProgress`` while the first one executes."""
        for _ in range(CLAIM_ATTEMPTS):
            now = self._clock()
            mine = self._new_record(tenant, key, fingerprint, mode, turn, now)
            if await self._keys.claim(mine):
                return self._claimed(mine, turn)
            found = await self._keys.find(tenant, key)
            if found is None:
                continue  # released (refused) or deleted (expired) meanwhile
            if found.expires_at <= now:  # forgotten: the TTL index has not got to it yet
                if await self._keys.take_over(found, mine):
                    return self._claimed(mine, turn)
                continue
            if found.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was first sent with another request: a key names "
                    "one request (its path, version, body, Accept, Prefer and "
                    "X-Execution-Source)."
                )
            outcome = await self._first_request(found, now)
            if outcome is not None:
                return outcome
            # Its attempt is gone and nothing of it happened: this request takes over.
            if await self._keys.take_over(found, mine):
                return self._claimed(mine, turn)
        raise RequestInProgress("The first request with this Idempotency-Key is executing.")

    async def link(self, claimed: KeyClaimed, turn: int) -> None:
        """Record which turn answers the request: after its run is claimed for it, before
        the turn executes."""
        assert claimed.turn.request is not None
        await self._keys.link(claimed.turn.request, turn)

    async def accept(self, record: IdempotencyRecord, turn: int, answer: StoredAnswer) -> None:
        """Store the answer of a request that is answered before its turn executes (a
        ``202``): with its turn, so that a retry finds the turn whatever happens to it."""
        await self._keys.answer(record, turn, answer)

    async def store(self, record: IdempotencyRecord, turn: int, answer: StoredAnswer) -> None:
        """Store the answer of an executed turn. If that fails, the record stays linked to
        the turn, and a retry makes the answer from the run: it is only logged."""
        try:
            await self._keys.answer(record, turn, answer)
        except Exception:
            logger.warning(
                "could not store the answer of Idempotency-Key %r", record.key, exc_info=True
            )

    def store_when_done(
        self,
        record: IdempotencyRecord,
        turn: int,
        task: "asyncio.Task[TurnResult]",
        answer_of: Callable[[TurnResult], StoredAnswer],
    ) -> None:
        """Store the answer of a turn completing in the background (a streamed one) once
        it ends, whether or not its client still listens."""

        async def store_after() -> None:
            try:
                result = await asyncio.shield(task)
            except Exception:  # the turn failed to finish: a retry reads its run
                return
            await self.store(record, turn, answer_of(result))

        storing = asyncio.create_task(store_after())
        self._storing.add(storing)
        storing.add_done_callback(self._storing.discard)

    async def release(self, record: IdempotencyRecord) -> None:
        """Forget the key of a request refused before its turn executed."""
        try:
            await self._keys.release(record)
        except Exception:  # its lease expires, and a retry then takes the key over
            logger.warning("could not release Idempotency-Key %r", record.key, exc_info=True)

    async def drain(self) -> None:
        """Wait for the answers still being stored (at shutdown)."""
        if self._storing:
            await asyncio.wait(set(self._storing))

    async def _first_request(self, found: IdempotencyRecord, now: datetime) -> KeyOutcome | None:
        """What became of the first request under a key (the same request as this one):
        its answer; or None if its attempt is gone and nothing of it happened."""
        if found.answer is not None:
            return KeyAnswered(found, found.answer)
        if found.turn is None:
            if found.lease_expires_at > now:
                raise RequestInProgress("The first request with this Idempotency-Key is executing.")
            linked = await self._after_abandoned(found)
            if linked is None:
                return None
            if linked.answer is not None:
                return KeyAnswered(linked, linked.answer)
            found = linked
        assert found.turn is not None
        if found.mode == "async":  # its 202 needs only the run and the turn
            return KeyTurnDone(found, found.turn, None)
        result = await self._reader.result_of_turn(found.tenant, found.run_id, found.turn)
        if result is None:
            raise RequestInProgress(
                f"The first request with this Idempotency-Key is executing turn {found.turn} "
                f"of run {found.run_id}."
            )
        return KeyTurnDone(found, found.turn, result)

    async def _after_abandoned(self, found: IdempotencyRecord) -> IdempotencyRecord | None:
        """The record of an attempt gone before it linked its turn, once its run is read:
        reading the run recovers a turn the attempt had claimed, whose server died, and the
        recovery links the record first. None if the attempt never claimed the run."""
        try:
            run = await self._reader.read(found.tenant, found.run_id)
        except NotFound:  # its first turn never created the run, or the run_id named none
            run = None
        mine = RequestRef(key_id=found.id, token=found.token)
        if run is not None and run.claim is not None and run.claim.request == mine:
            raise RequestInProgress(
                "The first request with this Idempotency-Key is executing "
                f"turn {run.state.turn + 1} of run {run.id}."
            )
        again = await self._keys.find(found.tenant, found.key)
        if again is None or again.token != found.token:
            # Another retry took the key over, or the attempt was refused, just now.
            raise RequestInProgress("Another request with this Idempotency-Key is executing.")
        return again if again.turn is not None else None

    def _new_record(
        self,
        tenant: str,
        key: str,
        fingerprint: str,
        mode: AnswerMode,
        turn: TurnRequest,
        now: datetime,
    ) -> IdempotencyRecord:
        return IdempotencyRecord(
            id=idempotency_record_id(tenant, key),
            tenant=tenant,
            key=key,
            fingerprint=fingerprint,
            mode=mode,
            token=secrets.token_hex(16),
            created_at=now,
            expires_at=now + self._lifetime,
            lease_expires_at=now + self._lease,
            run_id=turn.run_id if turn.run_id is not None else run_id_at(now),
        )

    @staticmethod
    def _claimed(record: IdempotencyRecord, turn: TurnRequest) -> KeyClaimed:
        return KeyClaimed(
            record,
            dataclasses.replace(
                turn,
                request=RequestRef(key_id=record.id, token=record.token),
                new_run_id=record.run_id if turn.run_id is None else None,
            ),
        )
