"""The clock's times are what MongoDB stores: UTC, whole milliseconds, and now."""

from datetime import UTC, datetime, timedelta

import pytest

from app import clock
from app.clock import utc_now


def test_now_is_utc_to_the_millisecond_and_moves_with_the_wall_clock() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    now = utc_now()
    after = datetime.now(UTC)
    assert now.tzinfo is UTC
    assert now.microsecond % 1000 == 0
    assert before <= now <= after
    assert after - now < timedelta(seconds=1)


def test_each_call_reads_the_wall_clock_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Times within one millisecond are one value; any other millisecond, forward or
    # back (a clock stepped back), is read afresh, never a time kept from before.
    wall = [1_700_000_000_000_400_000]
    monkeypatch.setattr(clock.time, "time_ns", lambda: wall[0])
    first = utc_now()
    wall[0] += 500_000  # the same millisecond
    assert utc_now() == first
    wall[0] += 600_000  # the next one
    assert utc_now() == first + timedelta(milliseconds=1)
    wall[0] -= 5_000_000  # stepped back
    assert utc_now() == first - timedelta(milliseconds=4)
    assert first == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
