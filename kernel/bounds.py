"""Input bounds checked at the edge, before any value reaches the database: integers fit a
signed 64-bit BSON long, JSON bodies nest at most `MAX_JSON_DEPTH` deep, query and RSE
expressions nest parentheses at most `MAX_EXPRESSION_DEPTH` deep, and bulk calls carry
at most `MAX_BULK_ITEMS` items. `Int64` is the pydantic type every model uses for integers
that are stored; `parse_json` applies the same integer bound to free-form values (metadata,
job parameters) that no model types.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

from pydantic import Field

from kernel.errors import InvalidInput, MalformedRequest

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_JSON_DEPTH = 64
MAX_EXPRESSION_DEPTH = 32
MAX_BULK_ITEMS = 100_000
"""Most items in one bulk read (lookup, resolve): 400 above it; the SDK splits larger calls."""

MAX_LIFETIME_S = 100 * 366 * 86400
"""Longest lifetime (rules, subscriptions): now + lifetime must stay a representable datetime."""

# Each type carries its whole range: a model field must not add Field(ge=...) to one of them,
# as pydantic lets the type's own bound replace the field's.
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
"""An integer that fits BSON's int64; larger values are refused with 400 before the database."""
Size = Annotated[int, Field(ge=0, le=INT64_MAX)]
"""A byte count or size: 0 up to the int64 maximum."""
PositiveInt64 = Annotated[int, Field(ge=1, le=INT64_MAX)]
"""A count, attempt or priority of at least 1 that fits int64."""


def _bounded_int(text: str) -> int:
    value = int(text) if len(text) <= 20 else INT64_MAX + 1
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidInput(f"integer {text[:24]}{'...' if len(text) > 24 else ''} is outside the signed 64-bit range")
    return value


def _refuse_constant(name: str) -> float:
    raise InvalidInput(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent; one beyond a double's range (1e999) would
    become an infinity, which is not JSON and which every answer would show as null."""
    value = float(text)
    if not math.isfinite(value):
        raise InvalidInput(f"number {text[:24]}{'...' if len(text) > 24 else ''} is beyond a 64-bit float's range")
    return value


def _check_tree(value: Any, *, strings: bool) -> None:
    """Nesting within MAX_JSON_DEPTH and, if `strings`, no lone surrogate in any key or string
    (the database cannot encode one; JSON lets `\\ud800` through)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if strings and isinstance(item, str):
            _check_unicode(item)
            continue
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidInput(f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
        if strings and isinstance(item, dict):
            for key in item:
                _check_unicode(key)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | str))


def _check_unicode(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidInput("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff); send valid Unicode") from exc


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(raw: bytes | str) -> Any:
    """JSON text as Python values, refusing (400) what the database cannot hold or what would
    exhaust the stack: integers outside int64, NaN/Infinity (or numbers beyond a double's range),
    lone surrogates, nesting beyond
    MAX_JSON_DEPTH. Strings are only walked when the text has a surrogate escape at all."""
    try:
        value = json.loads(raw, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise MalformedRequest(f"JSON nests deeper than {MAX_JSON_DEPTH} levels") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from exc
    except InvalidInput:
        raise
    except (ValueError, TypeError) as exc:
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from exc
    text = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    _check_tree(value, strings=_SURROGATE_ESCAPE.search(text) is not None)
    return value

