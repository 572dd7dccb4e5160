"""The client side of suspicious replicas: a download that finds a replica missing says so."""

from __future__ import annotations

from kernel.client import BaseClient
from kernel.errors import CairnError


async def report_missing(client: BaseClient, lfn: str, se: str, message: str) -> str:
    """Report lfn's replica on se missing (`POST /replicas/suspicious`); what became of it, as a note."""
    try:
        answer = await client.request("POST", "/replicas/suspicious",
                                      json_body={"lfn": lfn, "se": se, "reason": message[:500]})
    except CairnError as exc:
        return f"SE {se}: could not report the replica missing ({exc.message})"
    return f"SE {se}: replica reported missing (now {answer['state']})"
