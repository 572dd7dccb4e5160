"""Who may revoke which tokens, and revoking them (stored, and in force in this process at once).

- By `jti`: anyone. The entry reaches only the caller's reach: every token of that jti for a
  global admin, the tokens of the caller's VO for a VO's admin, the caller's own tokens (issuer,
  user and VO) for anyone else. Tokens are not stored, so nobody learns whether such a token
  exists: the answer is the same for a jti nobody issued and for another VO's token (which the
  entry then does not touch).
- By the token itself: anyone who holds it (its signature verifies, expired or not). Whoever
  holds a token may already act as its user, revoking included: a leaked token can be ended by
  whoever finds it.
- By subject (issuer + user): every token issued before now (by its `iat`, the issuer's clock,
  within the clock skew allowed: `subject_not_before`), and those without `iat`. A global
  admin any subject, in every VO; a VO's admin the subjects of its VO (tokens of that VO only);
  anyone else only themselves ("sign out everywhere": their tokens of their VO).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass

from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase

from kernel.documents import Document
from kernel.errors import Forbidden, InvalidInput, QuotaExceeded, Unauthenticated
from kernel.principal import Principal
from kernel.revocation_view import RevocationView
from kernel.revocations import Revocation, Revoker, now, record, same_user
from kernel.tokens import CLOCK_SKEW_S, TokenVerifier
from kernel.web import DATABASE, SETTINGS, VERIFIER

# Live entries one caller other than a global admin may hold: each costs every server's memory.
MAX_PER_REVOKER = 1000


@dataclass(frozen=True)
class Revoking:
    """What revoking needs: the database, this process's view and verifier, and how long an
    entry of a token whose expiry is unknown is kept (`token_revocation_keep_s`)."""

    db: AsyncDatabase[Document]
    view: RevocationView
    verifier: TokenVerifier
    keep_s: int

    @classmethod
    def of(cls, request: web.Request) -> Revoking:
        """What revoking needs, in the server a request came to."""
        verifier = request.config_dict[VERIFIER]
        if verifier.revocations is None:
            raise RuntimeError("the server gives its token verifier the view of the revocations")
        return cls(request.config_dict[DATABASE], verifier.revocations, verifier,
                   request.config_dict[SETTINGS].token_revocation_keep_s)


def revoker(principal: Principal) -> Revoker:
    """The caller as an entry records it: as its token names it (not VO-qualified)."""
    return {"iss": principal.issuer, "sub": str(principal.claims.get("sub", principal.sub)), "vo": principal.vo}


def _kept(keep_s: int) -> dt.datetime:
    return now() + dt.timedelta(seconds=keep_s)


def jti_revocation(principal: Principal, jti: str, issuer: str | None, keep_s: int) -> Revocation:
    """The entry revoking token `jti` (of `issuer`, or any) within the caller's reach."""
    if principal.is_global_admin:
        return Revocation("jti", _kept(keep_s), jti=jti, iss=issuer)
    if principal.is_admin:
        return Revocation("jti", _kept(keep_s), jti=jti, iss=issuer, vo=principal.vo)
    me = revoker(principal)
    return Revocation("jti", _kept(keep_s), jti=jti, iss=me["iss"], sub=me["sub"], vo=me["vo"])


def subject_revocation(principal: Principal, user: str, issuer: str | None, keep_s: int) -> Revocation:
    """The entry revoking every token of `user` (of `issuer`, else of the caller's issuer)
    issued before now, within the caller's reach; 403 for another user's tokens unless admin."""
    me = revoker(principal)
    iss = issuer or me["iss"]
    if not principal.is_admin and (iss != me["iss"] or not same_user(me["vo"], user, me["sub"])):
        raise Forbidden("you may revoke only your own tokens (a VO's admin: its users'; a global admin: anyone's)")
    vo = None if principal.is_global_admin else me["vo"]
    return Revocation("subject", _kept(keep_s), iss=iss, sub=user, vo=vo, not_before=subject_not_before())


def subject_not_before() -> int:
    """The `iat` from which a user's tokens pass a revocation made now: `iat` is the issuer's
    clock, which may run ahead of this server's by as much as tokens are let be early
    (`kernel.tokens.CLOCK_SKEW_S`), so a token stamped up to that much later may have been issued
    before the revocation, and is refused too (and so is one of the second it is made in)."""
    return math.ceil(time.time()) + CLOCK_SKEW_S


async def token_revocation(verifier: TokenVerifier, token: str) -> Revocation:
    """The entry revoking a token given whole (400 if it is no token this server trusts)."""
    try:
        named = await verifier.signed(token)
    except Unauthenticated as exc:  # the caller is fine; the token given is not
        raise InvalidInput(f"the token to revoke does not verify: {exc.message}") from exc
    jti = named.claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidInput("the token has no jti: revoke its user's tokens instead")
    expires = dt.datetime.fromtimestamp(int(named.claims["exp"]) + CLOCK_SKEW_S, dt.UTC)
    return Revocation("jti", expires, jti=jti, iss=named.issuer)


async def revoke(revoking: Revoking, principal: Principal, revocation: Revocation) -> Revocation:
    """Store an entry made by the caller (unless its tokens have all expired) and put it in force
    here at once; 422 when a caller other than a global admin would hold more than MAX_PER_REVOKER
    live entries (exactly, however many of their calls race: `kernel.revocations.record`)."""
    if revocation.expires <= now():
        return revocation  # its token is refused for having expired: nothing to store
    cap = None if principal.is_global_admin else MAX_PER_REVOKER
    if not await record(revoking.db, revocation, revoker(principal), cap=cap):
        raise QuotaExceeded(f"you hold {MAX_PER_REVOKER} revocations already; they end as the tokens expire")
    revoking.view.apply(revocation)
    return revocation
