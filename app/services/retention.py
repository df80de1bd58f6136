"""Deleting the archived events of runs that have gone, in any running server process.

A run is deleted by MongoDB (a TTL index on its ``cleanup_after``) once no turn has
renewed it for the retention period. Its archived events cannot simply carry a TTL of
their own: each turn renews the run, and renewing every archived turn of the run with it
would rewrite the whole archive on every turn. Instead, an archived turn keeps the run's
``cleanup_after`` of when it was archived, and this sweep, every interval, looks at the
turns whose date has passed: if their run has gone (or is past its own date: as good as
deleted), they are deleted; if later turns renewed it, they take its new date. So events
never go before their run, go at most one interval after it, and each is rewritten at
most once per retention period while its run lives (see ``RunStore.expire_events``).
"""

import asyncio
import contextlib
import logging

from app.clock import Clock
from app.store.runs import RunStore

logger = logging.getLogger("tandem")
TURNS_PER_ROUND = 1_000  # archived turns looked at in one round
ROUNDS_PER_SWEEP = 10  # a backlog (after servers were down) is worked off over sweeps


class ExpiredEventsSweeper:
    def __init__(self, runs: RunStore, clock: Clock, interval_seconds: float) -> None:
        self._runs = runs
        self._clock = clock
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """Delete or renew the archived turns whose date has passed; how many there were."""
        found = 0
        for _ in range(ROUNDS_PER_SWEEP):
            due = await self._runs.expire_events(self._clock(), TURNS_PER_ROUND)
            found += due
            if due < TURNS_PER_ROUND:
                break
        return found

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except Exception:  # MongoDB unreachable for a moment: the next sweep tries again
                logger.warning("the sweep for expired events failed", exc_info=True)
