"""Authorization of actions on DIDs (files, directories, datasets, containers): one function per
action, used by every route and daemon entry point that acts on one, on top of the POSIX-like
model of `catalogue.permissions` (read that docstring for classes, traversal and modes).

What each action needs, besides the route's scope (the `Policy` in the route table):

| action                               | needs                                                        |
|--------------------------------------|--------------------------------------------------------------|
| read a file (replicas, lookup, GET signed URL, attach to a dataset, job input) | r on the file |
| write replicas (add, remove, status, PUT/DELETE signed URL) | w on the file (and catalogue.write)   |
| request a transfer (lfns or dataset) | r on each file (copying bytes is reading them)               |
| request a stage from tape            | r on each file                                               |
| request deletion of a replica        | w on the file (it changes the file's replicas)               |
| make a rule on a file                | r on the file (rules.write); the lock then protects the copy |
| make a rule on a dataset/container   | may change the DID (owner, group, admin), or r on each file  |
| see a rule (list, show, locks)       | own rule, or a rule whose file the caller can see            |
| link provenance                      | w on the descendant, r on every ancestor (which must exist)  |
| see provenance                       | r on the file; hidden relatives are not shown (note 1)       |
| read a directory's usage             | r and x on the directory                                     |

Note 1: a hidden ancestor is listed as not catalogued (`exists: false`), a hidden descendant
not at all, and the walk does not go on through either.

Every check also needs traversal (x on each ancestor directory). An object the caller cannot
reach (no traversal) is reported exactly like a missing one: the reason is "no such file" and
the HTTP answer the 404 of a missing file, so no answer tells whether a hidden object exists.
A visible object without the needed bits is refused with "permission denied: ..." (403).
Admins (scope `admin`) may do everything.

Daemons act with the requester's rights as checked at submission: a request or rule is
authorized once, when it is made, and the transfer worker, stager and reaper do not check
again (the requester's token is not at hand later; a chmod after submission does not cancel
queued requests, as on POSIX an open file stays open). The job checker is the exception: a
hidden input passes submission like a missing one and the checker, reading as the job's owner
(`wms.checking.readable_by_owner`), fails the job naming it. Not covered: subscriptions (any
holder of rules.write may subscribe; the rules they make are not checked per matched dataset),
and a DID's contents, which list the LFNs attached to it (attaching needed r on each).

VOs (`catalogue.vos`): once a VO is registered, a caller is confined to its VO. Paths outside
its VO's roots and DIDs outside its VO's scopes answer like missing ones (in
`catalogue.permissions` and `require_did`); objects that are no namespace entries (rules,
requests, jobs, transformations, productions, subscriptions, pilots) carry the `vo` of the
principal that made them (`vo_stamp`), lists keep to the caller's (`vo_query`) and another
VO's object answers the 404 of a missing one (`require_vo`). A VO's admin holds `admin` only
inside its VO; routes for the whole installation need a global admin (`Policy(admin=True)`).

Each function works in bulk: the files in `_id $in` slices of `CHUNK`, their ancestors in one
query per slice, and answers `(allowed, refused)` per item.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.dataset_contents import file_lfns
from catalogue.datasets import did_within_reach, get_did, may_change
from catalogue.directories import fetch_directories
from catalogue.files import authorized_files
from catalogue.lfn import ROOT, ancestors, check_lfn
from catalogue.permissions import EXECUTE, NO_SUCH_FILE, READ, ROOT_ENTRY, WRITE, permits, se_in_vo, traversal_denial
from kernel.db import Document
from kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from kernel.principal import DEFAULT_VO, Principal

CHUNK = 1000  # `_id $in` slices: see kernel.db.READ_SLICE
RULE_FILES_CHECKED = 100_000  # a larger DID takes rules from its owner and group only

Refused = dict[str, str]


@dataclass(frozen=True)
class Action:
    """An action on files and the mode bits it needs on each."""

    name: str
    bits: int


READ_FILE = Action("read", READ)
WRITE_REPLICAS = Action("write replicas", WRITE)
REQUEST_TRANSFER = Action("request a transfer", READ)
REQUEST_STAGE = Action("request a stage", READ)
REQUEST_DELETION = Action("request a deletion", WRITE)
MAKE_RULE = Action("make a rule", READ)
LINK_DESCENDANT = Action("link provenance to", WRITE)
LINK_ANCESTOR = Action("link provenance from", READ)
SEE = Action("see", 0)


def vo_stamp(principal: Principal) -> str:
    """The VO an object made by the caller belongs to."""
    return principal.vo


def vo_query(principal: Principal) -> dict[str, Any]:
    """The filter that keeps a listing to the caller's VO (objects without `vo` are DEFAULT_VO's)."""
    if not principal.confined:
        return {}
    return {"vo": {"$in": [principal.vo, None]}} if principal.vo == DEFAULT_VO else {"vo": principal.vo}


def require_vo(principal: Principal, doc: Document, missing: str) -> None:
    """404 with the message of a missing object (`missing`) when `doc` is another VO's."""
    if not principal.sees_vo(doc.get("vo")):
        raise NotFound(missing)


def name_in_vo(principal: Principal, group: str) -> bool:
    """Is a stored user or group name (VO-qualified, see `catalogue.vos.qualified`) of the caller's VO?"""
    if not principal.confined:
        return True
    return group.startswith(f"{principal.vo}:") or (principal.vo == DEFAULT_VO and ":" not in group)


def require_se(principal: Principal, se: str) -> str:
    """An SE the caller's VO uses; another is answered like a missing SE."""
    if not se_in_vo(principal, se):
        raise NotFound(f"storage element {se!r} does not exist")
    return se


def require_installation_view(principal: Principal, what: str) -> None:
    """Totals over the whole installation (per-SE usage, per-link transfer statistics) count every
    VO's files: a caller confined to one VO among several is refused them (403)."""
    if principal.confined and not principal.sole_vo:
        raise Forbidden(f"{what} counts every VO's data; only a global admin may read it here")


def require_quota_admin(principal: Principal, account: str | None = None, se: str | None = None) -> None:
    """Quotas are set by admins: a global admin for anyone; a VO's admin for the accounts of its
    VO (VO-qualified names, e.g. `cta:ann`) on SEs the VO uses (403 otherwise)."""
    if not principal.is_admin:
        raise Forbidden("quotas are set by administrators (scope 'admin')")
    if account is None or principal.is_global_admin:
        return
    if not name_in_vo(principal, account) or not se_in_vo(principal, se or ""):
        raise Forbidden(f"an admin of VO {principal.vo} sets quotas of its own accounts ({principal.vo}:NAME) "
                        "on the VO's SEs only")


FIELD_ADMINS = "metadata fields are declared by administrators (of the installation, or of a VO for its namespace)"


def require_admin(principal: Principal, why: str) -> None:
    """403 with `why` unless the caller is an admin (of the installation, or of its VO)."""
    if not principal.is_admin:
        raise Forbidden(why)


def require_field_admin(principal: Principal, key: str, declared: Document | None, *, declaring: bool) -> None:
    """Metadata fields are declared by admins: a global admin changes any; a VO's admin only its
    VO's (`catalogue.metadata_fields`): a field of the installation is refused (403), another
    VO's answers as a key not declared (404 on undeclaring; 409 "taken" on declaring, naming no VO)."""
    require_admin(principal, FIELD_ADMINS)
    if principal.is_global_admin or declared is None:
        return
    if declared.get("vo") is None:
        raise Forbidden(f"metadata field {key} is the installation's: only its administrators change it")
    if declared["vo"] != principal.vo:
        if declaring:
            raise Conflict(f"metadata key {key} is taken in this installation; choose another")
        raise NotFound(f"metadata field {key} is not declared")


def require_did(principal: Principal, did: str) -> str:
    """A DID in the caller's VO (its scope is one of the VO's); else the 404 of a missing DID."""
    if not did_within_reach(principal, did):
        raise NotFound(f"DID {did} does not exist")
    return did


async def authorize_files(
    db: AsyncDatabase[Document], principal: Principal, lfns: Sequence[str], action: Action
) -> tuple[dict[str, Document], Refused]:
    """The files (records) the caller may `action`, and a reason for each other LFN
    ("no such file" for missing and hidden ones alike); LFNs must be checked already."""
    allowed: dict[str, Document] = {}
    refused: Refused = {}
    unique = list(dict.fromkeys(lfns))
    for start in range(0, len(unique), CHUNK):
        ok, failed = await authorized_files(db, principal, unique[start:start + CHUNK], action.bits)
        allowed.update(ok)
        refused.update(failed)
    return allowed, refused


async def visible_files(db: AsyncDatabase[Document], principal: Principal, lfns: Iterable[str]) -> set[str]:
    """The LFNs among `lfns` that exist and that the caller can reach (traversal)."""
    allowed, _ = await authorize_files(db, principal, sorted(set(lfns)), SEE)
    return set(allowed)


def refusal_error(lfn: str, reason: str) -> Exception:
    """The HTTP error for one refused file: 404 (missing or hidden, same body) or 403."""
    if reason == NO_SUCH_FILE:
        return NotFound(f"file {lfn} does not exist")
    return Forbidden(reason)


async def require_file(db: AsyncDatabase[Document], principal: Principal, lfn: str, action: Action) -> Document:
    """The record of one file the caller may `action`; 404 when missing or hidden, else 403."""
    allowed, refused = await authorize_files(db, principal, [check_lfn(lfn)], action)
    if lfn in refused:
        raise refusal_error(lfn, refused[lfn])
    return allowed[lfn]


async def authorize_rule_target(db: AsyncDatabase[Document], principal: Principal, did: str) -> None:
    """May the caller make a rule on `did` (its locks keep the owner from deleting replicas):
    r on a file (hidden = missing); on a dataset or container, be its owner, in its group or an
    admin, or else hold r on every file it holds now (at most `RULE_FILES_CHECKED` of them)."""
    if did.startswith("/"):
        await require_file(db, principal, did, MAKE_RULE)
        return
    doc = await get_did(db, require_did(principal, did))
    if may_change(principal, doc):
        return
    lfns = await file_lfns(db, did, limit=RULE_FILES_CHECKED)
    _, refused = await authorize_files(db, principal, lfns, MAKE_RULE)
    if refused:
        raise Forbidden(f"a rule on {did} needs r on each of its files (or to be its owner or in its group "
                        f"{doc.get('group')}); {len(refused)} of {len(lfns)} are not readable to you",
                        details={"not_readable": len(refused)})


async def visible_rules(db: AsyncDatabase[Document], principal: Principal, rules: list[Document]) -> list[Document]:
    """The rules the caller may see: all for admins; else their own, those on DIDs that are
    datasets or containers (shared names), and those on files the caller can reach."""
    rules = [r for r in rules if principal.sees_vo(r.get("vo"))]
    if principal.is_admin:
        return rules
    foreign = {r["did"] for r in rules if r.get("account") != principal.sub and str(r.get("did", "")).startswith("/")}
    seen = await visible_files(db, principal, foreign) if foreign else set()
    return [r for r in rules if r.get("account") == principal.sub or r["did"] not in foreign or r["did"] in seen]


async def require_visible_rule(db: AsyncDatabase[Document], principal: Principal, rule: Document) -> None:
    """404 (as for a missing rule) when the caller may not see `rule` (see `visible_rules`)."""
    if not await visible_rules(db, principal, [rule]):
        raise NotFound(f"rule {rule['_id']} does not exist")


async def authorize_link(
    db: AsyncDatabase[Document], principal: Principal, lfn: str, ancestors_: Sequence[str]
) -> None:
    """Linking provenance: w on the descendant, r on each ancestor; every ancestor must exist
    (a missing and a hidden ancestor are refused alike, so linking reveals nothing)."""
    await require_file(db, principal, lfn, LINK_DESCENDANT)
    names = [check_lfn(a) for a in ancestors_]
    _, refused = await authorize_files(db, principal, names, LINK_ANCESTOR)
    if refused:
        first = next(iter(refused))
        raise refusal_error(first, refused[first]) if len(refused) == 1 else InvalidInput(
            f"{len(refused)} ancestors refused (missing, hidden or not readable); first: {first}",
            details={"failed": {a: ("no such file" if r == NO_SUCH_FILE else r) for a, r in refused.items()}})


async def authorize_directory_usage(db: AsyncDatabase[Document], principal: Principal, path: str) -> None:
    """Reading a directory's usage needs r and x on it (like listing it); a missing or hidden
    directory is answered with the same 404."""
    check_lfn(path)
    dirs = await fetch_directories(db, [*ancestors(path), path])
    entry: Any = ROOT_ENTRY if path == ROOT else dirs.get(path)
    if entry is None or traversal_denial(principal, path, dirs):
        raise NotFound(f"directory {path} does not exist")
    if not permits(principal, entry, READ | EXECUTE):
        raise Forbidden(f"permission denied: rx permission needed on directory {path} to read its usage")

