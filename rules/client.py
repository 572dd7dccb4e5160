"""SDK calls for rules, quotas and RSE expressions (mixed into `cairn.sdk.Client`)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from kernel.client import BaseClient
from kernel.ride_out import riding_out

Json = dict[str, Any]


class RulesClient(BaseClient):
    async def resolve_expression(self, expression: str) -> list[str]:
        """The SE names an RSE expression means now."""
        result: Json = await self.request("GET", "/expressions/resolve", params={"expression": expression})
        return list(result["ses"])

    async def add_rule(self, did: str, copies: int, expression: str, **options: Any) -> Json:
        """Create a rule; options: grouping, lifetime_s, weight, activity, source_expression,
        locked, comment, account, priority, request_id. The call names itself (`request_id`, a
        new one unless given) and rides out an API away: sent again, the server answers the rule
        its first sending made, never a second one (`rules.rule_requests`); a script that runs
        again after losing the answer gives the same request_id."""
        body = {"did": did, "copies": copies, "expression": expression, "request_id": uuid.uuid4().hex,
                **{k: v for k, v in options.items() if v is not None}}
        with riding_out(self.ride_out_s):
            result: Json = await self.request("POST", "/rules", json_body=body)
        return result

    async def list_rules(self, *, account: str | None = None, did: str | None = None,
                         state: str | None = None) -> list[Json]:
        result: list[Json] = await self.request("GET", "/rules", params={"account": account, "did": did,
                                                                          "state": state})
        return result

    async def get_rule(self, rule_id: str) -> Json:
        result: Json = await self.request("GET", f"/rules/{quote(rule_id, safe='')}")
        return result

    async def rule_locks(self, rule_id: str, *, state: str | None = None, after: str | None = None,
                         limit: int = 1000) -> list[Json]:
        """One page of a rule's locks."""
        result: list[Json] = await self.request("GET", f"/rules/{quote(rule_id, safe='')}/locks",
                                                params={"state": state, "after": after, "limit": limit})
        return result

    async def update_rule(self, rule_id: str, **changes: Any) -> Json:
        """Change copies, lifetime_s, locked, comment, activity, or state='replicating' to resume."""
        result: Json = await self.request("PATCH", f"/rules/{quote(rule_id, safe='')}",
                                          json_body={k: v for k, v in changes.items() if v is not None})
        return result

    async def delete_rule(self, rule_id: str) -> Json:
        result: Json = await self.request("DELETE", f"/rules/{quote(rule_id, safe='')}")
        return result

    async def quotas(self, account: str | None = None) -> list[Json]:
        """Quotas and usage per account and SE."""
        result: list[Json] = await self.request("GET", "/quotas", params={"account": account})
        return result

    async def set_quota(self, account: str, se: str, nbytes: int) -> Json:
        result: Json = await self.request("PUT", "/quotas", json_body={"account": account, "se": se, "bytes": nbytes})
        return result

    async def delete_quota(self, account: str, se: str) -> Json:
        result: Json = await self.request("DELETE", "/quotas", params={"account": account, "se": se})
        return result

    async def rebuild_quota_usage(self, *, fix: bool = True) -> Json:
        """Recount quota usage from the rule locks, report drift and (with fix) correct it (admins)."""
        result: Json = await self.request("POST", "/quotas/rebuild", json_body={"fix": fix})
        return result

    async def add_subscription(self, name: str, rule: Json, *, filter: Json | None = None,
                               account: str | None = None, comment: str = "") -> Json:
        """Subscribe new datasets matching filter (scopes, name_pattern, owners, dynamic) to a rule template."""
        body = {"name": name, "rule": rule, "filter": filter or {}, "account": account, "comment": comment}
        result: Json = await self.request("POST", "/subscriptions",
                                          json_body={k: v for k, v in body.items() if v is not None})
        return result

    async def list_subscriptions(self) -> list[Json]:
        result: list[Json] = await self.request("GET", "/subscriptions")
        return result

    async def get_subscription(self, name: str) -> Json:
        result: Json = await self.request("GET", f"/subscriptions/{quote(name, safe='')}")
        return result

    async def delete_subscription(self, name: str) -> Json:
        result: Json = await self.request("DELETE", f"/subscriptions/{quote(name, safe='')}")
        return result
