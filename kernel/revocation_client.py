"""SDK calls of token revocation (`kernel.revocation_routes`)."""

from __future__ import annotations

from typing import Any

from kernel.client import BaseClient


class RevocationClient(BaseClient):
    """Revoke tokens, and list revocations (admins)."""

    async def revoke_token(self, *, jti: str | None = None, token: str | None = None, user: str | None = None,
                           issuer: str | None = None) -> dict[str, Any]:
        """Revoke one token by its `jti` (within your reach) or given whole (`token`), or every
        token of `user` (of `issuer`, default yours) issued before now; the entry made."""
        body = {k: v for k, v in {"jti": jti, "token": token, "user": user, "issuer": issuer}.items() if v is not None}
        result: dict[str, Any] = await self.request("POST", "/tokens/revocations", json_body=body)
        return result

    async def token_revocations(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The live revocations, newest first (a VO's admin: those of its VO)."""
        result: list[dict[str, Any]] = await self.request("GET", "/tokens/revocations", params={"limit": limit})
        return result
