"""Following a run: its stored events from a position on, then its events live while a
turn executes, until the run waits or ends (``GET /v1/runs/{id}/stream``).

Each round reads the run (recovering it if its server died), sends the stored events
after the reader's position, and then either follows the turn's live feed, when the turn
executes in this process, or, when it executes in another, waits a poll interval and
reads again: that process records the turn's events and LLM text every poll interval.
The position (last seq, characters of LLM text after it) moves with everything sent, so
nothing is sent twice or skipped when switching from stored to live, or when a client
reconnects with ``Last-Event-ID``.
"""

import asyncio
import time
from collections.abc import AsyncIterator

from bson import ObjectId

from app.engine.state import Event, LlmDelta
from app.services.live import LiveRuns, StreamPosition
from app.services.reading import RunReader


class RunFollower:
    def __init__(
        self, reader: RunReader, live: LiveRuns, poll_seconds: float, keepalive_seconds: float
    ) -> None:
        self._reader = reader
        self._live = live
        self._poll_seconds = poll_seconds
        self.keepalive_seconds = keepalive_seconds

    async def check(self, tenant: str, run_id: ObjectId) -> None:
        """Raise ``NotFound`` before a stream starts, so that it answers as plain JSON."""
        await self._reader.read(tenant, run_id)

    async def follow(
        self, tenant: str, run_id: ObjectId, position: StreamPosition
    ) -> AsyncIterator[Event | LlmDelta | None]:
        """What happens in the run after ``position`` (moving it); None when nothing has
        for the keepalive interval. Ends when the run waits for input or has ended."""
        keepalive_seconds = self.keepalive_seconds
        quiet_since = time.monotonic()
        while True:
            run = await self._reader.read(tenant, run_id)
            for event in await self._reader.events_after(run, position.seq):
                rest = _rest_of_text(event, position)
                if rest is not None:
                    quiet_since = time.monotonic()
                    yield rest
                position.passed(event, 0)
                quiet_since = time.monotonic()
                yield event
            if run.claim is None:
                return
            live = self._live.get(run_id)
            if live is not None:
                async for item in live.follow(position, keepalive_seconds):
                    yield item
                continue  # read the run again: its commit, or a stop, ends the turn
            text = run.claim.live_text
            if text is not None and text.after_seq == position.seq:
                delta = position.passed(LlmDelta(node_id=text.node_id, text=text.text), 0)
                if delta is not None:
                    quiet_since = time.monotonic()
                    yield delta
            if time.monotonic() - quiet_since >= keepalive_seconds:
                quiet_since = time.monotonic()
                yield None
            await asyncio.sleep(self._poll_seconds)


def _rest_of_text(event: Event, position: StreamPosition) -> LlmDelta | None:
    """When a reader in the middle of an LLM text reaches the call's ``llm_completed``, the
    text it has not been sent (moving ``position`` past it): what was generated after the
    last progress record it read, or while it was away. Its deltas then add up to the
    whole text, wherever the turn executes and whenever the reader reconnected."""
    if event.type != "llm_completed" or position.text_offset == 0:
        return None
    if event.seq != position.seq + 1:  # llm_completed follows its llm_started at once
        return None
    text = event.data.get("text")
    if event.node_id is None or not isinstance(text, str):
        return None
    rest = position.passed(LlmDelta(node_id=event.node_id, text=text), 0)
    return rest if isinstance(rest, LlmDelta) else None
