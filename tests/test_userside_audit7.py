"""Seventh audit, what users run: an upload never undoes what another upload finished."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from cairn.sdk import Client
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.payloads import Payload, adler32_of_file


async def test_two_uploads_of_the_same_file_at_once_never_lose_the_one_reported_uploaded(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path
) -> None:
    """Two uploads of the same bytes to the same LFN (a retry while the first still runs, two
    shells): the second finds the first's `copying` replica and writes over it; its flip then
    finds the replica `available` (the first finished) and must not take it to be its own
    failure, whose undo deleted the bytes and the replica the first had reported uploaded."""
    se = await live_ses.add("file")
    source = payload(3 << 20)
    for round_ in range(3):
        lfn = f"/cta/twice/f{round_}"
        first, second = await asyncio.gather(admin.upload([source.path], lfn, se.name),
                                             admin.upload([source.path], lfn, se.name))
        statuses = sorted(o.status for o in (*first, *second))
        assert "uploaded" in statuses, statuses
        replicas = (await admin.get_file(lfn))["replicas"]
        assert [(r["se"], r["status"]) for r in replicas] == [(se.name, "available")], (statuses, replicas)
        (got,) = await admin.download([lfn], tmp_path / f"back{round_}")
        assert got.status == "downloaded", (statuses, got)
        assert adler32_of_file(Path(got.local)) == source.adler32
