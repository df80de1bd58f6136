"""Free-form JSON is stored escaped only where MongoDB needs it, and comes back unchanged."""

from typing import Any

import pytest

from app.store.free_json import escape, unescape

HOSTILE: list[tuple[Any, Any]] = [
    ({"a.b": 1, "$c": 2, "": 3, "%": 4}, {"a%2Eb": 1, "%24c": 2, "%": 3, "%25": 4}),
    ({"ok": [1, {"x\x00y": None}]}, {"ok": [1, {"x%00y": None}]}),
    (
        [2**64, -(2**63) - 1, 2**63 - 1],
        [{"%int": str(2**64)}, {"%int": str(-(2**63) - 1)}, 2**63 - 1],
    ),
    ({"deep": {"er": [[{"k.k": True}]]}}, {"deep": {"er": [[{"k%2Ek": True}]]}}),
]


@pytest.mark.parametrize(("value", "stored"), HOSTILE)
def test_what_mongodb_refuses_is_escaped_and_comes_back(value: Any, stored: Any) -> None:
    assert escape(value) == stored
    assert unescape(escape(value)) == value


@pytest.mark.parametrize(
    "value",
    [{"name": "Ann", "size": 4, "tags": ["a", {"b": 1.5}], "none": None}, [[], {}, "x.y"], 7],
)
def test_a_value_with_nothing_to_escape_is_stored_as_it_is(value: Any) -> None:
    """No copy is made of what needs no escape (dots and dollars in values are fine)."""
    assert escape(value) is value
    assert unescape(value) == value
