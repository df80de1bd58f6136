"""Time, injectable so that tests can move it (for example past a lease)."""

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> datetime: ...


def utc_now() -> datetime:
    """Now in UTC, to the millisecond: the precision MongoDB keeps, so stored times compare equal."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
