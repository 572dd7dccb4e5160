"""SDK calls for consistency checks (admins): audit runs, their findings, cleaning dark data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kernel.client import BaseClient


class AuditClient(BaseClient):
    async def queue_audit(self, se: str, *, dump: str | None = None) -> dict[str, Any]:
        """Queue an audit of se (its own listing, or the dump file at path `dump` on it)."""
        result: dict[str, Any] = await self.request("POST", "/audit/runs", json_body={"se": se, "dump": dump})
        return result

    async def audit_runs(self, se: str | None = None) -> list[dict[str, Any]]:
        """The latest audit runs, newest first."""
        result: list[dict[str, Any]] = await self.request("GET", "/audit/runs", params={"se": se})
        return result

    async def audit_run(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/audit/runs/{run_id}")
        return result

    def audit_entries(self, run_id: str, kind: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """What a run found (of one kind: lost, dark, size_mismatch, checksum_mismatch, or mismatch
        for both), by LFN."""
        return self.stream_lines(f"/audit/runs/{run_id}/entries", params={"kind": kind})

    async def audit_entries_to(self, run_id: str, dest: Path, *, kind: str | None = None,
                               fmt: str = "parquet") -> int:
        """Save what a run found as Parquet (or Arrow) to dest; returns the bytes written."""
        return await self.download_to(f"/audit/runs/{run_id}/entries", dest, params={"kind": kind, "format": fmt})

    async def clean_dark(self, run_id: str) -> dict[str, Any]:
        """Have the reaper delete the dark files a finished run found."""
        result: dict[str, Any] = await self.request("POST", f"/audit/runs/{run_id}/clean-dark")
        return result
