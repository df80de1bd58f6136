"""The latest versions a process keeps for first turns: how long, from when, for whom."""

import asyncio
import time

import pytest
from bson import ObjectId

from app.config import ConfigError, Settings
from app.errors import NotFound
from app.services import latest_versions
from app.services.latest_versions import PUBLISH_MARGIN_SECONDS, LatestVersions

WORKFLOW = ObjectId()


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Store:
    """The workflow's latest version as stored, and the reads made of it."""

    def __init__(self) -> None:
        self.latest = 0
        self.reads = 0

    async def read(self) -> int:
        self.reads += 1
        return self.latest


async def test_a_version_is_kept_for_the_keep_time_counted_from_when_its_read_began() -> None:
    clock, store = Monotonic(), Store()
    kept = LatestVersions(keep_seconds=0.25, monotonic=clock)

    async def slow_read() -> int:
        clock.now += 0.2  # the read takes 0.2 s: a publish may have been stored meanwhile
        return await store.read()

    assert await kept.pinned("t", WORKFLOW, slow_read) == 0
    store.latest = 1
    clock.now += 0.04  # 0.24 s after the read began
    assert await kept.pinned("t", WORKFLOW, store.read) == 0 and store.reads == 1
    clock.now += 0.01  # 0.25 s: a publish stored at its start would have answered by now
    assert await kept.pinned("t", WORKFLOW, store.read) == 1 and store.reads == 2


async def test_each_tenant_reads_its_own_and_a_refusal_is_never_kept() -> None:
    clock, store = Monotonic(), Store()
    kept = LatestVersions(keep_seconds=10, monotonic=clock)
    assert await kept.pinned("a", WORKFLOW, store.read) == 0

    async def refused() -> int:
        store.reads += 1
        raise NotFound("No workflow.")

    for _ in range(2):
        with pytest.raises(NotFound):
            await kept.pinned("b", WORKFLOW, refused)
    assert store.reads == 3


async def test_of_two_reads_in_flight_the_one_answering_last_is_kept_from_its_own_start() -> None:
    clock, store = Monotonic(), Store()
    kept = LatestVersions(keep_seconds=1, monotonic=clock)
    first_answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def held_read() -> int:
        return await first_answer

    early = asyncio.create_task(kept.pinned("t", WORKFLOW, held_read))  # begins at 100.0
    await asyncio.sleep(0)
    clock.now = 100.5
    store.latest = 3
    assert await kept.pinned("t", WORKFLOW, store.read) == 3  # begins and ends at 100.5
    first_answer.set_result(2)
    assert await early == 2
    clock.now = 100.99
    assert await kept.pinned("t", WORKFLOW, store.read) == 2  # what answered last
    clock.now = 101.0  # a second after the read it came from began, not after it ended
    assert await kept.pinned("t", WORKFLOW, store.read) == 3


async def test_the_least_recently_used_workflows_go_past_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(latest_versions, "KEPT_WORKFLOWS", 2)
    clock, store = Monotonic(), Store()
    kept = LatestVersions(keep_seconds=10, monotonic=clock)
    first, second, third = ObjectId(), ObjectId(), ObjectId()
    for workflow in (first, second, first, third):  # ``second`` is the least recent
        await kept.pinned("t", workflow, store.read)
    assert store.reads == 3
    await kept.pinned("t", first, store.read)
    await kept.pinned("t", third, store.read)
    assert store.reads == 3
    await kept.pinned("t", second, store.read)
    assert store.reads == 4


async def test_a_publish_waits_out_the_keep_time_and_a_margin() -> None:
    started = time.monotonic()
    await LatestVersions(keep_seconds=0.05).published()
    assert time.monotonic() - started >= 0.05 + PUBLISH_MARGIN_SECONDS

    # Kept for no time: every first turn reads, and a publish answers at once.
    store = Store()
    none_kept = LatestVersions(keep_seconds=0)
    started = time.monotonic()
    await none_kept.published()
    assert time.monotonic() - started < 0.05
    for _ in range(3):
        await none_kept.pinned("t", WORKFLOW, store.read)
    assert store.reads == 3


def test_the_keep_time_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).latest_version_ms == 250
    assert Settings.from_env({"TANDEM_LATEST_VERSION_MS": "0"}).latest_version_ms == 0
    for wrong in ("-1", "soon", "inf"):
        with pytest.raises(ConfigError, match="TANDEM_LATEST_VERSION_MS"):
            Settings.from_env({"TANDEM_LATEST_VERSION_MS": wrong})
