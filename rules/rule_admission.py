"""Whether a rule may be made or grown: the SEs its VO's rules may use, what an expression
means now, room within the account's quotas, and who may act for an account."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.authorization import name_in_vo
from catalogue.storage_elements import SES
from catalogue.vos import registry
from kernel.db import Document, database_errors
from kernel.errors import Forbidden, InvalidInput, QuotaExceeded
from kernel.principal import Principal
from rules import quotas
from rules.rule_contents import distinct_bytes
from rules.se_expression import resolve


async def all_ses(db: AsyncDatabase[Document]) -> list[Document]:
    """Every SE as the expression parser wants it (name, site, kind, attributes, switches, space)."""
    with database_errors():
        docs = await db[SES].find({}).to_list()
    return [{**d, "name": d["_id"]} for d in docs]


async def rule_ses(db: AsyncDatabase[Document], vo: str | None) -> list[Document]:
    """The SEs the rules of VO `vo` (a rule's `vo` stamp) may place copies on, as the expression
    parser wants them: every SE, or the VO's own where the VO lists SEs; one the VO switched off
    for writing is not writable for them (`catalogue.vos`, on top of the SE's own switch). The
    rules' creation, evaluation and repair all place within these."""
    ses = await all_ses(db)
    registered = (await registry(db)).get(vo) if vo else None
    if registered is None or not registered.ses:
        return ses
    return [{**se, "write_enabled": se.get("write_enabled", True) and registered.ses[se["name"]].write_enabled}
            for se in ses if se["name"] in registered.ses]


async def resolve_expression(db: AsyncDatabase[Document], expression: str) -> list[Document]:
    """The SEs an expression means now, sorted by name (ExpressionError if it does not parse)."""
    ses = await all_ses(db)
    names = resolve(expression, ses)
    return sorted((se for se in ses if se["name"] in names), key=lambda se: se["name"])


async def check_room(db: AsyncDatabase[Document], account: str, expression: str, copies: int, did: str,
                     did_type: str, size: int, vo: str | None = None) -> list[str]:
    """`check_placeable` for a DID; a container over quota by its datasets' sums is checked again
    by its distinct files (read only then: the sums are cheap, and usually fit)."""
    try:
        return await check_placeable(db, account, expression, copies, size, vo)
    except QuotaExceeded:
        if did_type != "container":
            raise
        exact = await distinct_bytes(db, did)
        if exact == size:
            raise
    return await check_placeable(db, account, expression, copies, exact, vo)


async def check_placeable(db: AsyncDatabase[Document], account: str, expression: str, copies: int,
                          size: int, vo: str | None = None) -> list[str]:
    """The SEs a rule may use; InvalidInput or QuotaExceeded (nothing written) when it cannot be met.
    A rule of a registered VO uses only the VO's SEs (if it lists any) within the VO's quotas."""
    names = sorted(resolve(expression, await rule_ses(db, vo)))
    if not names:
        raise InvalidInput(f"expression {expression!r} matches no storage element", details={"expression": expression})
    if copies > len(names):
        raise InvalidInput(f"{copies} copies asked for but {expression!r} matches only {len(names)} SE(s): "
                           f"{', '.join(names)}", details={"ses": names})
    room = await quotas.room_in_vo(db, account, vo, names)
    fits = [se for se in names if room[se] is None or (room[se] or 0) >= size]
    if len(fits) < copies:
        short = {se: room[se] for se in names if se not in fits}
        left = ", ".join(f"{se}={b}" for se, b in short.items())
        raise QuotaExceeded(f"account {account} needs room for {size} bytes on {copies} SE(s) of {expression!r} "
                            f"but has it on {len(fits)}; bytes left: {left}",
                            details={"needed_bytes": size, "room": short})
    return names


def check_account(principal: Principal, account: str | None, what: str) -> None:
    """Only administrators act for another account, and a VO's administrators only for accounts
    of their VO (whose quotas they manage: `catalogue.authorization.name_in_vo`)."""
    if account is None or account == principal.sub:
        return
    if not principal.is_admin:
        raise Forbidden(f"only administrators {what} for another account")
    if not name_in_vo(principal, account):
        raise Forbidden(f"account {account} is not of VO {principal.vo}")
