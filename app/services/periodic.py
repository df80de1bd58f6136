"""A sweep run every interval in the background of each server process, until stopped.

A subclass says what one sweep does (``sweep``) and names it for the log; a sweep that
fails (MongoDB unreachable for a moment) is logged, and the next one tries again.
"""

import asyncio
import contextlib
import logging

logger = logging.getLogger("tandem")


class PeriodicSweep:
    # What the sweep looks for, as the log names it: "the sweep for <what> failed".
    what = "work"

    def __init__(self, interval_seconds: float) -> None:
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """One sweep; how many items it found."""
        raise NotImplementedError

    def start(self) -> None:
        """Sweep every interval from now on; an interval of 0 turns the sweep off."""
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
                logger.warning("the sweep for %s failed", self.what, exc_info=True)
