from app.store.keys import escape_keys, unescape_keys


def test_keys_mongodb_refuses_are_escaped_and_restored() -> None:
    value = {
        "$gt": 1,
        "a.b": {"$in": [{"x.y": "~"}]},
        "~tilde": "keep",
        "plain": [1, "$x.y"],
        "nul\x00": 0,
    }
    escaped = escape_keys(value)
    for key in _all_keys(escaped):
        assert not key.startswith("$") and "." not in key and "\x00" not in key
    assert escaped["plain"] == [1, "$x.y"]  # values are never touched
    assert unescape_keys(escaped) == value


def test_plain_keys_are_unchanged() -> None:
    value = {"name": "Ann", "size": 4, "nested": {"ok": True}}
    assert escape_keys(value) == value


def _all_keys(value: object) -> list[str]:
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in [key, *_all_keys(item)]]
    if isinstance(value, list):
        return [k for item in value for k in _all_keys(item)]
    return []
