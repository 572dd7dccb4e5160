"""A rule made once however often its call is sent: the caller names its call (`request_id`, a key
of its own choosing), and the rule's id is derived from that name and the caller, so a second
sending (the first one's answer lost to a server restart or a broken connection, the client
sending it again) finds the rule the first one made instead of making a second rule.

The insert of the rule is the one write that decides (a unique `_id`): of two sendings racing, one
inserts and the other finds its rule. A sending that finds the rule finishes what its first
sending may not have (naming the file a file rule is on, judging the DID again) and answers
it; a key sent again with another body is refused (409), as is one whose rule has been deleted
or withdrawn since (its making refused it, or its owner deleted it): a new key makes a new rule.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.authorization import vo_stamp
from kernel.db import Document, database_errors
from kernel.documents import aware
from kernel.errors import Conflict
from kernel.principal import Principal
from kernel.request_ids import call_key, digest
from rules.triggers import RULES

REQUEST = "request"  # on a rule: the digest of the call that made it (`request_digest`)


def rule_id_for(principal: Principal, request_id: str) -> str:
    """The id of the rule the caller's call named request_id makes (a rule id's shape: 32 hex)."""
    return call_key("rule-request", vo_stamp(principal), principal.sub, request_id)


def request_digest(body: dict[str, Any]) -> str:
    """What the call asked for, so that a key sent again with another body is told apart."""
    return digest(body)


async def made_before(db: AsyncDatabase[Document], rule_id: str, digest: str) -> Document | None:
    """The rule an earlier sending of this call made (None: none did), refusing a key reused for
    another rule and a rule deleted or withdrawn since it was made."""
    with database_errors():
        doc = await db[RULES].find_one({"_id": rule_id})
    if doc is None:
        return None
    if doc.get(REQUEST) != digest:
        raise Conflict(f"request id already used to make rule {rule_id} with other settings; "
                       "use a new request id for another rule")
    expires = aware(doc["expires_at"]) if isinstance(doc.get("expires_at"), dt.datetime) else None
    if expires is not None and expires <= dt.datetime.now(dt.UTC) and not doc.get("locked"):
        raise Conflict(f"rule {rule_id}, made by this request, has been deleted or withdrawn since; "
                       "use a new request id to make another")
    return doc
