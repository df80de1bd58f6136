"""Time, injectable so that tests can move it (for example past a lease)."""

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> datetime: ...


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_now() -> datetime:
    """Now in UTC, to the millisecond: the precision MongoDB keeps, so stored times compare equal."""
    # Whole milliseconds added to the epoch, in integers: a quarter of the cost of
    # datetime.now() and a replace(), and every event of a turn takes a time.
    return _EPOCH + timedelta(0, 0, 0, time.time_ns() // 1_000_000)
