"""Which issuer's tokens speak for each user name: a name is bound to the first issuer whose
token used it, and a token of another issuer naming it is refused (401).

A user name (a token's `sub`, VO-qualified by `catalogue.vos.confine`) is what owns entries,
rules, requests and jobs, and what a VO lists as its admins. Two issuers trusted for one VO
(the built-in one and an IAM, or an old and a new IdP) each mint their own subjects; without a
binding, a user of one whose subject equals a name of the other became that user, an admin
listed by name included. Rucio maps each identity (issuer and subject) to an account; here the
mapping is the name itself, kept with the issuer that first used it. An admin moves a name to
another issuer (`cairn identity bind`) or all names of an issuer at once (an IdP replaced).

The built-in issuer's tokens are never refused (its key's holders, the operators, can mint any
token anyway, and renaming it must not lock them out); a name they use first is bound to it all
the same, so no other issuer takes it. Each server process keeps the bindings it has read for
`CACHE_S`: a binding changed elsewhere takes effect here within that time, and a token refused
against a cached binding is looked up once more before the refusal. Pilots' own tokens (scope
`jobs.pilot` alone, one name per pilot, from the installation's pilot factory) are not bound.
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from catalogue.vos import PILOT_SCOPES, confine
from kernel.claims import now
from kernel.db import Document, database_errors
from kernel.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from kernel.principal import DEFAULT_VO, Principal
from kernel.web import Confine

IDENTITIES = "identities"
CACHE_S = 10.0
CACHE_LIMIT = 100_000  # names kept per process; the cache starts again when full
ISSUER_MAX = 1000
NAME_MAX = 400  # a VO's name, ':' and a member's name (`catalogue.vos.MEMBER_PATTERN`)


class Identity(TypedDict):
    _id: str  # the user name as stored (VO-qualified in a multi-VO installation)
    issuer: str
    vo: str
    bound: Any  # datetime


# (database, name) -> (issuer, when read): one process may serve several databases (tests do).
_cache: dict[tuple[str, str], tuple[str, float]] = {}


def recogniser(builtin: str | None) -> Confine:
    """`recognise`, with the installation's built-in issuer named (`kernel.settings.token_issuer`)."""

    async def confine_known(db: AsyncDatabase[Document], principal: Principal) -> Principal:
        return await recognise(db, principal, builtin)

    return confine_known


async def recognise(db: AsyncDatabase[Document], principal: Principal, builtin: str | None = None) -> Principal:
    """The caller confined to its VO (`catalogue.vos.confine`), once its name is known to belong
    to its token's issuer (bound to it now if the name is new). Tokens of `builtin` are never
    refused: whoever holds its key mints any token anyway."""
    confined = await confine(db, principal)
    if principal.scopes == PILOT_SCOPES or not confined.issuer:
        return confined
    key = (db.name, confined.sub)
    issuer = _cached(key)
    trusted = confined.issuer == builtin
    if issuer is None or (issuer != confined.issuer and not trusted):
        issuer = await _bind_first(db, confined)
        _remember(key, issuer)
    if issuer != confined.issuer and not trusted:
        raise Unauthenticated(f"user name {confined.sub!r} belongs to another issuer's tokens on this "
                              "installation; an administrator can move it (cairn identity bind)")
    return confined


def _cached(key: tuple[str, str]) -> str | None:
    found = _cache.get(key)
    return found[0] if found and time.monotonic() - found[1] < CACHE_S else None


def _remember(key: tuple[str, str], issuer: str) -> None:
    if len(_cache) >= CACHE_LIMIT:
        _cache.clear()
    _cache[key] = (issuer, time.monotonic())


async def _bind_first(db: AsyncDatabase[Document], principal: Principal) -> str:
    """The issuer a name is bound to, binding it to principal's issuer if it was not (atomic: of
    two first tokens at once, one issuer wins and the other is refused)."""
    with database_errors():
        doc = await db[IDENTITIES].find_one_and_update(
            {"_id": principal.sub},
            {"$setOnInsert": {"issuer": principal.issuer, "vo": principal.vo, "bound": now()}},
            upsert=True, return_document=ReturnDocument.AFTER)
    return str(doc["issuer"]) if doc else ""


async def list_identities(db: AsyncDatabase[Document], principal: Principal, *, vo: str | None = None,
                          issuer: str | None = None, after: str = "", limit: int = 1000) -> list[Identity]:
    """Bound names in name order after `after`: a VO's admin sees its VO's, a global admin any."""
    query: dict[str, Any] = {"_id": {"$gt": after}}
    if principal.confined:
        query["vo"] = principal.vo
    elif vo is not None:
        query["vo"] = vo
    if issuer is not None:
        query["issuer"] = issuer
    with database_errors():
        found = await db[IDENTITIES].find(query).sort("_id", 1).limit(limit).to_list(None)
    return [Identity(_id=d["_id"], issuer=d["issuer"], vo=d["vo"], bound=d["bound"]) for d in found]


async def bind(db: AsyncDatabase[Document], principal: Principal, name: str, issuer: str) -> Identity:
    """Bind user name `name` to `issuer` (its tokens of other issuers are refused from then on).
    A VO's admin binds its VO's names (`vo:name`); another VO's name answers as one never bound."""
    _check_name(name)
    _check_issuer(issuer)
    vo = _vo_of(name)
    refused = Forbidden(f"an admin of VO {principal.vo} binds only its VO's names ({principal.vo}:...)")
    if principal.confined and vo != principal.vo:
        raise refused
    # A VO's admin changes only a binding of its VO: a bare name bound by a global admin (VO `*`)
    # is no name of VO `local`'s, though bare; upserting it then hits the `_id` and fails.
    query: dict[str, Any] = {"_id": name, **({"vo": principal.vo} if principal.confined else {})}
    with database_errors():
        try:
            done = await db[IDENTITIES].find_one_and_update(
                query, {"$set": {"issuer": issuer, "vo": vo, "bound": now()}},
                upsert=True, return_document=ReturnDocument.AFTER) or {}
        except DuplicateKeyError:
            raise refused from None
    _cache.pop((db.name, name), None)
    return Identity(_id=done["_id"], issuer=done["issuer"], vo=done["vo"], bound=done["bound"])


async def forget(db: AsyncDatabase[Document], principal: Principal, name: str) -> None:
    """Unbind a name: the next token naming it binds it to its issuer. 404 for a name not bound
    (or of another VO)."""
    _check_name(name)
    query: dict[str, Any] = {"_id": name, **({"vo": principal.vo} if principal.confined else {})}
    with database_errors():
        result = await db[IDENTITIES].delete_one(query)
    _cache.pop((db.name, name), None)
    if not result.deleted_count:
        raise NotFound(f"user name {name!r} is not bound to any issuer")


async def move_issuer(db: AsyncDatabase[Document], principal: Principal, old: str, new: str) -> int:
    """Bind every name of `old` (of the caller's VO, for a VO's admin) to `new`; how many moved."""
    _check_issuer(old)
    _check_issuer(new)
    query: dict[str, Any] = {"issuer": old, **({"vo": principal.vo} if principal.confined else {})}
    with database_errors():
        result = await db[IDENTITIES].update_many(query, {"$set": {"issuer": new, "bound": now()}})
    _cache.clear()
    return result.modified_count


def _vo_of(name: str) -> str:
    """The VO of a stored name: its qualifier; a bare name is of the VO `local` (or a global admin)."""
    vo, sep, _ = name.partition(":")
    return vo if sep else DEFAULT_VO


def _check_name(name: str) -> None:
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise InvalidInput(f"a user name is a printable string of 1 to {NAME_MAX} characters")


def _check_issuer(issuer: str) -> None:
    if not issuer or len(issuer) > ISSUER_MAX or not issuer.isprintable():
        raise InvalidInput(f"an issuer is a printable string of 1 to {ISSUER_MAX} characters")
