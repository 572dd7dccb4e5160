"""JSON encoding shared by the API and the SDK (datetimes as ISO 8601, sets as lists).

`dumps` is the general encoder; `dumps_bytes` writes the same JSON (compact, UTF-8 rather than
`\\u` escapes) through orjson, several times faster, for streams of many rows."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import orjson


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    # An ObjectId exists only where bson was imported (the server): the SDK need not import it.
    bson = sys.modules.get("bson")
    if bson is not None and isinstance(value, bson.ObjectId):
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_default, separators=(",", ":"))


def dumps_bytes(value: Any) -> bytes:
    """`dumps(value)` as UTF-8 bytes, by orjson (naive datetimes taken as UTC, as `_default` does);
    what orjson refuses (non-string keys, integers beyond 64 bits) goes through `dumps`."""
    try:
        return orjson.dumps(value, default=_default, option=orjson.OPT_NAIVE_UTC)
    except TypeError:  # orjson.JSONEncodeError derives from TypeError
        return dumps(value).encode()
