"""``validate.pattern``: regular expressions matched in linear time.

A pattern comes from a tenant and the text it is matched against from any user,
so a backtracking engine (Python's ``re``) would let ``^(a+)+$`` stall the server
for minutes on a short message. RE2 guarantees time linear in the message's
length and memory bounded per pattern; the features that would need
backtracking (backreferences, lookaround) are refused at publish.
"""

from dataclasses import dataclass
from typing import Any

import re2

# RE2 stops compiling a pattern whose program needs more memory than this.
PATTERN_MAX_MEMORY = 8 * 1024 * 1024


class PatternError(Exception):
    """A pattern that RE2 cannot take; the message says why."""


# No match, as RE2's matcher reports it.
_NO_SPAN = (-1, -1)


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled ``validate.pattern``: searched anywhere in a message, like ``re.search``."""

    source: str
    _compiled: Any

    def search(self, text: str) -> bool:
        # The binding's Python-level search builds match objects and character offsets
        # (10 us a call); asking its matcher directly whether there is a match takes 1 us.
        matcher = getattr(self._compiled, "_regexp", None)
        if matcher is None:
            return self._compiled.search(text) is not None
        encoded = text.encode()
        spans = matcher.Match(re2._Anchor.UNANCHORED, encoded, 0, len(encoded))
        return bool(spans[0] != _NO_SPAN)


def compile_pattern(source: str, *, ignore_case: bool = False) -> Pattern:
    options = re2.Options()
    options.log_errors = False  # a tenant's mistake is reported to the tenant, not logged
    options.max_mem = PATTERN_MAX_MEMORY
    options.case_sensitive = not ignore_case
    try:
        return Pattern(source, re2.compile(source, options))
    except re2.error as error:
        reason = error.args[0] if error.args else "not a valid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        text = str(reason)
        if "invalid escape sequence: \\" in text or "invalid perl operator: (?" in text:
            text += " (RE2 has no backreferences and no lookahead or lookbehind)"
        raise PatternError(text) from None
