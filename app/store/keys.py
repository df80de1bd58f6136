"""Escaping of user-chosen field names that MongoDB cannot store as they are.

Variables, data and outputs come from users, and a key may start with ``$`` or
hold a ``.``. Such keys are escaped on the way in and restored on the way out,
so every JSON value round-trips unchanged. ``~`` is the escape character.
"""

from typing import Any

_ESCAPES = {"~": "~7E", "$": "~24", ".": "~2E", "\x00": "~00"}
_NEEDS_ESCAPE = frozenset(_ESCAPES)


def escape_keys(value: Any) -> Any:
    """A copy of ``value`` whose mapping keys MongoDB accepts."""
    if isinstance(value, dict):
        return {_escape(key): escape_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [escape_keys(item) for item in value]
    return value


def unescape_keys(value: Any) -> Any:
    """The inverse of ``escape_keys``."""
    if isinstance(value, dict):
        return {_unescape(key): unescape_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unescape_keys(item) for item in value]
    return value


def _escape(key: str) -> str:
    if _NEEDS_ESCAPE.isdisjoint(key):
        return key
    return "".join(_ESCAPES.get(char, char) for char in key)


def _unescape(key: str) -> str:
    if "~" not in key:
        return key
    parts = key.split("~")
    restored = [parts[0]]
    for part in parts[1:]:
        restored.append(chr(int(part[:2], 16)) + part[2:])
    return "".join(restored)
