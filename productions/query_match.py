"""Whether a compiled metadata query (`catalogue.meta_query.compile_query`) could match files
with given metadata, decided without the database: used to validate a production's chain (a
step whose query can never match the previous step's outputs, or a step fed by its own outputs).

Three-valued: True (matches), False (cannot match), None (depends on what is not known: a
metadata value that is a placeholder, or a standard key such as size or name).

A query's patterns (its wildcards) are the user's: they are matched by RE2 (`kernel.patterns`),
in time linear in the value; `check_patterns` finds one RE2 refuses before any is matched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from catalogue.metadata_fields import EFFECTIVE
from kernel.patterns import compiled

UNKNOWN = object()
_PREFIX = f"{EFFECTIVE}."


def _and(results: list[bool | None]) -> bool | None:
    if any(r is False for r in results):
        return False
    return True if all(r is True for r in results) else None


def _or(results: list[bool | None]) -> bool | None:
    if any(r is True for r in results):
        return True
    return False if all(r is False for r in results) else None


def _compare(value: Any, condition: Any) -> bool | None:
    if not isinstance(condition, dict):
        return value == condition
    results: list[bool | None] = []
    for op, arg in condition.items():
        if op == "$in":
            results.append(value in arg)
        elif op == "$exists":
            results.append(bool(arg))
        elif op == "$regex":
            results.append(isinstance(value, str) and compiled(arg).search(value) is not None)
        elif op in ("$lt", "$lte", "$gt", "$gte"):
            try:
                results.append({"$lt": value < arg, "$lte": value <= arg, "$gt": value > arg,
                                "$gte": value >= arg}[op])
            except TypeError:
                results.append(False)
        else:
            results.append(None)
    return _and(results)


def could_match(flt: Mapping[str, Any], meta: Mapping[str, Any]) -> bool | None:
    """Could a file with metadata `meta` (values may be UNKNOWN) match the filter?"""
    results: list[bool | None] = []
    for key, condition in flt.items():
        if key == "$and":
            results.append(_and([could_match(f, meta) for f in condition]))
        elif key == "$or":
            results.append(_or([could_match(f, meta) for f in condition]))
        elif key == "$nor":
            inner = _or([could_match(f, meta) for f in condition])
            results.append(None if inner is None else not inner)
        elif not key.startswith(_PREFIX):
            results.append(None)  # a standard key (name, size, se...): not known before the file exists
        else:
            name = key[len(_PREFIX):]
            if name not in meta:
                missing = isinstance(condition, dict) and condition.get("$exists") is False
                results.append(missing)
            elif meta[name] is UNKNOWN:
                results.append(None)
            else:
                results.append(_compare(meta[name], condition))
    return _and(results)


def check_patterns(flt: Any) -> None:
    """PatternError (a ValueError) for the first of the filter's patterns that RE2 refuses."""
    if isinstance(flt, Mapping):
        for op, arg in flt.items():
            if op == "$regex":
                compiled(arg)
            else:
                check_patterns(arg)
    elif isinstance(flt, list):
        for item in flt:
            check_patterns(item)
