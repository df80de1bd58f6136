"""Turns executing in this process, as live feeds that streams subscribe to.

A turn publishes an event only once it is stored (by a progress record or its commit):
whatever a client is shown is in MongoDB, so a stop that wins over the turn, in any
process, numbers its own event after it (see the README, "A seq names one event
forever"). LLM text is published as it arrives, but never ahead of the events before it.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from app.engine.state import Event, LlmDelta


@dataclass(slots=True)
class StreamPosition:
    """Where a reader of a run's events is: after event ``seq``, and after ``text_offset``
    characters of the LLM text that follows that event."""

    seq: int = 0
    text_offset: int = 0

    def passed(self, item: Event | LlmDelta, delta_start: int) -> Event | LlmDelta | None:
        """What of ``item`` is new to this reader (moving past it), or None. A delta
        starts ``delta_start`` characters into the text after event ``self.seq``."""
        if isinstance(item, Event):
            if item.seq <= self.seq:
                return None
            self.seq, self.text_offset = item.seq, 0
            return item
        end = delta_start + len(item.text)
        if end <= self.text_offset:
            return None
        new = item.text[max(0, self.text_offset - delta_start) :]
        self.text_offset = end
        return LlmDelta(node_id=item.node_id, text=new)


class LiveTurn:
    """What one turn executing here has published: its stored events and its LLM text."""

    def __init__(self, engine: "asyncio.Future[Any] | None" = None) -> None:
        self.items: list[Event | LlmDelta] = []
        self.finished = False
        self.engine = engine
        self.subscribers = 0
        self._changed = asyncio.Event()

    def publish(self, items: list[Event | LlmDelta]) -> None:
        if items:
            self.items.extend(items)
            self._wake()

    def finish(self) -> None:
        self.finished = True
        self._wake()

    async def follow(
        self, position: StreamPosition, keepalive_seconds: float
    ) -> AsyncIterator[Event | LlmDelta | None]:
        """What is new to ``position`` (moving it), as it is published, until the turn
        finishes; None after ``keepalive_seconds`` without anything."""
        self.subscribers += 1
        try:
            index = 0
            after_seq = 0  # the event the text being read follows
            text_start = 0  # where the next delta starts in that text
            while True:
                while index < len(self.items):
                    item = self.items[index]
                    index += 1
                    if isinstance(item, Event):
                        after_seq, text_start = item.seq, 0
                        new = position.passed(item, 0)
                    else:
                        start, text_start = text_start, text_start + len(item.text)
                        new = position.passed(item, start) if after_seq == position.seq else None
                    if new is not None:
                        yield new
                if self.finished:
                    return
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), keepalive_seconds)
                except TimeoutError:
                    yield None
        finally:
            self.subscribers -= 1

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class UnclaimedTurn:
    """A turn executing here on a cached run that it has not claimed in the store."""

    __slots__ = ("engine",)

    def __init__(self) -> None:
        self.engine: asyncio.Future[Any] | None = None


class LiveRuns:
    """The turns executing in this process, by run."""

    def __init__(self) -> None:
        self._turns: dict[ObjectId, LiveTurn] = {}
        # Blocking turns executing here on a cached run, not claimed in the store (yet):
        # nobody can follow them, but a second turn here must wait and a stop cancel them.
        self._unclaimed: dict[ObjectId, UnclaimedTurn] = {}

    def open(self, run_id: ObjectId) -> LiveTurn:
        live = LiveTurn()
        self._turns[run_id] = live
        return live

    def get(self, run_id: ObjectId) -> LiveTurn | None:
        return self._turns.get(run_id)

    def close(self, run_id: ObjectId, live: LiveTurn) -> None:
        live.finish()
        if self._turns.get(run_id) is live:
            del self._turns[run_id]

    def begin_unclaimed(self, run_id: ObjectId) -> None:
        self._unclaimed[run_id] = UnclaimedTurn()

    def unclaimed(self, run_id: ObjectId) -> "UnclaimedTurn | None":
        return self._unclaimed.get(run_id)

    def end_unclaimed(self, run_id: ObjectId) -> None:
        self._unclaimed.pop(run_id, None)

    def executing(self, run_id: ObjectId) -> bool:
        """Whether a turn of the run executes in this process."""
        return run_id in self._turns or run_id in self._unclaimed

    def cancel(self, run_id: ObjectId) -> None:
        """Cancel the engine of the run's turn here, if any (a stop needs not wait for the
        turn's next progress record to notice)."""
        for turns in (self._turns, self._unclaimed):
            turn = turns.get(run_id)
            if turn is not None and turn.engine is not None:
                turn.engine.cancel()
