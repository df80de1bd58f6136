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

from app.clock import Clock
from app.services.periodic import PeriodicSweep
from app.store.runs import RunStore

TURNS_PER_ROUND = 1_000  # archived turns looked at in one round
ROUNDS_PER_SWEEP = 10  # a backlog (after servers were down) is worked off over sweeps


class ExpiredEventsSweeper(PeriodicSweep):
    what = "expired events"

    def __init__(self, runs: RunStore, clock: Clock, interval_seconds: float) -> None:
        super().__init__(interval_seconds)
        self._runs = runs
        self._clock = clock

    async def sweep(self) -> int:
        """Delete or renew the archived turns whose date has passed; how many there were."""
        found = 0
        for _ in range(ROUNDS_PER_SWEEP):
            due = await self._runs.expire_events(self._clock(), TURNS_PER_ROUND)
            found += due
            if due < TURNS_PER_ROUND:
                break
        return found
