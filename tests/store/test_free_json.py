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


def test_escaping_a_deep_value_visits_each_part_at_most_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hostile value nested as deep as inputs may be, with a key to escape at the very
    bottom, costs work in proportion to its size: looking once, then mapping once, not
    looking again at every level (which doubled the work per level)."""
    from app.store import free_json

    depth = 32  # MAX_VALUE_DEPTH
    value: Any = {"$bottom": 1}
    for _ in range(depth):
        value = {"a": [value]}
    visits = 0
    for name in ("_plain", "_escaped"):
        original = getattr(free_json, name)

        def counted(item: Any, original: Any = original) -> Any:
            nonlocal visits
            visits += 1
            return original(item)

        monkeypatch.setattr(free_json, name, counted)
    stored = escape(value)
    parts = 2 * depth + 2  # the dicts and lists, and the value at the bottom
    assert visits <= 2 * parts
    assert unescape(stored) == value
