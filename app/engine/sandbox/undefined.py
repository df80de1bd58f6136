"""Undefined names and lookups, and what their errors say.

Jinja2's messages quote the missing key with ``repr`` and the object by its Python
type (``'jinja2.utils.Namespace object' has no attribute 'x'``): a key may be a
value of any size (its repr built in full), or a function (whose repr holds a
memory address). These say it in plain words, keys cut short.
"""

from typing import Any

from jinja2 import StrictUndefined
from jinja2.utils import missing

SHOWN_KEY_LENGTH = 100
_PLAIN_TYPES = {
    dict: "an object",
    list: "a list",
    tuple: "a list",
    str: "a text",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class TandemUndefined(StrictUndefined):
    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        name = _key(self._undefined_name)
        if self._undefined_obj is missing:
            return f"{name} is undefined"
        owner = _PLAIN_TYPES.get(type(self._undefined_obj), "this value")
        what = "attribute" if isinstance(self._undefined_name, str) else "element"
        return f"{owner} has no {what} {name}"


def _key(key: Any) -> str:
    if isinstance(key, str):
        text = key if len(key) <= SHOWN_KEY_LENGTH else key[:SHOWN_KEY_LENGTH] + "…"
        return repr(text)
    if isinstance(key, int) and not isinstance(key, bool) and key.bit_length() <= 64:
        return str(key)
    return "of that kind"
