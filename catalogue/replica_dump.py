"""Every replica on one SE, for consistency checks against the SE's own listing."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import FILES
from catalogue.storage_elements import get_storage_element
from kernel.db import Document, for_output, stream_pages


async def open_dump(db: AsyncDatabase[Document], se: str) -> AsyncIterator[Document]:
    """Check the SE exists now, then return a stream of `{lfn, se, url, status, size, adler32,
    created}` for each replica on it, sorted by LFN, read page by page."""
    await get_storage_element(db, se)

    async def rows() -> AsyncIterator[Document]:
        # Index: files_by_replica_se_lfn — keyset pages, each a range scan.
        files = for_output(db[FILES])  # rows go out as JSON or Parquet
        async for page in stream_pages(files, {"replicas.se": se}, {"size": 1, "adler32": 1, "replicas": 1}):
            for doc in page:
                for replica in doc.get("replicas", []):
                    if replica.get("se") == se:
                        yield {"lfn": doc["_id"], "se": se, "url": replica.get("url"), "status": replica.get("status"),
                               "size": doc.get("size"), "adler32": doc.get("adler32"),
                               "created": replica.get("created")}

    return rows()
