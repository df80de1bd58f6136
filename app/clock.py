"""Time, injectable so that tests can move it (for example past a lease)."""

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> datetime: ...


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The last time made, with its millisecond: every event of a turn takes a time, and most
# of a turn's events come within one millisecond. A datetime is immutable, so sharing it
# is safe; one tuple, so that another thread reads both halves of the same pair.
_last: tuple[int, datetime] = (0, _EPOCH)


def utc_now() -> datetime:
    """Now in UTC, to the millisecond: the precision MongoDB keeps, so stored times compare equal."""
    global _last
    millisecond = time.time_ns() // 1_000_000
    last_millisecond, last = _last
    if millisecond == last_millisecond:
        return last  # a quarter of the cost of making it again
    # Whole milliseconds added to the epoch, in integers: a quarter of the cost of
    # datetime.now() and a replace().
    now = _EPOCH + timedelta(0, 0, 0, millisecond)
    _last = (millisecond, now)
    return now
