"""Directory records: building them, fetching many at once, inserting missing ones.

A directory is stored under its path (`_id`) with `parent` and `name`, so a listing is the
index range `(parent, name)` and a subtree is the `_id` prefix range below the path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from catalogue.lfn import ROOT, name_of, parent_of
from catalogue.metadata_fields import MetadataMaps
from catalogue.permissions import DEFAULT_DIR_MODE
from catalogue.usage import INTERNAL_FIELDS
from kernel.db import Document, IndexSpec, database_errors, read_by_ids
from kernel.principal import Principal

DIRECTORIES = "directories"
DUPLICATE_KEY = 11000

# ls reads `_id` ranges (catalogue.children): no index beyond `_id`.
INDEXES: list[IndexSpec] = []


class DirectoryRecord(TypedDict, total=False):
    """A document of `directories` (the root `/` is implicit and has none); `meta` and the
    inherited maps as in `catalogue.metadata_fields.MetadataMaps`."""

    _id: str
    parent: str
    name: str
    owner: str
    group: str
    mode: int
    created: dt.datetime
    modified: dt.datetime
    meta: dict[str, Any]
    meta_effective: dict[str, Any]
    meta_origin: dict[str, str]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def directory_document(
    path: str, principal: Principal, *, mode: int | None, at: dt.datetime, metadata: MetadataMaps | None = None
) -> DirectoryRecord:
    """A new directory owned by the caller (primary group) with the given or default mode;
    `metadata` holds the inherited metadata maps (see `catalogue.metadata.metadata_fields_for`)."""
    doc: DirectoryRecord = {
        "_id": path,
        "parent": parent_of(path),
        "name": name_of(path),
        "owner": principal.sub,
        "group": principal.primary_group,
        "mode": DEFAULT_DIR_MODE if mode is None else mode,
        "created": at,
        "modified": at,
        "meta": {},
    }
    if metadata is not None:
        doc.update(metadata)
    return doc


async def fetch_directories(db: AsyncDatabase[Document], paths: Iterable[str]) -> dict[str, Document]:
    """The existing directories among `paths`, in one `_id $in` query (the `_id` index)."""
    return await find_by_ids(db[DIRECTORIES], {p for p in paths if p != ROOT})


async def find_by_ids(
    collection: AsyncCollection[Document], ids: Iterable[str], projection: Any = None
) -> dict[str, Document]:
    """Records by `_id`: `$in` on the `_id` index in bounded slices (kernel.db.read_by_ids)."""
    return {d["_id"]: d async for d in read_by_ids(collection, ids, projection)}


async def insert_directories(db: AsyncDatabase[Document], docs: Sequence[DirectoryRecord]) -> None:
    """Insert directories in one unordered batch; ones that a concurrent caller created are fine."""
    await insert_ignoring_duplicates(db[DIRECTORIES], [dict(d) for d in docs])


async def insert_ignoring_duplicates(collection: AsyncCollection[Document], docs: list[Document]) -> None:
    """One unordered insert where records that exist already (same `_id`) are left as they are."""
    if not docs:
        return
    try:
        with database_errors():
            await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        other = [e for e in exc.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
        if other:
            raise


def entry_view(doc: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The public shape of a namespace entry: its path, type and the stored fields."""
    view = {"path": doc["_id"], "type": kind}
    view.update({k: v for k, v in doc.items() if k not in INTERNAL_FIELDS})
    return view
