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
PILOT_SCOPE = "jobs.pilot"
DEFAULT_VO = "local"  # the VO of objects stored before VOs were recorded (no `vo` field)
GLOBAL_VO = "*"  # an admin token of this VO is a global admin of a multi-VO installation


@dataclass(frozen=True)
class Principal:
    sub: str
    vo: str
    groups: tuple[str, ...] = ()
    scopes: frozenset[str] = frozenset()
    issuer: str = ""
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # Set by `catalogue.vos.confine` once some VO is registered: the caller then reaches only
    # its VO's namespace roots (minus other VOs' roots nested in them), DID scopes and objects.
    confined: bool = False
    roots: tuple[str, ...] = ()
    foreign_roots: tuple[str, ...] = ()
    did_scopes: tuple[str, ...] = ()  # `*`: every scope no other VO claims (`foreign_scopes`)
    foreign_scopes: tuple[str, ...] = ()
    ses: tuple[str, ...] = ()  # the SEs the VO may use (empty: every SE)
    sole_vo: bool = False  # the caller's VO is the only one registered (installation totals hide nothing)

    @property
    def is_admin(self) -> bool:
        """Admin within what the caller reaches: every VO when unconfined, its own VO when not."""
        return ADMIN_SCOPE in self.scopes

    @property
    def is_global_admin(self) -> bool:
        """Admin of the whole installation (global routes: SEs, sites, VOs, audits, ...)."""
        return self.is_admin and not self.confined

    @property
    def qualified_groups(self) -> tuple[str, ...]:
        """The groups as `vo:group`: a group belongs to its VO, so two VOs' groups of one name differ."""
        return tuple(f"{self.vo}:{g}" for g in self.groups)

    def sees_vo(self, vo: str | None) -> bool:
        """May the caller see an object of VO `vo` (None: stored before VOs, i.e. DEFAULT_VO)?"""
        return not self.confined or (vo or DEFAULT_VO) == self.vo

    @property
    def primary_group(self) -> str:
        return self.groups[0] if self.groups else self.vo

    def has_scope(self, scope: str) -> bool:
        if scope == PILOT_SCOPE and self.confined:
            return False  # pilots run every VO's jobs: the installation's pilots, never one VO's caller
        return self.is_admin or scope in self.scopes

    def to_json(self) -> dict[str, Any]:
        return {
            "sub": self.sub,
            "vo": self.vo,
            "groups": list(self.groups),
            "scopes": sorted(self.scopes),
            "issuer": self.issuer,
            "admin": self.is_admin,
            "global_admin": self.is_global_admin,
            "qualified_groups": list(self.qualified_groups),
            "roots": list(self.roots),
        }
