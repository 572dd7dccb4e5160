"""Calls that name themselves: a request id of the caller's choosing (the SDK makes one per call),
from which the server derives the key of what the call makes, so that the call sent again (its
answer lost, the API restarted, a script run again) finds what its first sending made
(`rules.rule_requests`, `wms.submission_requests`)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

PATTERN = r"^[A-Za-z0-9_.:-]{8,128}$"  # a request id as a body may carry it
DESCRIPTION = "a key of the caller's choosing naming this call: sent again, it answers what the first sending made"


def call_key(kind: str, vo: str, sub: str, request_id: str) -> str:
    """The key (32 hex digits) of what the call `request_id` of caller (vo, sub) makes, of `kind`:
    no other caller's call, and no call of another kind, can have it."""
    return hashlib.sha256(f"cairn-{kind}\n{vo}\n{sub}\n{request_id}".encode()).hexdigest()[:32]


def digest(asked: Any) -> str:
    """What a call asked for (JSON-able), so that a request id sent again with other settings is
    told apart."""
    return hashlib.sha256(json.dumps(asked, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()
