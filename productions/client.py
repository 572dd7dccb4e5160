"""SDK calls for transformations and productions (mixed into `cairn.sdk.Client`)."""

from __future__ import annotations

from typing import Any

from kernel.client import BaseClient

Json = dict[str, Any]


class TransformationsClient(BaseClient):
    async def add_transformation(self, spec: Json) -> Json:
        """Create a transformation from its spec; returns it (state new)."""
        result: Json = await self.request("POST", "/transformations", json_body=spec)
        return result

    async def list_transformations(self, *, owner: str | None = None, limit: int = 100) -> list[Json]:
        result: list[Json] = await self.request("GET", "/transformations", params={"owner": owner, "limit": limit})
        return result

    async def get_transformation(self, transformation_id: str) -> Json:
        """A transformation with its files per status and tasks per state."""
        result: Json = await self.request("GET", f"/transformations/{transformation_id}")
        return result

    async def transformation_files(self, transformation_id: str, *, status: str | None = None,
                                   after: str | None = None, limit: int = 1000) -> list[Json]:
        result: list[Json] = await self.request("GET", f"/transformations/{transformation_id}/files",
                                                params={"status": status, "after": after, "limit": limit})
        return result

    async def transformation_tasks(self, transformation_id: str, *, state: str | None = None,
                                   limit: int = 1000) -> list[Json]:
        result: list[Json] = await self.request("GET", f"/transformations/{transformation_id}/tasks",
                                                params={"state": state, "limit": limit})
        return result

    async def transformation_action(self, transformation_id: str, action: str, body: Json | None = None) -> Json:
        """flush, stop, start, clean or extend ({"tasks": n})."""
        result: Json = await self.request("POST", f"/transformations/{transformation_id}/{action}",
                                          json_body=body or {})
        return result

    async def delete_transformation(self, transformation_id: str) -> Json:
        """Stop, clean and forget a transformation (not a production's step); no data is deleted."""
        result: Json = await self.request("DELETE", f"/transformations/{transformation_id}")
        return result

    async def add_production(self, spec: Json) -> Json:
        """Create a production (its steps checked as a chain first); returns it with its step ids."""
        result: Json = await self.request("POST", "/productions", json_body=spec)
        return result

    async def list_productions(self, *, owner: str | None = None, limit: int = 100) -> list[Json]:
        result: list[Json] = await self.request("GET", "/productions", params={"owner": owner, "limit": limit})
        return result

    async def get_production(self, production_id: str) -> Json:
        result: Json = await self.request("GET", f"/productions/{production_id}")
        return result

    async def production_status(self, production_id: str) -> Json:
        """Progress per step and the production-wide status (running, done, stopped)."""
        result: Json = await self.request("GET", f"/productions/{production_id}/status")
        return result

    async def production_action(self, production_id: str, action: str) -> Json:
        """stop or start."""
        result: Json = await self.request("POST", f"/productions/{production_id}/{action}", json_body={})
        return result

    async def stop_production(self, production_id: str) -> Json:
        return await self.production_action(production_id, "stop")

    async def delete_production(self, production_id: str) -> Json:
        """Stop, clean and delete every step, then the production; no data is deleted."""
        result: Json = await self.request("DELETE", f"/productions/{production_id}")
        return result
