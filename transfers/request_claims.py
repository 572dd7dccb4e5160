"""Taking transfer requests under leases, and keeping or giving back those leases: the workers',
the reaper's and the stager's claims (queued and due requests best first: by priority, then turn
(`transfers.turns`), then age; `staging` requests whose poll is due), each read from its index
under `kernel.db.INDEX_ORDER`, and the renewals that keep a held request its worker's."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from pymongo.asynchronous.database import AsyncDatabase

from kernel import claims, lease
from kernel.db import INDEX_ORDER, Document, database_errors, increment
from transfers.requests import OPEN_STATES, REQUESTS, Kind, now
from transfers.turns import FIRST_TURN, mark_served, note_turns_given, turns_given

T = TypeVar("T")


def _claimable(kinds: Iterable[Kind], at: dt.datetime) -> dict[str, Any]:
    # Queued and due, or active under a lease that ran out (`kernel.claims` adds the lease guard).
    return {"kind": {"$in": list(kinds)}, "$or": [{"state": "queued", "not_before": {"$lte": at}}, {"state": "active"}]}


CLAIM_ORDER = [("priority", -1), ("turn", 1), ("created", 1)]


def _start(at: dt.datetime) -> dict[str, Any]:
    return {"$set": {"state": "active", "modified": at, "started": at}, **increment({"attempts": 1})}


async def claim(
    db: AsyncDatabase[Document], worker: str, *, kinds: Iterable[Kind], lease_s: float,
    extra_filter: dict[str, Any] | None = None,
) -> Document | None:
    """Take the next request (queued and due, or active with an expired lease) under a lease.

    One atomic find_one_and_update: two workers can never hold the same request.
    """
    await _turns_given(db)
    at = now()
    # requests_claim_turn / requests_lease
    return await claims.claim_one(db[REQUESTS], worker, {**_claimable(kinds, at), **(extra_filter or {})},
                                  lease_s=lease_s, sort=CLAIM_ORDER, update=_start(at))


async def claim_many(
    db: AsyncDatabase[Document], worker: str, *, kinds: Iterable[Kind], lease_s: float, limit: int,
    expired: bool = True,
) -> list[Document]:
    """Take up to `limit` requests in `kernel.claims.claim_many`'s three round trips per state, not
    one per request: first (unless not `expired`) those whose worker's lease ran out (taken before,
    so they were at the head of the queue), then queued and due ones best first (as `claim` orders
    them). A caller that claims many times a second may look for expired leases less often: such
    requests have waited a lease already, and the look is a read of its own.

    Each state is its own read of the `requests_claim_turn` index (state and kind equal, priority,
    turn and age in order) under `kernel.db.INDEX_ORDER`, so that Cairn's FerretDB build reads the
    next `limit` entries of the index instead of every open request (a claim at 50k queued cost
    0.5 s of database CPU, growing with the queue). Its promises hold: state and kind are strings,
    priorities one digit (`submit` checks), turns integers of 16 digits (`transfers.turns`; a
    request queued before turns has one given by `give_turns`), `created` a date. The service
    frontier moves to the batch's last turn."""
    await _turns_given(db)
    at = now()
    kind_list = list(kinds)
    kind: Document = {"kind": kind_list[0]} if len(kind_list) == 1 else {"kind": {"$in": kind_list}}
    states: list[Document] = [{"state": "active"}] if expired else []
    queries = [{**state, **kind} for state in [*states, {"state": "queued", "not_before": {"$lte": at}}]]
    got = await claims.claim_in_turn(db[REQUESTS], worker, queries, lease_s=lease_s, sort=CLAIM_ORDER, limit=limit,
                                     update=_start(at), comment=INDEX_ORDER)
    await mark_served(db, got)
    return got


_TURNS_GIVEN: set[int] = set()  # the database clients of this process whose requests all have a turn


async def _turns_given(db: AsyncDatabase[Document]) -> None:
    """`give_turns` once per database client of this process, before its first claim."""
    if id(db.client) not in _TURNS_GIVEN:
        await give_turns(db)
        _TURNS_GIVEN.add(id(db.client))


async def give_turns(db: AsyncDatabase[Document]) -> int:
    """Give the open requests queued before turns existed the first turn (they are claimed before
    all others of their priority, by age, as they were), so that every request has one; how many
    there were. Once per database (`turns.GIVEN` notes it: a look at every request), asked before
    a process's first claim."""
    if await turns_given(db):
        return 0
    with database_errors():
        result = await db[REQUESTS].update_many({"turn": {"$exists": False}, "state": {"$in": list(OPEN_STATES)}},
                                                {"$set": {"turn": FIRST_TURN}})
    await note_turns_given(db)
    return int(result.modified_count)


async def renew_lease(db: AsyncDatabase[Document], request_id: str, worker: str, *, lease_s: float) -> bool:
    """Extend a lease this worker holds; False if it was lost (then the work must stop)."""
    return bool(await renew_leases(db, [request_id], worker, lease_s=lease_s))


async def held_by(db: AsyncDatabase[Document], request_ids: Iterable[str], worker: str) -> set[str]:
    """Which of these requests this worker still holds (active under its lease)."""
    return await claims.held(db[REQUESTS], list(request_ids), worker, guard={"state": "active"})


async def renew_leases(db: AsyncDatabase[Document], request_ids: Sequence[str], worker: str, *,
                       lease_s: float, state: str = "active") -> set[str]:
    """Extend every lease this worker holds among request_ids (in `state`: `staging` for the
    stager's polls) in one update; returns the ones still held."""
    return await claims.renew(db[REQUESTS], request_ids, worker, lease_s=lease_s, guard={"state": state},
                              set_fields={"modified": now()})


async def holding(db: AsyncDatabase[Document], worker: str, work: Coroutine[Any, Any, T],
                  pending: Callable[[], Collection[str]], *, lease_s: float, since: float,
                  state: str = "active") -> tuple[bool, T | None]:
    """Run `work` on held requests, renewing the leases of those `pending()` names (the work
    takes a request out before it ends it) every third of a lease (`kernel.lease.while_held`;
    `since`: the time.monotonic() before they were claimed). One found lost, or not renewed in
    time, stops the work as if its holder had died: (False, None); else (True, its result)."""
    async def keep() -> bool:
        ids = list(pending())
        held = await renew_leases(db, ids, worker, lease_s=lease_s, state=state) if ids else set()
        still = pending()
        return not [rid for rid in ids if rid not in held and rid in still]

    return await lease.while_held(work, keep, every_s=lease_s / 3, lease_s=lease_s, since=since)


async def claim_staging(db: AsyncDatabase[Document], worker: str, *, lease_s: float) -> Document | None:
    """Take a `staging` request whose poll is due, under a lease; its state stays `staging`."""
    # requests_stage_poll
    return await claims.claim_one(db[REQUESTS], worker, {"state": "staging", "stage.next_poll": {"$lte": now()}},
                                  lease_s=lease_s, sort=[("stage.next_poll", 1)])


async def claim_staging_many(db: AsyncDatabase[Document], worker: str, *, lease_s: float,
                             limit: int) -> list[Document]:
    """`claim_staging` for up to `limit` requests, in `kernel.claims.claim_many`'s three round trips;
    read from `requests_stage_poll` under INDEX_ORDER (`stage` is a document and `next_poll` a date
    in every staging request), so a tape's 100k staging files cost a poll its batch, not all of them."""
    return await claims.claim_many(db[REQUESTS], worker, {"state": "staging", "stage.next_poll": {"$lte": now()}},
                                   lease_s=lease_s, sort=[("stage.next_poll", 1)], limit=limit, comment=INDEX_ORDER)
