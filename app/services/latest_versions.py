"""The latest version of each workflow, as first turns pin it: kept for a moment per process.

A first turn pins its workflow's latest version. Reading it is a round trip of its own
(on a booking conversation, a fifth of the store calls), so each process keeps what it
read for ``keep_seconds`` (``TANDEM_LATEST_VERSION_MS``), counted from when the read
began, and a publish answers only once a little longer (``PUBLISH_MARGIN_SECONDS``) has
passed since its version was stored: by then no process, this one or another sharing the
database, keeps an older one, so a first turn sent after a publish's answer pins the new
version (or a later one) wherever it lands. The rare write waits so that the frequent
read need not be made. Until the publish answers, a first turn may still pin the version
before, even though reading the workflow already shows the new one as its latest.

What this rests on: every process sharing the database keeps versions no longer than a
publish waits (the same setting everywhere: a publish waits its own process's), reads
the workflow from the primary and has its writes acknowledged (``app.store.database``
refuses a ``MONGODB_URI`` that asks otherwise).
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from bson import ObjectId

# Beyond ``keep_seconds``, what a publish waits for the clocks it relies on: uvloop's
# timers can fire a millisecond early, and two hosts' monotonic clocks run at rates that
# NTP keeps within 0.05% of each other.
PUBLISH_MARGIN_SECONDS = 0.05
# Workflows whose latest version is kept, the most recently used first.
KEPT_WORKFLOWS = 10_000


class KeptVersion(NamedTuple):
    version: int
    # When the read that found it began (``monotonic``): the stored latest version was at
    # most this one then, and only a publish that began waiting since can have moved it.
    read_began: float


class LatestVersions:
    def __init__(
        self, keep_seconds: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._keep_seconds = keep_seconds
        self._monotonic = monotonic
        self._kept: OrderedDict[tuple[str, ObjectId], KeptVersion] = OrderedDict()

    async def pinned(
        self, tenant: str, workflow_id: ObjectId, read: Callable[[], Awaitable[int]]
    ) -> int:
        """The version a first turn pins: the one kept, if read within ``keep_seconds``,
        else what ``read`` answers (it raises for a workflow the tenant does not have,
        which is never kept)."""
        key = (tenant, workflow_id)
        began = self._monotonic()
        kept = self._kept.get(key)
        if kept is not None and began - kept.read_began < self._keep_seconds:
            self._kept.move_to_end(key)
            return kept.version
        version = await read()
        if self._keep_seconds > 0:
            # Whichever of two reads in flight answers last is kept: each was the latest
            # when it began, and stays good for as long from then.
            self._kept[key] = KeptVersion(version, began)
            self._kept.move_to_end(key)
            if len(self._kept) > KEPT_WORKFLOWS:
                self._kept.popitem(last=False)
        return version

    async def published(self) -> None:
        """Wait, once a version is stored as the latest, until no process keeps an older
        one. (Nothing is kept here from the publish itself: a concurrent publish may have
        stored a later version already, which that would hide from first turns.)"""
        if self._keep_seconds > 0:
            await asyncio.sleep(self._keep_seconds + PUBLISH_MARGIN_SECONDS)
