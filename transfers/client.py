"""SDK calls for requests (replication, staging, deletion) and transfer statistics."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from kernel.client import BaseClient
from kernel.ride_out import riding_out


class TransfersClient(BaseClient):
    async def replicate(
        self, lfns: list[str], dest_se: str, *, source_se: str | None = None, activity: str = "default",
        priority: int = 3,
    ) -> dict[str, Any]:
        """Queue replication of lfns to dest_se; returns {submission, successful, failed}."""
        body = {"lfns": lfns, "dest_se": dest_se, "source_se": source_se, "activity": activity, "priority": priority}
        with riding_out(self.ride_out_s):  # queued once however often sent (`transfers.requests`: active_key)
            result: dict[str, Any] = await self.request("POST", "/requests/transfers", json_body=body)
        return result

    async def replicate_dataset(
        self, dataset: str, dest_se: str, *, source_se: str | None = None, activity: str = "default",
        priority: int = 3,
    ) -> dict[str, Any]:
        """Queue replication of every file of a dataset, or of every dataset below a container
        (`scope:name`), to dest_se; answers like `replicate`, per LFN, plus `dataset`."""
        body = {"dataset": dataset, "dest_se": dest_se, "source_se": source_se, "activity": activity,
                "priority": priority}
        with riding_out(self.ride_out_s):  # queued once however often sent (`transfers.requests`: active_key)
            result: dict[str, Any] = await self.request("POST", "/requests/transfers", json_body=body)
        return result

    async def stage(self, lfns: list[str], se: str, *, priority: int = 3,
                    pin_lifetime_s: float | None = None) -> dict[str, Any]:
        """Bring lfns online from tape SE `se` into its disk cache, pinned for pin_lifetime_s
        (default: the stager's setting) or until released (`release_requests`)."""
        body = {"lfns": lfns, "se": se, "priority": priority, "pin_lifetime_s": pin_lifetime_s}
        with riding_out(self.ride_out_s):  # queued once however often sent (`transfers.requests`: active_key)
            result: dict[str, Any] = await self.request("POST", "/requests/stages", json_body=body)
        return result

    async def delete_replicas(self, lfns: list[str], se: str | None = None) -> dict[str, Any]:
        """Queue deletion of the replicas of lfns on se (every replica when se is None: admins only)."""
        with riding_out(self.ride_out_s):  # queued once however often sent (`transfers.requests`: active_key)
            result: dict[str, Any] = await self.request(
                "POST", "/requests/deletions", json_body={"lfns": lfns, "se": se})
        return result

    async def list_requests(self, **filters: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/requests", params=filters)
        return result

    async def get_request(self, request_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/requests/{request_id}")
        return result

    async def submission(self, submission_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/submissions/{submission_id}")
        return result

    async def cancel_requests(self, ids: list[str] | None = None, submission: str | None = None) -> int:
        result = await self.request("POST", "/requests/cancel", json_body={"ids": ids or [], "submission": submission})
        return int(result["cancelled"])

    async def release_requests(self, ids: list[str] | None = None, submission: str | None = None) -> int:
        """Ask for the pins of done stage requests to be released; returns how many were asked."""
        result = await self.request("POST", "/requests/release", json_body={"ids": ids or [], "submission": submission})
        return int(result["release_asked"])

    async def transfer_stats(self) -> dict[str, Any]:
        """Per-link counts and throughput, queue depths and failures by reason."""
        result: dict[str, Any] = await self.request("GET", "/transfers/stats")
        return result

    async def transfer_series(self, *, hours: int = 48, source: str | None = None,
                              dest: str | None = None) -> dict[str, Any]:
        """Files done and failed and MB moved per hour over the last `hours` hours."""
        params = {"hours": hours, "source": source, "dest": dest}
        result: dict[str, Any] = await self.request("GET", "/transfers/series", params=params)
        return result

    async def transfer_activity(self, *, hours: int = 48, step_hours: int = 1) -> dict[str, Any]:
        """Transfers per activity (files done, failed attempts, MB) over the last `hours`, per bucket."""
        result: dict[str, Any] = await self.request("GET", "/transfers/activity",
                                                    params={"hours": hours, "step_hours": step_hours})
        return result

    async def transfer_shares(self) -> dict[str, Any]:
        """Shares of the transfer queue: {vos: [{vo, share, backlogged}], activities, default_activity_share}."""
        result: dict[str, Any] = await self.request("GET", "/transfer-shares")
        return result

    async def set_vo_transfer_share(self, vo: str, share: float) -> dict[str, Any]:
        """Set a VO's share of the transfer queue (global admins)."""
        result: dict[str, Any] = await self.request("PUT", f"/transfer-shares/vos/{quote(vo, safe='')}",
                                                    json_body={"share": share})
        return result

    async def set_activity_share(self, activity: str, share: float) -> dict[str, Any]:
        """Set an activity's share within its VO's part of the queue ('*': every unlisted one's; global admins)."""
        result: dict[str, Any] = await self.request("PUT", f"/transfer-shares/activities/{quote(activity, safe='')}",
                                                    json_body={"share": share})
        return result

    async def forget_activity_share(self, activity: str) -> dict[str, Any]:
        """Give an activity the default share again (global admins)."""
        result: dict[str, Any] = await self.request("DELETE", f"/transfer-shares/activities/{quote(activity, safe='')}")
        return result
