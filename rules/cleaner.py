"""`cairn daemon rule-cleaner`: removes expired rules (lifetime over, or deleted by their owner).

For a rule whose `expires_at` has passed and that is not `locked`, under the rule's lease: its
open transfer requests are cancelled (another rule that shared one submits its own again), its
locks released batch by batch (their replicas lose the protection of this rule, so the reaper
may free the space once nothing else protects them), and the rule removed. A cleaner that dies
half way leaves the rule expired with fewer locks; the next one carries on (locks it was
releasing when it died wait for their marks to lapse, `rules.locks.RELEASE_LEASE`).
An expired rule is cleaned whatever its state (a suspended one too), and one another daemon's
work on failed is given back at once (`rules.daemon`), so the cleaner takes it at its next pass.
A cleaning that raised is kept as the rule's error and tried again after a delay that doubles
with each failure in a row (`rules.backoff`, `cleaning_failures`, `cleaning_retry_at`), never
suspended: an expired rule must go eventually.
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.directories import now
from kernel import claims
from kernel.db import Document, database_errors
from kernel.errors import ServiceUnavailable
from kernel.settings import RuleSettings
from rules import backoff, locks, rule_claims
from rules.daemon import RuleDaemon
from rules.transfer_requests import requester
from transfers import requests as rq
from transfers.shared_requests import cancel_as

log = logging.getLogger("cairn.rules")

async def clean(db: AsyncDatabase[Document], rule: Document, settings: RuleSettings) -> int:
    """Cancel the rule's transfers, release its locks, remove it; returns the locks released."""
    while True:
        # In slices: FerretDB 1.24 stalls on an update_many that changes thousands of documents.
        with database_errors():
            # Index: requests_by_requester.
            open_ids = [r["_id"] for r in await db[rq.REQUESTS].find(
                {"requester": requester(rule), "state": {"$in": list(rq.OPEN_STATES)}}, {"_id": 1}
            ).limit(settings.batch).to_list()]
        # a request others joined passes to them (`transfers.shared_requests`)
        if not open_ids or not await cancel_as(db, {"_id": {"$in": open_ids}}, requester(rule)):
            break
    released = 0
    while True:
        with database_errors():
            # Index: locks_by_rule_state.
            batch = await db[locks.LOCKS].find({"rule": rule["_id"]}).limit(settings.batch).to_list()
        if not batch:
            break
        freed = await locks.remove_locks(db, rule, batch)
        if not freed:  # another call is releasing them (or died doing so: its marks lapse)
            raise ServiceUnavailable(f"the locks of rule {rule['_id']} are being released by another call; "
                                     "trying again later")
        released += freed
    await rule_claims.remove(db, rule, rule[claims.OWNER])
    return released


class RuleCleaner(RuleDaemon):
    name = "rule-cleaner"
    sort = "expires_at"

    def query(self) -> dict[str, Any]:
        at = now()
        # Index: rules_by_expiry (the `$or` is checked on the rules it gave).
        return {"expires_at": {"$lt": at}, "locked": False, **backoff.ready("cleaning_retry_at", at)}

    async def work_on(self, rule: Document) -> int:
        """Clean one claimed expired rule (which removes it)."""
        released = await clean(self.db, rule, self.settings)
        log.info("rule %s on %s expired: released %d lock(s)", rule["_id"], rule["did"], released)
        return 1

    async def give_back(self, rule: Document, error: str) -> None:
        """A cleaning that raised is counted (`cleaning_failures`) and the rule not taken again
        before its `cleaning_retry_at` (`rules.backoff`), its error kept."""
        await self.give_back_later(rule, error, "cleaning_failures", "cleaning_retry_at")
