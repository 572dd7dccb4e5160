"""What deletions that met an open deletion of the same replica asked on top of it
(`queueing.submit` tags it): the audit runs whose dark file it deletes, whether it deletes the
file's replica too, and how many such tags it took (the guard of the reaper's ends)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

AUDIT_RUNS, DELETES_REPLICA, TAGGED = "audit_runs", "deletes_replica", "tagged"


def dark_runs(request: Mapping[str, Any]) -> list[str]:
    """The audit runs whose dark file a deletion request deletes (its own, then those of the
    dark deletions that met it, `requests._tag_deletions`)."""
    runs = [request["audit_run"]] if request.get("audit_run") else []
    return runs + [run for run in request.get(AUDIT_RUNS, []) if run not in runs]


def deletes_replica(request: Mapping[str, Any]) -> bool:
    """Does a deletion request delete the file's replica (a user's), not only a dark file?"""
    return not request.get("audit_run") or bool(request.get(DELETES_REPLICA))


def untagged_since(request: Mapping[str, Any]) -> dict[str, Any]:
    """The guard of an attempt's end: no deletion met the request since it was claimed."""
    return {TAGGED: request[TAGGED]} if request.get(TAGGED) is not None else {TAGGED: {"$exists": False}}
