"""Metadata, queries, datasets, provenance and usage calls of the Python SDK (a mixin of
`cairn.sdk.Client`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kernel.client import BaseClient
from kernel.ride_out import riding_out

Json = dict[str, Any]


class MetadataClient(BaseClient):
    """Metadata, find, DIDs, provenance, usage and SE dumps over the HTTP API."""

    # ------------------------------------------------------------------------------ metadata

    async def list_fields(self) -> list[Json]:
        """Declared (indexed) metadata fields with their types."""
        result: list[Json] = await self.request("GET", "/metadata/fields")
        return result

    async def declare_field(self, key: str, type: str, description: str = "", *, vo: str | None = None) -> Json:
        """Declare an indexed field: int, float, string, datetime or strings (admins; a VO's admin
        declares for its VO; a global admin for VO `vo`, or for every VO when None)."""
        body = {"key": key, "type": type, "description": description, "vo": vo}
        result: Json = await self.request("PUT", "/metadata/fields", json_body=body)
        return result

    async def undeclare_field(self, key: str) -> Json:
        """Forget a field's declaration and index (admins); values stay."""
        result: Json = await self.request("DELETE", "/metadata/fields", params={"key": key})
        return result

    async def get_metadata(self, path: str) -> Json:
        """`{path, type, own, effective, origin}` of a file or directory."""
        result: Json = await self.request("GET", "/metadata", params={"path": path})
        return result

    async def set_metadata(self, path: str, values: Mapping[str, Any]) -> Json:
        """Set metadata values on a file or directory (inherited below a directory)."""
        with riding_out(self.ride_out_s):  # sets the values: the same however often sent
            result: Json = await self.request("POST", "/metadata/set", json_body={"path": path, "values": dict(values)})
        return result

    async def remove_metadata(self, path: str, keys: Iterable[str]) -> Json:
        """Remove own metadata keys from a file or directory."""
        result: Json = await self.request("POST", "/metadata/remove", json_body={"path": path, "keys": list(keys)})
        return result

    # ---------------------------------------------------------------------------------- find

    async def find(self, query: str, *, path: str = "/", after: str | None = None,
                   limit: int | None = None) -> AsyncIterator[Json]:
        """Files matching a metadata query, streamed, sorted by LFN."""
        body = {"query": query, "path": path, "after": after, "limit": limit}
        async for item in self.stream_lines("/find", method="POST", json_body=body):
            yield item

    async def find_to_file(self, query: str, dest: Path, *, format: str = "parquet", path: str = "/") -> int:
        """Write a query's results to `dest` as Parquet or Arrow IPC; returns bytes written."""
        body = {"query": query, "path": path, "format": format}
        return await self.download_to("/find", Path(dest), method="POST", json_body=body)

    async def explain_query(self, query: str, *, path: str = "/") -> Json:
        """The database's plan and statistics for a query (admins)."""
        with riding_out(self.ride_out_s):  # a read
            result: Json = await self.request("POST", "/find/explain", json_body={"query": query, "path": path})
        return result

    # ---------------------------------------------------------------------------------- DIDs

    async def create_did(self, did: str, *, type: str = "dataset", query: str | None = None, path: str = "/",
                         description: str = "", request_id: str | None = None) -> Json:
        """Create a dataset or container; with `query`, a dynamic dataset (snapshot taken now).
        The call names itself (`request_id`, a new one unless given) and rides out an API away:
        sent again, the server answers the DID its first sending made instead of 409."""
        body: Json = {"did": did, "type": type, "path": path, "description": description,
                      "request_id": request_id or uuid.uuid4().hex}
        if query is not None:
            body["query"] = query
        with riding_out(self.ride_out_s):
            result: Json = await self.request("POST", "/dids", json_body=body)
        return result

    async def get_did(self, did: str) -> Json:
        """One dataset or container with its state and counts."""
        result: Json = await self.request("GET", "/dids", params={"did": did})
        return result

    async def list_dids(self, scope: str, *, after: str | None = None, limit: int = 1000) -> list[Json]:
        """DIDs of a scope, by name."""
        result: list[Json] = await self.request("GET", "/dids/list", params={"scope": scope, "after": after,
                                                                             "limit": limit})
        return result

    async def set_did_state(self, did: str, action: str) -> Json:
        """close, reopen or freeze a DID."""
        result: Json = await self.request("POST", "/dids/state", json_body={"did": did, "action": action})
        return result

    async def attach(self, did: str, *, lfns: Iterable[str] = (), children: Iterable[str] = ()) -> Json:
        """Attach files to a dataset, or DIDs to a container."""
        body = {"did": did, "lfns": list(lfns), "children": list(children)}
        result: Json = await self.request("POST", "/dids/attach", json_body=body)
        return result

    async def detach(self, did: str, *, lfns: Iterable[str] = (), children: Iterable[str] = ()) -> Json:
        """Detach files from a dataset, or DIDs from a container."""
        body = {"did": did, "lfns": list(lfns), "children": list(children)}
        result: Json = await self.request("POST", "/dids/detach", json_body=body)
        return result

    async def refresh_did(self, did: str) -> Json:
        """Re-run a dynamic dataset's query into its snapshot."""
        result: Json = await self.request("POST", "/dids/refresh", json_body={"did": did})
        return result

    async def rebuild_did_counts(self, *, fix: bool = True) -> Json:
        """Recount datasets' and containers' counts from their rows, report drift and (with fix) correct it (admins)."""
        result: Json = await self.request("POST", "/dids/rebuild-counts", json_body={"fix": fix})
        return result

    async def did_contents_page(self, did: str, *, after: str | None = None, limit: int = 1000) -> Json:
        """One page of members: `{"members": [...], "next_after": key | None}`."""
        result: Json = await self.request("GET", "/dids/contents", params={"did": did, "after": after,
                                                                           "limit": limit})
        return result

    async def did_contents(self, did: str, *, after: str | None = None) -> AsyncIterator[Json]:
        """Every member of a DID, streamed."""
        async for item in self.stream_lines("/dids/contents/stream", params={"did": did, "after": after}):
            yield item

    async def did_contents_to_file(self, did: str, dest: Path, *, format: str = "parquet") -> int:
        """Write a dataset's files to `dest` as Parquet or Arrow IPC; returns bytes written."""
        return await self.download_to("/dids/contents/stream", Path(dest), params={"did": did, "format": format})

    # ---------------------------------------------------------------------------- provenance

    async def provenance(self, lfn: str, *, direction: str = "ancestors", depth: int = 1) -> Json:
        """Ancestors or descendants of a file to `depth`: `{"files": [{lfn, depth, exists}]}`."""
        result: Json = await self.request("GET", "/provenance", params={"lfn": lfn, "direction": direction,
                                                                        "depth": depth})
        return result

    async def link_ancestors(self, lfn: str, ancestors: Iterable[str]) -> Json:
        """Record the files `lfn` was made from: `{lfn, added, already_linked}` (counts). A file
        holds at most 10,000 ancestors: past that, LimitExceeded and nothing linked."""
        result: Json = await self.request("POST", "/provenance/link",
                                          json_body={"lfn": lfn, "ancestors": list(ancestors)})
        return result

    # --------------------------------------------------------------------------------- usage

    async def directory_usage(self, path: str) -> Json:
        """Files and bytes below a directory."""
        result: Json = await self.request("GET", "/usage/directory", params={"path": path})
        return result

    async def se_usage(self) -> list[Json]:
        """Replicas and bytes per SE."""
        result: list[Json] = await self.request("GET", "/usage/ses")
        return result

    async def rebuild_usage(self, *, fix: bool = True) -> Json:
        """Recount usage, report drift and (with fix) correct it (admins)."""
        result: Json = await self.request("POST", "/usage/rebuild", json_body={"fix": fix})
        return result

    async def change_feed(self, *, after: int = 0, limit: int = 100) -> Json:
        """Change feed events after sequence number `after`, and the consumers' positions (admins)."""
        result: Json = await self.request("GET", "/feed", params={"after": after, "limit": limit})
        return result

    async def se_dump(self, se: str) -> AsyncIterator[Json]:
        """Every replica on an SE, streamed (admins)."""
        async for item in self.stream_lines(f"/ses/{quote(se, safe='')}/dump"):
            yield item

    def se_dump_lines(self, se: str) -> AsyncIterator[list[bytes]]:
        """What `se_dump` streams, as chunks of undecoded JSON lines (one replica each), to pass on."""
        return self.stream_line_chunks(f"/ses/{quote(se, safe='')}/dump")

    async def se_dump_to_file(self, se: str, dest: Path, *, format: str = "parquet") -> int:
        """Write every replica on an SE to `dest` as Parquet or Arrow IPC (admins)."""
        return await self.download_to(f"/ses/{quote(se, safe='')}/dump", Path(dest), params={"format": format})
