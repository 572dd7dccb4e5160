"""Requests that several requesters asked for: an identical open request is shared, not doubled
(`transfers.queueing.submit`): its owner (`requester`) and those who joined it (`joined`, with
their submissions in `joined_submissions`) each see it, follow it by their own submission and
may cancel it; a cancel by one of them withdraws that one only, and the request is cancelled
when nobody who asked for it is left. Releasing a done stage request's pin goes the same way: the
pin is released only once nobody who asked for the staged copy still wants it. Before, the second
requester was told the owner's request id, could see neither the request nor its submission, and
the owner's cancel (or a joined requester's release) ended what the other still relied on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, database_errors
from transfers.cancellation import ask_release, cancel
from transfers.requests import JOINED, JOINED_SUBMISSIONS, OPEN_STATES, REQUESTS, now

OPEN = {"state": {"$in": list(OPEN_STATES)}}
RELEASABLE = {"kind": "stage", "state": "done", "release": {"$exists": False}}  # as `ask_release` takes them
NOBODY_JOINED = {f"{JOINED}.0": {"$exists": False}}
SOMEBODY_JOINED = {f"{JOINED}.0": {"$exists": True}}
PASSES = 3  # of `cancel_as`, when hand-overs meet concurrent changes


def of_requester(requester: str) -> Document:
    """The requests a requester owns or joined."""
    return {"$or": [{"requester": requester}, {JOINED: requester}]}


def of_submission(submission: str) -> Document:
    """The requests of a submission: those it made and those it joined."""
    return {"$or": [{"submission": submission}, {JOINED_SUBMISSIONS: submission}]}


def both(*queries: Document) -> Document:
    """Every one of the queries (each may hold its own `$or`)."""
    return {"$and": [q for q in queries if q]}


async def cancel_as(db: AsyncDatabase[Document], query: dict[str, Any], requester: str) -> int:
    """Cancel, for `requester`, the open requests matching query that it owns or joined
    (`_withdraw`; one nobody else asked for is cancelled, `transfers.cancellation.cancel`)."""
    return await _withdraw(db, query, requester, OPEN, cancel)


async def release_as(db: AsyncDatabase[Document], query: dict[str, Any], requester: str) -> int:
    """Release, for `requester`, the pins of the done stage requests matching query that it owns or
    joined (`_withdraw`; one nobody else asked for has its release asked, `cancellation.ask_release`)."""
    return await _withdraw(db, query, requester, RELEASABLE, ask_release)


async def _withdraw(db: AsyncDatabase[Document], query: dict[str, Any], requester: str, still: Document,
                    end: Callable[[AsyncDatabase[Document], dict[str, Any]], Awaitable[int]]) -> int:
    """Take `requester` off the requests matching query and `still` (what the ending applies to)
    that it owns or joined: one it joined loses it, one it owns that others joined passes to the
    first of them, and one nobody else asked for is ended (`end`). Each write is guarded by what
    it changes; a hand-over that meets a concurrent change (the heir withdrew meanwhile) is looked
    at again in another pass. Returns how many it no longer has."""
    done = 0
    for _ in range(PASSES):
        done += await end(db, both(query, {"requester": requester}, NOBODY_JOINED))
        at = now()
        with database_errors():
            withdrawn = await db[REQUESTS].update_many(both(query, {JOINED: requester}, still),
                                                       {"$pull": {JOINED: requester}, "$set": {"modified": at}})
            shared = await db[REQUESTS].find(both(query, {"requester": requester}, SOMEBODY_JOINED, still),
                                             {JOINED: 1}).to_list()
            handed = 0
            for doc in shared:
                heir = doc[JOINED][0]
                result = await db[REQUESTS].update_one(
                    {"_id": doc["_id"], "requester": requester, JOINED: heir, **still},
                    {"$set": {"requester": heir, "modified": at}, "$pull": {JOINED: heir}})
                handed += result.modified_count
        done += withdrawn.modified_count + handed
        if handed == len(shared):
            break
    return done
