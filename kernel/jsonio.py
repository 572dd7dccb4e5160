"""JSON encoding shared by the API and the SDK (datetimes as ISO 8601, naive ones as UTC; sets as
lists). orjson writes it: the standard library's encoder and its datetime hook took most of the API
server's CPU when resolving 10k LFNs (bench/results/resolve_issue17.json). What orjson refuses
(integers beyond 64 bits, keys that are not strings) goes through `json` with the same hook.
orjson writes non-ASCII characters as UTF-8 instead of \\u escapes (the same JSON), and NaN and
infinities as null (they are not JSON; the API refuses them on input). `dumps_bytes` is the same
JSON as UTF-8 bytes, for streams of many rows."""

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


def dumps_bytes(value: Any, *, indent: bool = False) -> bytes:
    """Compact JSON, or with indent=True two spaces per level (for people reading it)."""
    try:
        return orjson.dumps(value, default=_default,
                            option=orjson.OPT_NAIVE_UTC | (orjson.OPT_INDENT_2 if indent else 0))
    except orjson.JSONEncodeError:
        layout: dict[str, Any] = {"indent": 2} if indent else {"separators": (",", ":")}
        return json.dumps(value, default=_default, **layout).encode()


def dumps(value: Any) -> str:
    return dumps_bytes(value).decode()
