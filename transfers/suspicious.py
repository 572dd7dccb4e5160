"""Replicas found missing when read (a download, a transfer's source): suspicious, and after
`audit.suspicious_threshold` reports, lost (`catalogue.replica_health.report_suspicious`).

A report from a user's process counts only once the server itself finds the file missing on
storage (a stat through `transfers.endpoints`), so no caller can declare a replica lost that is
there; a transfer worker's report counts as it comes (it just failed to read it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.replica_health import report_suspicious
from catalogue.storage_elements import get_storage_element
from catalogue.storage_paths import storage_lfn
from kernel.db import Document
from kernel.errors import CairnError, NotFound
from storage_plugins.registry import plugin_for
from transfers.endpoints import endpoints


async def confirm_and_report(db: AsyncDatabase[Document], lfn: str, se_name: str, replica: Mapping[str, Any], *,
                             credentials: Mapping[str, Mapping[str, str]], threshold: int, reason: str) -> str:
    """Check lfn's replica on se is missing on storage and count the report: "suspicious" or
    "lost"; "present" (not counted) when it is there, "unverified" when storage cannot tell."""
    se = await get_storage_element(db, se_name)
    try:
        endpoint = endpoints(se, storage_lfn(lfn, replica), "read", credentials=credentials,
                             registered_url=replica.get("url"))[0]
        # The process's shared plugin: not closed here, others are using it (`close_plugins`).
        await plugin_for(endpoint.url, endpoint.options).stat(endpoint.url)
    except NotFound:
        return await report_suspicious(db, lfn, se_name, threshold=threshold, reason=reason)
    except CairnError:
        return "unverified"
    return "present"
