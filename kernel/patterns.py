"""Regular expressions that users give (a subscription's name pattern, a production's input
query): compiled and matched by RE2, in time linear in the text, never Python's `re`, which
backtracks exponentially on patterns like `^(a+)+$` and holds the event loop while it does (one
user's pattern would stop a daemon for everyone). RE2 takes Perl's syntax without backreferences
and lookaround; a pattern it refuses is refused with the reason.
"""

from __future__ import annotations

import functools
from typing import Any

import re2

MAX_PATTERN = 500  # characters
MAX_MEMORY = 1 << 20  # bytes RE2 may use for one compiled pattern


class PatternError(ValueError):
    """A pattern RE2 does not take (bad syntax, backreferences, lookaround, too large)."""


@functools.lru_cache(maxsize=1024)
def compiled(pattern: str) -> Any:
    """The compiled pattern (cached); PatternError when RE2 refuses it."""
    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"longer than {MAX_PATTERN} characters")
    options = re2.Options()
    options.log_errors = False
    options.max_mem = MAX_MEMORY
    try:
        return re2.compile(pattern, options=options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(f"not a regular expression this service takes ({reason}; no backreferences or "
                           "lookaround)") from None


def searches(pattern: str, text: str) -> bool:
    """Whether `pattern` matches somewhere in `text` (False for a pattern RE2 refuses)."""
    try:
        return compiled(pattern).search(text) is not None
    except PatternError:
        return False
