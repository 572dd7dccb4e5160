"""The VO registry: the collaborations one installation serves, and what each may reach.

A VO has namespace roots (`/cta`), DID scopes (`cta`, `user.cta`), the SEs it may use (each
with the VO's path prefix on it and a quota in bytes), sites, admins and members. While the
registry is empty the installation is single-VO and callers are not confined (as before VOs
existed). Once a VO is registered, `confine` marks every caller: a token must name a
registered VO (or be an admin token of the global VO `*`), and the caller then reaches only
its VO's paths, scopes and objects (`catalogue.authorization` applies it). Identity is
(vo, sub): names are stored VO-qualified (`cta:bob`, group `cta:phys`), except in the VO
`local`, whose names stay bare. Global admins are admins of `*` or of the VO whose roots
include `/` (the installation's own VO, `local` after `cairn up`); an admin of any other VO
(token scope `admin`, or listed in the VO's `admins`) is admin inside its VO only.

A path belongs to the VO whose root is the longest one above it: the VO `local` made by
`cairn up` has the root `/` and owns every path no other VO claims. Objects stored before VOs
(no `vo` field) count as the VO `local` (`kernel.principal.DEFAULT_VO`).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.lfn import ROOT, check_lfn, is_within
from catalogue.storage_elements import NAME_PATTERN, VOS, fetch_storage_elements, forget_vo_uses
from kernel.db import Document, database_errors
from kernel.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from kernel.principal import ADMIN_SCOPE, DEFAULT_VO, GLOBAL_VO, Principal

CACHE_S = 2.0  # how long a server process trusts its copy of the (small, rarely changed) registry
PILOT_SCOPES = frozenset({"jobs.pilot"})
# The names of deleted VOs: never registered again, since the jobs, rules, requests, subscriptions,
# transformations and productions of the deleted VO keep its name as their `vo` (no package
# deletes its history), and a new VO of that name would be handed them all.
RETIRED_VOS = "retired_vos"
SCOPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
# A member's or admin's name as the VO's tokens carry it (`sub`), bare: no ':' (it separates the VO
# from a name; `confine` refuses such tokens) and no control characters (the names are shown to
# the installation's admins). Checked where names come in, not on reading the registry: a record
# stored before this check keeps working.
MEMBER_PATTERN = re.compile(r"[^:\x00-\x1f\x7f-\x9f]{1,256}")


class VoSe(BaseModel):
    """How a VO uses one SE: its path there (below every protocol's prefix: the VO's files are
    placed under it, `catalogue.storage_elements`), its quota (None: no limit; rule locks count,
    `rules.quotas.within_vo_quota`) and its own read/write/delete switches (the VO's admins set
    them; they stop the VO's operations only, on top of the SE's own switches)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field("/", max_length=1000)
    quota_bytes: int | None = Field(None, ge=0)
    read_enabled: bool = True
    write_enabled: bool = True
    delete_enabled: bool = True

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        return check_lfn(path)


class VoSeSwitches(BaseModel):
    """A VO's switches on one of its SEs (what a VO's admin may change there)."""

    model_config = ConfigDict(extra="forbid")

    read_enabled: bool | None = None
    write_enabled: bool | None = None
    delete_enabled: bool | None = None


class Vo(BaseModel):
    """One VO as stored and as the API shows it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=NAME_PATTERN)
    roots: list[str] = Field(..., min_length=1, max_length=100)
    scopes: list[str] = Field(default_factory=list, max_length=100)
    ses: dict[str, VoSe] = Field(default_factory=dict)
    sites: list[str] = Field(default_factory=list, max_length=1000)
    admins: list[str] = Field(default_factory=list, max_length=1000)
    members: list[str] = Field(default_factory=list, max_length=100_000)
    fair_share: float = Field(1.0, gt=0, le=1_000_000,
                              description="the VO's share of the pilots against other VOs (wms.matching)")
    transfer_share: float = Field(1.0, gt=0, le=1_000_000, allow_inf_nan=False, strict=True,
                                  description="the VO's share of the transfer queue against other VOs "
                                              "(transfers.shares)")

    @field_validator("roots")
    @classmethod
    def _roots(cls, roots: list[str]) -> list[str]:
        return sorted({check_lfn(r) for r in roots})

    @field_validator("ses")
    @classmethod
    def _ses(cls, ses: dict[str, VoSe]) -> dict[str, VoSe]:
        # The SE names are keys of the VO's document: a '.' there is a path to MongoDB (a switch
        # on `A.B` would write `ses.A.B` and leave a record no server can read) and FerretDB
        # refuses it outright.
        dotted = sorted(name for name in ses if "." in name or name.startswith("$"))
        if dotted:
            raise ValueError(f"SE(s) {dotted} cannot be given to a VO: a VO's SE name may not hold '.'")
        return ses

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, scopes: list[str]) -> list[str]:
        bad = [s for s in scopes if s != "*" and not re.fullmatch(SCOPE_PATTERN, s)]
        if bad:
            raise ValueError(f"invalid DID scope(s) {bad}")
        return sorted(set(scopes))


class VoDocument(TypedDict, total=False):
    _id: str
    roots: list[str]
    scopes: list[str]
    ses: dict[str, dict[str, Any]]
    sites: list[str]
    admins: list[str]
    members: list[str]
    fair_share: float
    transfer_share: float
    created: dt.datetime


def _forget(db: AsyncDatabase[Document]) -> None:
    _cache.pop(db.name, None)
    forget_vo_uses(db)


def _vo(doc: Document) -> Vo:
    return Vo(name=doc["_id"], **{k: v for k, v in doc.items() if k in Vo.model_fields and k != "name"})


_cache: dict[str, tuple[float, dict[str, Vo]]] = {}


async def registry(db: AsyncDatabase[Document], *, fresh: bool = False) -> dict[str, Vo]:
    """Every VO by name (cached for CACHE_S per database; writes here drop the cache)."""
    cached = _cache.get(db.name)
    if cached is not None and not fresh and time.monotonic() - cached[0] < CACHE_S:
        return cached[1]
    with database_errors():
        docs = await db[VOS].find().sort("_id", 1).to_list()
    vos = {d["_id"]: _vo(d) for d in docs}
    _cache[db.name] = (time.monotonic(), vos)
    return vos


def _check_disjoint(vo: Vo, others: dict[str, Vo]) -> None:
    for other in others.values():
        if other.name == vo.name:
            continue
        same_roots = set(vo.roots) & set(other.roots)
        if same_roots:
            raise Conflict(f"root(s) {sorted(same_roots)} belong to VO {other.name!r} already")
        same_scopes = set(vo.scopes) & set(other.scopes) - {"*"}
        if same_scopes:
            raise Conflict(f"DID scope(s) {sorted(same_scopes)} belong to VO {other.name!r} already")


async def put_vo(db: AsyncDatabase[Document], vo: Vo) -> Vo:
    """Create or replace a VO; roots and DID scopes may not be another VO's."""
    if vo.name == GLOBAL_VO:
        raise InvalidInput(f"{GLOBAL_VO!r} is the global VO of installation admins, not a VO to register")
    check_member_names([*vo.admins, *vo.members])
    _forget(db)
    current = await registry(db)
    if vo.name not in current:
        with database_errors():
            retired = await db[RETIRED_VOS].find_one({"_id": vo.name})
        if retired is not None:
            raise Conflict(f"VO name {vo.name!r} was a VO's, deleted {retired['deleted']:%Y-%m-%d}: what that VO "
                           "left (jobs, rules, requests, ...) still carries it, so it is not given again; "
                           "choose another name")
    _check_disjoint(vo, current)
    unknown = sorted(set(vo.ses) - set(await fetch_storage_elements(db, vo.ses)))
    if unknown:
        raise InvalidInput(f"unknown SE(s) {unknown}: add them first (cairn se add)")
    at = dt.datetime.now(dt.UTC)
    fields = vo.model_dump(mode="json", exclude={"name"})
    with database_errors():
        await db[VOS].update_one({"_id": vo.name}, {"$set": {**fields, "modified": at},
                                                     "$setOnInsert": {"created": at}}, upsert=True)
    _forget(db)
    return vo


def check_member_names(names: list[str]) -> None:
    """400 naming the member or admin names that are not bare names of a token's `sub`."""
    bad = [n for n in names if not MEMBER_PATTERN.fullmatch(n)]
    if bad:
        raise InvalidInput(f"invalid member name(s) {bad[:10]}: a bare name (no ':', no control characters)",
                           details={"names": bad[:10]})


async def ensure_default_vo(db: AsyncDatabase[Document], name: str = DEFAULT_VO) -> None:
    """Register the installation's own VO (root `/`, every DID scope no other VO claims) when
    there is no VO yet (`cairn up`): it then serves one VO and works as before VOs existed."""
    if not await registry(db, fresh=True):
        await put_vo(db, Vo(name=name, roots=["/"], scopes=["*"]))


async def get_vo(db: AsyncDatabase[Document], name: str) -> Vo:
    vo = (await registry(db)).get(name)
    if vo is None:
        raise NotFound(f"VO {name!r} does not exist")
    return vo


async def change_members(db: AsyncDatabase[Document], name: str, *, add: list[str], remove: list[str],
                         admins: bool = False) -> Vo:
    """Add and remove members (or, with `admins`, admins) of a VO."""
    await get_vo(db, name)
    check_member_names(add)
    field = "admins" if admins else "members"
    with database_errors():
        if add:
            await db[VOS].update_one({"_id": name}, {"$addToSet": {field: {"$each": add}}})
        if remove:
            # `$pullAll`, not `$pull` by `$in`: FerretDB 1.24 matches the latter and pulls nothing.
            await db[VOS].update_one({"_id": name}, {"$pullAll": {field: remove}})
    _forget(db)
    return await get_vo(db, name)


async def fair_shares(db: AsyncDatabase[Document]) -> dict[str, float]:
    """Each VO's share of the pilots (1 unless set): the first level of the matcher's fair share."""
    return {name: vo.fair_share for name, vo in (await registry(db)).items()}


async def set_fair_share(db: AsyncDatabase[Document], name: str, share: float) -> Vo:
    """Set a VO's share of the pilots (global admins: shares between VOs are the installation's)."""
    return await _set_share(db, name, "fair_share", share)


async def set_transfer_share(db: AsyncDatabase[Document], name: str, share: float) -> Vo:
    """Set a VO's share of the transfer queue (global admins; `transfers.shares` weighs by it)."""
    return await _set_share(db, name, "transfer_share", share)


async def _set_share(db: AsyncDatabase[Document], name: str, field: str, share: float) -> Vo:
    with database_errors():
        found = await db[VOS].update_one({"_id": name}, {"$set": {field: float(share)}})
    _forget(db)
    if not found.matched_count:
        raise NotFound(f"VO {name!r} does not exist")
    return await get_vo(db, name)


async def switch_se(db: AsyncDatabase[Document], name: str, se: str, switches: VoSeSwitches) -> Vo:
    """Set a VO's own read/write/delete switches on one of its SEs (404 for an SE it does not use)."""
    vo = await get_vo(db, name)
    if se not in vo.ses:
        raise NotFound(f"storage element {se!r} does not exist")
    changes = {f"ses.{se}.{k}": v for k, v in switches.model_dump(exclude_none=True).items()}
    if not changes:
        raise InvalidInput("nothing to change: give read_enabled, write_enabled or delete_enabled")
    with database_errors():
        await db[VOS].update_one({"_id": name}, {"$set": {**changes, "modified": dt.datetime.now(dt.UTC)}})
    _forget(db)
    return await get_vo(db, name)


async def delete_vo(db: AsyncDatabase[Document], name: str, remains: list[str]) -> None:
    """Remove a VO whose data is gone (`remains`: what the caller found still there; 409 naming it).
    The VO `local` cannot go while it is the installation's default (it owns what no VO claims)."""
    await get_vo(db, name)
    if name == DEFAULT_VO:
        raise Conflict(f"VO {DEFAULT_VO!r} is the default VO (objects without a VO are its): it cannot be deleted")
    if remains:
        raise Conflict(f"VO {name!r} still has {'; '.join(remains)}: remove them first",
                       details={"remains": remains})
    with database_errors():
        await db[RETIRED_VOS].update_one({"_id": name}, {"$set": {"deleted": dt.datetime.now(dt.UTC)}}, upsert=True)
        await db[VOS].delete_one({"_id": name})
    _forget(db)


def vo_of_path(vos: dict[str, Vo], path: str) -> str | None:
    """The VO a path belongs to: the one with the longest root above it (None: no VO's)."""
    return _longest_root(vos, path)[1]


def root_of(vos: Mapping[str, Vo], path: str) -> str | None:
    """The namespace root of the VO `path` belongs to: the longest root above it (None: no VO's)."""
    return _longest_root(vos, path)[0]


def _longest_root(vos: Mapping[str, Vo], path: str) -> tuple[str | None, str | None]:
    best: tuple[str | None, str | None] = (None, None)
    for vo in vos.values():
        for root in vo.roots:
            if is_within(path, root) and len(root) > len(best[0] or ""):
                best = (root, vo.name)
    return best


def qualified(vo: str, name: str) -> str:
    """A user or group name as stored in a multi-VO installation: `vo:name`, bare in DEFAULT_VO
    (whose names are those stored before VOs existed, so old owners keep their entries)."""
    return name if vo == DEFAULT_VO or name.startswith(f"{vo}:") else f"{vo}:{name}"


async def confine(db: AsyncDatabase[Document], principal: Principal) -> Principal:
    """The caller with its VO's reach (see the module docstring); 401 for a VO not registered.
    Its `sub` and groups become VO-qualified (`qualified`); `claims` keep the issuer's names."""
    vos = await registry(db)
    if not vos or principal.confined or principal.scopes == PILOT_SCOPES:
        return principal  # single-VO; already confined; a pilot (installation's, runs every VO's jobs)
    if principal.vo == GLOBAL_VO:
        if not principal.is_admin:
            raise Unauthenticated(f"a token of the global VO {GLOBAL_VO!r} must hold the admin scope")
        return principal
    vo = vos.get(principal.vo)
    if vo is None:
        raise Unauthenticated(f"VO {principal.vo!r} is not registered on this installation")
    names = [principal.sub, *principal.groups]
    if any(":" in n and not n.startswith(f"{vo.name}:") for n in names):
        raise Unauthenticated("user and group names may not hold ':' (it separates a VO from a name)")
    bare_sub = principal.sub.removeprefix(f"{vo.name}:")
    admin = principal.is_admin or bare_sub in vo.admins
    scopes = principal.scopes | ({ADMIN_SCOPE} if admin else set())
    unconfined = admin and ROOT in vo.roots  # the installation's own VO (rooted at /): its admins are global
    foreign = tuple(r for other in vos.values() if other.name != vo.name for r in other.roots
                    if any(is_within(r, own) for own in vo.roots))
    return Principal(sub=qualified(vo.name, principal.sub), vo=vo.name,
                     groups=tuple(qualified(vo.name, g) for g in principal.groups), scopes=frozenset(scopes),
                     issuer=principal.issuer, claims=principal.claims, confined=not unconfined,
                     roots=tuple(vo.roots), foreign_roots=() if unconfined else foreign,
                     did_scopes=tuple(vo.scopes),
                     foreign_scopes=tuple(s for other in vos.values() if other.name != vo.name for s in other.scopes),
                     ses=tuple(sorted(vo.ses)), sole_vo=len(vos) == 1)


async def confine_owner(db: AsyncDatabase[Document], principal: Principal) -> Principal:
    """As `confine`, for daemons acting as an object's owner (already qualified names): an owner
    of a VO that is gone reaches nothing rather than failing the daemon."""
    try:
        return await confine(db, principal)
    except Unauthenticated:
        return Principal(sub=principal.sub, vo=principal.vo, groups=principal.groups, scopes=frozenset(),
                         confined=True)
