"""Shares of the transfer queue (FTS3's VO shares, Rucio's activity shares): what the turns of a
flow of requests (one requester's requests of one kind and activity, `transfers.turns`) are
spaced by, so that the queue serves flows in proportion to their weights.

VOs share the queue by their `transfer_share` (`catalogue.vos`, default 1, global admins set
it); a VO's share is split among its backlogged flows in proportion to their activities'
shares (stored here, `transfer_activity_shares`, default `DEFAULT_ACTIVITY`'s or 1). So a VO
gets its share however many users it has and whatever activities they name, and within it one
user's backlog does not starve another's. With fewer than two VOs registered there is nothing to
split a share against: a flow's weight is its activity's share alone, and no backlog is counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.vos import registry
from kernel.db import Document, database_errors
from kernel.errors import NotFound

ACTIVITY_SHARES = "transfer_activity_shares"  # {_id: activity, share}
DEFAULT_ACTIVITY = "*"  # its share is every unlisted activity's
ACTIVITY_PATTERN = r"^([A-Za-z0-9_. -]{1,64}|\*)$"  # the activities requests may name (request_routes), or '*'
MAX_SHARE = 1_000_000.0
# A flow's turns are at least 1 and at most MAX_STRIDE apart: turns stay 16-digit integers for
# at least 9e15 / MAX_STRIDE claims even if only the lightest flows were ever served.
MAX_STRIDE = 1_000_000.0
CACHE_S = 2.0  # how long a process trusts its copy of the activity shares (as `catalogue.vos.CACHE_S`)

_cache: dict[str, tuple[float, dict[str, float]]] = {}


class ShareBody(BaseModel):
    """A share as an admin sets it: a number, not a string or a boolean; finite; above 0."""

    model_config = ConfigDict(extra="forbid")

    share: float = Field(..., gt=0, le=MAX_SHARE, allow_inf_nan=False, strict=True,
                         description="relative weight, > 0 and at most 1e6 (default 1)")


@dataclass(frozen=True)
class VoShares:
    """The VOs' transfer shares as one submission weighs them."""

    shares: Mapping[str, float]

    @property
    def split(self) -> bool:
        """Whether VOs share the queue (two or more registered)."""
        return len(self.shares) > 1

    def of(self, vo: str) -> float:
        """A VO's share relative to the largest (a VO not registered has share 1)."""
        return self.shares.get(vo, 1.0) / max(self.shares.values(), default=1.0)


async def vo_shares(db: AsyncDatabase[Document]) -> VoShares:
    """Every registered VO's transfer share (`catalogue.vos.registry`, cached there)."""
    return VoShares({name: vo.transfer_share for name, vo in (await registry(db)).items()})


async def activity_shares(db: AsyncDatabase[Document], *, fresh: bool = False) -> dict[str, float]:
    """The activities' shares that were set (cached for CACHE_S per database; writes here drop it)."""
    cached = _cache.get(db.name)
    if cached is not None and not fresh and time.monotonic() - cached[0] < CACHE_S:
        return cached[1]
    with database_errors():
        shares = {doc["_id"]: float(doc["share"]) async for doc in db[ACTIVITY_SHARES].find()}
    _cache[db.name] = (time.monotonic(), shares)
    return shares


def activity_share(shares: Mapping[str, float], activity: str) -> float:
    return shares.get(activity, shares.get(DEFAULT_ACTIVITY, 1.0))


async def set_activity_share(db: AsyncDatabase[Document], activity: str, share: float) -> None:
    """Set an activity's share (`DEFAULT_ACTIVITY`: every unlisted one's); later submissions weigh by it."""
    with database_errors():
        await db[ACTIVITY_SHARES].update_one({"_id": activity}, {"$set": {"share": float(share)}}, upsert=True)
    _cache.pop(db.name, None)


async def forget_activity_share(db: AsyncDatabase[Document], activity: str) -> None:
    """Give an activity the default share again (404 if it had none of its own)."""
    with database_errors():
        found = await db[ACTIVITY_SHARES].delete_one({"_id": activity})
    _cache.pop(db.name, None)
    if not found.deleted_count:
        raise NotFound(f"activity {activity!r} has no share of its own")


def stride(vos: VoShares, vo: str, activities: Mapping[str, float], activity: str,
           backlog: Mapping[str, int]) -> float:
    """How far apart a flow's turns are (1 for the heaviest weight): 1 / weight, where the weight
    is its VO's relative share times its activity's part of the activities of the VO's `backlog`
    (the other backlogged flows' counts by activity); with one VO, its activity's share relative
    to the largest activity share."""
    own = activity_share(activities, activity)
    if vos.split:
        others = sum(activity_share(activities, name) * count for name, count in backlog.items())
        weight = vos.of(vo) * own / (own + others)
    else:
        weight = own / max([own, activity_share(activities, DEFAULT_ACTIVITY), *activities.values()])
    return min(max(1.0 / weight, 1.0), MAX_STRIDE)


def offsets(count: int, step: float) -> tuple[list[int], int]:
    """Where `count` turns `step` apart fall after a clock's turn (the first `ceil(step) - 1` after
    it: a light flow's newcomer waits its step, a flow of step 1 starts at the clock), and how far
    the clock then moves (one past the last)."""
    def at(n: int) -> int:
        return math.ceil(round(n * step, 6))  # 3 steps of 1 / (1/3) end at 9, not 10
    return [at(i + 1) - 1 for i in range(count)], at(count)
