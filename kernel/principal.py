"""Who is calling: the identity and scopes taken from a verified token."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Scopes Cairn understands. `admin` implies every other scope.
SCOPES = (
    "catalogue.read",
    "catalogue.write",
    "storage.read",
    "storage.write",
    "transfers.read",
    "transfers.write",
    "rules.read",
    "rules.write",
    "jobs.read",
    "jobs.write",
    "jobs.pilot",
    "admin",
)
ADMIN_SCOPE = "admin"


@dataclass(frozen=True)
class Principal:
    sub: str
    vo: str
    groups: tuple[str, ...] = ()
    scopes: frozenset[str] = frozenset()
    issuer: str = ""
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes

    @property
    def primary_group(self) -> str:
        return self.groups[0] if self.groups else self.vo

    def has_scope(self, scope: str) -> bool:
        return self.is_admin or scope in self.scopes

    def to_json(self) -> dict[str, Any]:
        return {
            "sub": self.sub,
            "vo": self.vo,
            "groups": list(self.groups),
            "scopes": sorted(self.scopes),
            "issuer": self.issuer,
            "admin": self.is_admin,
        }
