"""JWT bearer tokens: the built-in issuer of the embedded default, and verification of tokens
from it and from trusted external issuers (JWKS URL or static public keys).

Only asymmetric algorithms are accepted (RS256, ES256, EdDSA). `none` and every HMAC algorithm
are refused before any key is looked at, which also closes the HMAC-with-public-key confusion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK

from kernel.errors import InvalidInput, ServiceUnavailable, Unauthenticated
from kernel.principal import GLOBAL_VO, PILOT_SCOPE, SCOPES, Principal
from kernel.private_files import read_private
from kernel.settings import Settings, TrustedIssuer

if TYPE_CHECKING:
    from kernel.revocation_view import RevocationView

ALLOWED_ALGORITHMS = ("RS256", "ES256", "EdDSA")
# The public-key class each algorithm needs: a token whose alg does not fit the key is refused
# before PyJWT sees the pair (it raises TypeError on such a mix).
_KEY_TYPES: dict[str, tuple[type, ...]] = {
    "RS256": (RSAPublicKey,),
    "ES256": (EllipticCurvePublicKey,),
    "EdDSA": (Ed25519PublicKey, Ed448PublicKey),
}
CLOCK_SKEW_S = 30
JWKS_CACHE_S = 300
# An issuer's keys are fetched again before JWKS_CACHE_S for a key id they lack (the issuer
# rotated its keys), at most once per JWKS_REFETCH_S; after a failed fetch, none is tried for
# JWKS_RETRY_S. Concurrent verifications wait for one fetch: whatever tokens arrive, an issuer's
# JWKS URL sees at most one request per JWKS_REFETCH_S.
JWKS_REFETCH_S = 10.0
JWKS_RETRY_S = 10.0

JwksFetcher = Callable[[str], Awaitable[dict[str, Any]]]


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The built-in issuer's Ed25519 key, created (mode 0600) on first use; an existing one only
    if this account (or root) owns it and no other may read it (`read_private`)."""
    if path.exists():
        key = serialization.load_pem_private_key(read_private(path), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidInput(f"{path} does not hold an Ed25519 private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def key_id(public_pem: bytes) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, public_pem.decode()).hex[:16]


@dataclass
class BuiltinIssuer:
    """Signs tokens for the embedded default (`cairn token issue`, `cairn up`)."""

    issuer: str
    audience: str
    private_key: Ed25519PrivateKey
    default_lifetime_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BuiltinIssuer:
        key = load_or_create_signing_key(settings.resolved_signing_key_file)
        return cls(settings.token_issuer, settings.token_audience, key, settings.token_lifetime_s)

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def kid(self) -> str:
        return key_id(self.public_pem)

    def jwks(self) -> dict[str, Any]:
        """The public key as a JSON Web Key Set, for other services to verify our tokens."""
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "EdDSA"})
        return {"keys": [jwk]}

    def issue(
        self,
        *,
        sub: str,
        vo: str,
        groups: Iterable[str] = (),
        scopes: Iterable[str] = (),
        lifetime_s: int | None = None,
        not_before: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A signed token; `extra` adds claims of its own (e.g. the site a pilot token is bound to)."""
        scopes = list(scopes)
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise InvalidInput(f"unknown scope(s) {unknown}; known scopes: {', '.join(SCOPES)}")
        if not sub or not vo:
            raise InvalidInput("a token needs a user (sub) and a VO")
        if vo == GLOBAL_VO and "admin" not in scopes:
            raise InvalidInput(f"a token of the global VO {GLOBAL_VO!r} is an admin token: give it the admin scope")
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "vo": vo,
            "groups": list(groups),
            "scope": " ".join(scopes),
            "iat": now,
            "nbf": not_before if not_before is not None else now,
            "exp": now + (lifetime_s if lifetime_s is not None else self.default_lifetime_s),
            "jti": uuid.uuid4().hex,
        }
        claims = {**(extra or {}), **claims}
        return jwt.encode(claims, self.private_key, algorithm="EdDSA", headers={"kid": self.kid})


@dataclass
class _KeySet:
    keys: list[tuple[str | None, Any]]
    fetched_at: float


class TokenVerifier:
    """Verifies bearer tokens against the built-in issuer and the trusted external issuers, and,
    given the view of the revocations, refuses the revoked ones."""

    def __init__(
        self,
        *,
        audience: str,
        builtin: BuiltinIssuer | None,
        trusted: Iterable[TrustedIssuer] = (),
        fetch_jwks: JwksFetcher | None = None,
        revocations: RevocationView | None = None,
    ) -> None:
        self.audience = audience
        self.builtin = builtin
        self.trusted = {t.issuer: t for t in trusted}
        self.fetch_jwks = fetch_jwks
        self.revocations = revocations
        self._cache: dict[str, _KeySet] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # issuer: when its last fetch failed, and why
        self._fetching: dict[str, asyncio.Lock] = {}

    async def verify(self, token: str) -> Principal:
        """The caller a token names; Unauthenticated (401) for any token that fails, whatever
        the reason (a library error on a hostile token must never become a 500), but
        ServiceUnavailable (503, Retry-After) while its issuer's keys cannot be fetched: the
        token may be good, and the client should retry, not drop it."""
        try:
            principal = await self._verify(token)
            if self.revocations is not None:
                await self.revocations.check(principal.claims, principal.vo)
            return principal
        except (Unauthenticated, ServiceUnavailable):
            raise
        except Exception as exc:
            raise Unauthenticated(f"invalid token ({type(exc).__name__})") from exc

    async def signed(self, token: str) -> Principal:
        """The caller a token names if its signature, issuer and audience verify, expired, not
        yet valid or revoked alike: a token to revoke. Errors as `verify`."""
        try:
            return await self._verify(token, timely=False)
        except (Unauthenticated, ServiceUnavailable):
            raise
        except Exception as exc:
            raise Unauthenticated(f"invalid token ({type(exc).__name__})") from exc

    async def _verify(self, token: str, *, timely: bool = True) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"malformed token: {exc}") from exc
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise Unauthenticated(f"token algorithm {alg!r} is not allowed; allowed: {', '.join(ALLOWED_ALGORITHMS)}")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str):
            raise Unauthenticated("token has no issuer (iss)")
        kid = header.get("kid")
        keys, audience = await self._keys_for(issuer, kid)
        candidates = [k for k_kid, k in keys if kid is None or k_kid is None or k_kid == kid]
        if not candidates:
            raise Unauthenticated(f"no key of issuer {issuer!r} matches key id {kid!r}")
        candidates = [k for k in candidates if isinstance(k, _KEY_TYPES[alg])]
        if not candidates:
            raise Unauthenticated(f"issuer {issuer!r} has no {alg} key; the token's algorithm does not match")
        last: Exception | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=audience,
                    issuer=issuer,
                    leeway=CLOCK_SKEW_S,
                    options={"require": ["exp", "iss", "aud", "sub"], "verify_exp": timely, "verify_nbf": timely},
                )
                return _principal(claims, self.trusted.get(issuer))
            except jwt.InvalidSignatureError as exc:
                last = exc
            except (jwt.InvalidAlgorithmError, jwt.InvalidKeyError) as exc:
                last = exc
            except jwt.ExpiredSignatureError as exc:
                raise Unauthenticated("token has expired") from exc
            except jwt.ImmatureSignatureError as exc:
                raise Unauthenticated("token is not valid yet (nbf)") from exc
            except jwt.InvalidAudienceError as exc:
                raise Unauthenticated(f"token audience is not {audience!r}") from exc
            except jwt.MissingRequiredClaimError as exc:
                raise Unauthenticated(f"token lacks a required claim: {exc.claim}") from exc
            except jwt.PyJWTError as exc:
                raise Unauthenticated(f"invalid token: {exc}") from exc
        raise Unauthenticated(f"token signature does not verify ({type(last).__name__})")

    async def _keys_for(self, issuer: str, kid: object) -> tuple[list[tuple[str | None, Any]], str]:
        if self.builtin is not None and issuer == self.builtin.issuer:
            return [(self.builtin.kid, self.builtin.private_key.public_key())], self.audience
        trusted = self.trusted.get(issuer)
        if trusted is None:
            raise Unauthenticated(f"token issuer {issuer!r} is not trusted")
        audience = trusted.audience or self.audience
        if self._usable(issuer, kid):
            return self._cache[issuer].keys, audience
        async with self._fetching.setdefault(issuer, asyncio.Lock()):
            if not self._usable(issuer, kid):  # another verification may have fetched meanwhile
                failed_at, why = self._failed.get(issuer, (-JWKS_RETRY_S, ""))
                if (wait := JWKS_RETRY_S - (time.monotonic() - failed_at)) > 0:
                    raise ServiceUnavailable(why, retry_after=math.ceil(wait))
                try:
                    self._cache[issuer] = _KeySet(await self._fetch_keys(trusted), time.monotonic())
                except ServiceUnavailable as exc:
                    self._failed[issuer] = (time.monotonic(), exc.message)
                    raise
            return self._cache[issuer].keys, audience

    def _usable(self, issuer: str, kid: object) -> bool:
        """Are the cached keys of `issuer` fresh, and do they hold key id `kid` (or were they
        fetched too recently to ask again)?"""
        cached = self._cache.get(issuer)
        if cached is None:
            return False
        age = time.monotonic() - cached.fetched_at
        known = kid is None or any(k_kid is None or k_kid == kid for k_kid, _ in cached.keys)
        return age < JWKS_CACHE_S and (known or age < JWKS_REFETCH_S)

    async def _fetch_keys(self, trusted: TrustedIssuer) -> list[tuple[str | None, Any]]:
        issuer = trusted.issuer
        keys: list[tuple[str | None, Any]] = [
            (None, serialization.load_pem_public_key(pem.encode())) for pem in trusted.public_keys
        ]
        if trusted.jwks_url:
            if self.fetch_jwks is None:
                raise Unauthenticated(f"cannot fetch keys of issuer {issuer!r}")
            try:
                jwks = await self.fetch_jwks(trusted.jwks_url)
                published = jwks.get("keys", [])
                if not isinstance(published, list):
                    raise TypeError("its 'keys' is not a list")
            except Exception as exc:
                raise ServiceUnavailable(f"cannot fetch keys of issuer {issuer!r} (retry later): {exc}",
                                         retry_after=math.ceil(JWKS_RETRY_S)) from exc
            for jwk in published:
                if not isinstance(jwk, dict) or jwk.get("kty") == "oct":
                    continue  # symmetric keys are never trusted
                with contextlib.suppress(Exception):  # a key that is no key verifies nothing; the others still do
                    keys.append((jwk.get("kid"), PyJWK(jwk).key))
        return keys


def granted_scopes(claims: Mapping[str, Any]) -> list[str]:
    """The scopes a token's `scope` claim grants (a space-separated string, or a list)."""
    scope = claims.get("scope", "")
    return scope.split() if isinstance(scope, str) else list(scope)


def _principal(claims: dict[str, Any], trusted: TrustedIssuer | None = None) -> Principal:
    """The caller a verified token names. A trusted issuer mapped to a VO makes every token of
    its VO (whatever `vo` the token claims) and says which claim carries the groups; only the
    built-in issuer may name the global VO `*`. Such an issuer speaks for its VO alone, so its
    tokens never carry jobs.pilot: a pilot runs every VO's jobs (`catalogue.vos.confine`)."""
    scopes = granted_scopes(claims)
    if trusted is not None and trusted.vo:
        scopes = [s for s in scopes if s != PILOT_SCOPE]
    groups = claims.get(trusted.groups_claim if trusted else "groups") or []
    if isinstance(groups, str):
        groups = [groups]
    # External issuers often prefix groups with '/'; Cairn's group names are bare.
    groups = tuple(str(g).lstrip("/") for g in groups)
    vo = (trusted.vo if trusted else None) or claims.get("vo") or (groups[0].split("/")[0] if groups else "")
    if not isinstance(vo, str) or not vo:
        raise Unauthenticated("token names no VO (vo claim or groups)")
    if vo == GLOBAL_VO and trusted is not None:
        raise Unauthenticated(f"only the built-in issuer may issue tokens of VO {GLOBAL_VO!r}")
    return Principal(
        sub=str(claims["sub"]),
        vo=vo,
        groups=groups,
        scopes=frozenset(str(s) for s in scopes),
        issuer=str(claims["iss"]),
        claims=claims,
    )
