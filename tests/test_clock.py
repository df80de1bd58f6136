"""The clock's times are what MongoDB stores: UTC, whole milliseconds, and now."""

from datetime import UTC, datetime, timedelta

from app.clock import utc_now


def test_now_is_utc_to_the_millisecond_and_moves_with_the_wall_clock() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    now = utc_now()
    after = datetime.now(UTC)
    assert now.tzinfo is UTC
    assert now.microsecond % 1000 == 0
    assert before <= now <= after
    assert after - now < timedelta(seconds=1)
