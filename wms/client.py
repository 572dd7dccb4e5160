"""SDK calls of the job layer (mixed into `cairn.sdk.Client`; the pilot uses them directly)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from kernel.client import BaseClient
from kernel.ride_out import riding_out


class JobsClient(BaseClient):
    async def submit_jobs(self, description: dict[str, Any] | list[dict[str, Any]], *,
                          request_id: str | None = None) -> list[str]:
        """Submit one description or a list of them; returns the new job ids. The call names
        itself (`request_id`, a new one unless given) and rides out an API away: sent again, the
        server answers the jobs its first sending stored, never a second copy of them
        (`wms.submission_requests`); a script run again after losing the answer gives the same
        request_id."""
        if isinstance(description, dict) and "jobs" in description:  # a bulk body already: {jobs: [...]}
            body = {**description}
        else:
            body = {"jobs": description if isinstance(description, list) else [description]}
        body["request_id"] = request_id or body.get("request_id") or uuid.uuid4().hex
        with riding_out(self.ride_out_s):
            result = await self.request("POST", "/jobs", json_body=body)
        return list(result["ids"])

    async def get_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/jobs/{job_id}")
        return result

    async def job_logs(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/jobs/{job_id}/logs")
        return result

    async def list_jobs(
        self, *, owner: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request(
            "GET", "/jobs", params={"owner": owner, "state": state, "limit": limit}
        )
        return result

    async def kill_job(self, job_id: str, reason: str = "") -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", f"/jobs/{job_id}/kill", json_body={"reason": reason})
        return result

    async def reschedule_job(self, job_id: str, reason: str = "") -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"/jobs/{job_id}/reschedule", json_body={"reason": reason}
        )
        return result

    async def job_summary(self) -> dict[str, int]:
        result: dict[str, int] = await self.request("GET", "/job-summary")
        return result

    async def task_queues(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/task-queues")
        return result

    async def job_shares(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/job-shares")
        return result

    async def set_job_share(self, group: str, share: float) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("PUT", f"/job-shares/{group}", json_body={"share": share})
        return result

    async def rebuild_job_counters(self, *, fix: bool = True) -> dict[str, Any]:
        """Recount the task queues' and groups' counters, report drift and (with fix) correct it (admins)."""
        result: dict[str, Any] = await self.request("POST", "/job-counters/rebuild", json_body={"fix": fix})
        return result

    async def vo_shares(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/vo-shares")
        return result

    async def set_vo_share(self, vo: str, share: float) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("PUT", f"/vo-shares/{vo}", json_body={"share": share})
        return result

    # pilot calls

    async def match_job(
        self, *, pilot: str, site: str, cpu: int = 1, memory_mb: int = 2048, tags: list[str] | None = None
    ) -> dict[str, Any] | None:
        """The next job for this pilot (a work order), or None."""
        body = {"pilot": pilot, "site": site, "cpu": cpu, "memory_mb": memory_mb, "tags": tags or []}
        result = await self.request("POST", "/jobs/match", json_body=body)
        job: dict[str, Any] | None = result["job"]
        return job

    async def start_job(self, job_id: str, *, pilot: str, attempt: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"/jobs/{job_id}/start", json_body={"pilot": pilot, "attempt": attempt}
        )
        return result

    async def heartbeat_job(self, job_id: str, *, pilot: str, attempt: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"/jobs/{job_id}/heartbeat", json_body={"pilot": pilot, "attempt": attempt}
        )
        return result

    async def job_output_slots(self, job_id: str, *, pilot: str, attempt: int) -> list[dict[str, Any]]:
        """Where this attempt writes its outputs; Conflict when the attempt is no longer current."""
        result: dict[str, Any] = await self.request(
            "POST", f"/jobs/{job_id}/output-slots", json_body={"pilot": pilot, "attempt": attempt}
        )
        slots: list[dict[str, Any]] = result["outputs"]
        return slots

    async def register_job_outputs(
        self, job_id: str, *, pilot: str, attempt: int, files: list[dict[str, Any]]
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"/jobs/{job_id}/outputs", json_body={"pilot": pilot, "attempt": attempt, "files": files}
        )
        return result

    async def report_job(self, job_id: str, *, pilot: str, attempt: int, **outcome: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"/jobs/{job_id}/report", json_body={"pilot": pilot, "attempt": attempt, **outcome}
        )
        return result

    # pilots (the factory's records)

    async def list_pilots(self, *, site: str | None = None, state: str | None = None,
                          limit: int = 100) -> list[dict[str, Any]]:
        """Pilots, newest first: name, batch id, queue, site, state, the jobs each ran."""
        result: list[dict[str, Any]] = await self.request(
            "GET", "/pilots", params={"site": site, "state": state, "limit": limit})
        return result

    async def get_pilot(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/pilots/{quote(name, safe='')}")
        return result

    async def pilot_logs(self, name: str) -> dict[str, Any]:
        """The tail of a pilot's batch log (admins)."""
        result: dict[str, Any] = await self.request("GET", f"/pilots/{quote(name, safe='')}/logs")
        return result
