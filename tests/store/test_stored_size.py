"""What a run's state takes stored: measured as BSON, which can take several times the
bytes of JSON, so that a state under the limit always fits MongoDB's 16 MiB."""

from typing import Any

import bson
import pytest

from app.engine.state import RunStatus
from app.store.documents import (
    BSON_BYTES_PER_JSON_BYTE,
    CommittedState,
    stored_state_bytes,
    to_document,
)
from tests.support import FakeClock

N = 100_000  # items of one list, the default TANDEM_MAX_COLLECTION_LENGTH
SHAPES: dict[str, Any] = {
    "small integers": [0] * N,
    "negative integers": [-1] * N,
    "floats": [0.5] * N,
    "nulls": [None] * N,
    "booleans": [True] * N,
    "empty strings": [""] * N,
    "empty objects": [{}] * N,
    "empty arrays": [[]] * N,
    "nested arrays": [[[0]]] * N,
    "lists of lists": [[0] * 100] * 1_000,
    "dotted keys": {"." * 10 + str(n): 0 for n in range(10_000)},
    "dollar keys": {"$": {"$": 0}},
    "wide integers": [2**70] * N,
    "text": ["x" * 1000] * 100,
    "unicode": ["é✓😀"] * N,
}


def state(variables: dict[str, Any]) -> CommittedState:
    return CommittedState(
        status=RunStatus.WAITING_FOR_USER_INPUT,
        turn=1,
        seq=1,
        current_node="ask",
        variables=variables,
        history=[],
        waiting_for=None,
        output=None,
        error=None,
        updated_at=FakeClock()(),
    )


def bson_bytes(value: CommittedState) -> int:
    return len(bson.encode(to_document(value)))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_quick_measure_never_undercounts_what_bson_takes(shape: str) -> None:
    measured = state({"v": SHAPES[shape]})
    bound = stored_state_bytes(measured, 2**40)  # room for anything: the quick bound
    assert bound >= bson_bytes(measured), shape


def test_a_state_near_the_limit_is_measured_exactly() -> None:
    measured = state({"v": [0] * N})  # 0.2 MB of JSON, 1.1 MB of BSON
    exact = bson_bytes(measured)
    assert stored_state_bytes(measured, exact) <= exact  # within room: a bound that fits
    assert stored_state_bytes(measured, exact - 1) == exact  # too large: the exact size
    assert exact > 5 * len(repr([0] * N)) // 3  # BSON is several times JSON here


def test_the_factor_holds_for_the_worst_shape() -> None:
    """Small integers in a long array: 2 bytes of JSON, up to 13 of BSON."""
    items = [0] * 1_000_000
    measured = state({"v": items})
    json_bytes = 2 * len(items)
    assert bson_bytes(measured) <= BSON_BYTES_PER_JSON_BYTE * json_bytes
