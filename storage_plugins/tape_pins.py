"""Pins on the staged copies of a tape SE's disk cache, one per bring-online request.

A staged copy stays in the cache while any pin on it is live; releasing one request's pin (a
transfer that has copied the file, a user done with a stage) leaves the others in place, as
SRM's release by request token does. Pins live in one JSON file per tape path under
`<cache>/pins/`; every change to pins or to the cached copies is made under an exclusive
`flock` on `<cache>/pins.lock`, so a stager and transfer workers in other processes never lose
each other's pins, and eviction never removes a copy a pin was just added to.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


class PinStore:
    """The pins of one cache directory (blocking calls: run them in a thread)."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cache's exclusive lock (between processes too)."""
        self.cache.mkdir(parents=True, exist_ok=True)
        with open(self.cache / "pins.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def path(self, tape_path: str) -> Path:
        return self.cache / "pins" / f"{hashlib.sha1(tape_path.encode()).hexdigest()}.json"

    def pins(self, tape_path: str) -> dict[str, float]:
        """Pin id -> expiry (epoch seconds); a pin file of the one-pin format counts as pin ''."""
        doc = read_json(self.path(tape_path)) or {}
        pins = doc.get("pins")
        if isinstance(pins, dict):
            return {str(k): float(v) for k, v in pins.items()}
        return {"": float(doc["expires"])} if "expires" in doc else {}

    def live(self, tape_path: str, at: float | None = None) -> dict[str, float]:
        at = time.time() if at is None else at
        return {pin: expires for pin, expires in self.pins(tape_path).items() if expires > at}

    def add(self, tape_path: str, pin: str, expires: float) -> None:
        """Pin (call under `locked`); a request pinning again keeps the later expiry."""
        pins = self.live(tape_path)
        pins[pin] = max(expires, pins.get(pin, 0.0))
        write_json(self.path(tape_path), {"tape_path": tape_path, "pins": pins})

    def remove(self, tape_path: str, pin: str | None) -> dict[str, float]:
        """Drop one pin, or every pin when pin is None (call under `locked`); returns the live rest."""
        rest = {} if pin is None else {k: v for k, v in self.live(tape_path).items() if k != pin}
        if rest:
            write_json(self.path(tape_path), {"tape_path": tape_path, "pins": rest})
        else:
            self.path(tape_path).unlink(missing_ok=True)
        return rest
