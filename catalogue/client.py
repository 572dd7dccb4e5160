"""The catalogue's calls in the Python SDK (mixed into `cairn.sdk.Client`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from kernel.client import BaseClient
from kernel.ride_out import riding_out

Json = dict[str, Any]
CHUNKS_IN_FLIGHT = 3


class CatalogueClient(BaseClient):
    """Namespace, files, replicas, SEs and sites over the HTTP API."""

    # ----------------------------------------------------------------------------- namespace

    async def mkdir(self, path: str, *, parents: bool = False, mode: int | None = None) -> Json:
        """Create a directory; `parents=True` behaves like `mkdir -p`."""
        body: Json = {"path": path, "parents": parents}
        if mode is not None:
            body["mode"] = mode
        with riding_out(self.ride_out_s if parents else 0.0):  # `mkdir -p` of an existing directory is no error
            result: Json = await self.request("POST", "/namespace/mkdir", json_body=body)
        return result

    async def stat(self, path: str) -> Json:
        """A directory or a file (with its replicas)."""
        result: Json = await self.request("GET", "/namespace/stat", params={"path": path})
        return result

    async def ls_page(self, path: str, *, after: str | None = None, limit: int = 1000) -> Json:
        """One page of a directory: `{"entries": [...], "next_after": name | None}`."""
        result: Json = await self.request("GET", "/namespace/ls", params={"path": path, "after": after,
                                                                           "limit": limit})
        return result

    async def ls(self, path: str, *, after: str | None = None) -> AsyncIterator[Json]:
        """Every entry of a directory, sorted by name, streamed."""
        async for entry in self.stream_lines("/namespace/ls/stream", params={"path": path, "after": after}):
            yield entry

    def ls_lines(self, path: str, *, after: str | None = None) -> AsyncIterator[list[bytes]]:
        """What `ls` streams, as chunks of undecoded JSON lines (one entry each), to pass on."""
        return self.stream_line_chunks("/namespace/ls/stream", params={"path": path, "after": after})

    async def move(self, source: str, destination: str, *, request_id: str | None = None) -> Json:
        """Rename or move a file or directory tree. The call names itself (`request_id`, a new one
        unless given) and rides out an API away: sent again, the server answers the move its first
        sending made (`catalogue.move_requests`); a script that runs again after losing the answer
        gives the same request_id."""
        body = {"source": source, "destination": destination, "request_id": request_id or uuid.uuid4().hex}
        with riding_out(self.ride_out_s):
            result: Json = await self.request("POST", "/namespace/move", json_body=body)
        return result

    async def remove(self, path: str, *, recursive: bool = False) -> Json:
        """Remove a file, an empty directory, or (admins) a whole tree."""
        result: Json = await self.request("POST", "/namespace/remove",
                                          json_body={"path": path, "recursive": recursive})
        return result

    async def chmod(self, path: str, mode: int) -> Json:
        """Set the mode bits of an entry."""
        with riding_out(self.ride_out_s):  # sets the mode: the same however often sent
            result: Json = await self.request("POST", "/namespace/chmod", json_body={"path": path, "mode": mode})
        return result

    async def chown(self, path: str, *, owner: str | None = None, group: str | None = None) -> Json:
        """Change the owner (admins) or the group (owner) of an entry."""
        body = {k: v for k, v in {"path": path, "owner": owner, "group": group}.items() if v is not None}
        with riding_out(self.ride_out_s):  # sets owner and group: the same however often sent
            result: Json = await self.request("POST", "/namespace/chown", json_body=body)
        return result

    # --------------------------------------------------------------------------------- files

    async def register_files(self, files: Sequence[Mapping[str, Any]]) -> Json:
        """Register files with their first replicas: `{"successful": {...}, "failed": {lfn: reason}}`."""
        with riding_out(self.ride_out_s):  # a file registered again as it is answers successful (created False)
            result: Json = await self.request("POST", "/files/register", json_body={"files": list(files)})
        return result

    async def get_file(self, lfn: str) -> Json:
        """One file with its replicas."""
        result: Json = await self.request("GET", "/files", params={"lfn": lfn})
        return result

    async def lookup_files(self, lfns: Iterable[str], *, chunk: int = 1000) -> Json:
        """Many files with their replicas, one call per `chunk` LFNs:
        `{"successful": {lfn: file}, "failed": {lfn: reason}}`."""
        return await self._per_lfn_chunks("/files/lookup", lfns, chunk, {})

    async def remove_files(self, lfns: Iterable[str], *, force: bool = False) -> Json:
        """Remove file records (bulk); `force` also removes files that still have replicas."""
        result: Json = await self.request("POST", "/files/remove", json_body={"lfns": list(lfns), "force": force})
        return result

    # ------------------------------------------------------------------------------ replicas

    async def get_replicas(self, lfns: Iterable[str], *, active: bool = False, chunk: int = 5000) -> Json:
        """Replicas of many LFNs, one call per `chunk` (the server takes at most MAX_BULK_ITEMS):
        `{"successful": {lfn: [replica, ...]}, "failed": {lfn: reason}}`."""
        return await self._per_lfn_chunks("/replicas/resolve", lfns, chunk, {"active": active})

    async def _per_lfn_chunks(self, path: str, lfns: Iterable[str], chunk: int, body: Json) -> Json:
        """A bulk call by LFN in calls of `chunk` LFNs, CHUNKS_IN_FLIGHT at a time (the server
        reads the catalogue for one while it answers another), merged in the LFNs' order."""
        wanted = list(dict.fromkeys(lfns))
        gate = asyncio.Semaphore(CHUNKS_IN_FLIGHT)

        async def call(part: list[str]) -> Json:
            async with gate:
                with riding_out(self.ride_out_s):  # reads (a POST for its long body of LFNs)
                    answer: Json = await self.request("POST", path, json_body={"lfns": part, **body})
                return answer

        calls = [asyncio.ensure_future(call(wanted[start:start + chunk])) for start in range(0, len(wanted), chunk)]
        try:
            answers = await asyncio.gather(*calls)
        finally:  # the first error is raised as it is; the calls still out are not left running
            for pending in calls:
                pending.cancel()
        result: Json = {"successful": {}, "failed": {}}
        for answer in answers:
            result["successful"].update(answer["successful"])
            result["failed"].update(answer["failed"])
        return result

    async def add_replicas(self, replicas: Iterable[Mapping[str, Any]]) -> Json:
        """Add replicas `{lfn, se, url?, status?}` (bulk)."""
        result: Json = await self.request("POST", "/replicas/add", json_body={"replicas": list(replicas)})
        return result

    async def remove_replicas(self, replicas: Iterable[Mapping[str, Any]]) -> Json:
        """Remove replicas `{lfn, se}` from the catalogue (bulk)."""
        items = [{"lfn": r["lfn"], "se": r["se"]} for r in replicas]
        result: Json = await self.request("POST", "/replicas/remove", json_body={"replicas": items})
        return result

    async def set_replica_status(self, lfn: str, se: str, status: str, *, expected: str | None = None) -> Json:
        """Set a replica's status, only from `expected` when given (409 otherwise)."""
        body = {"lfn": lfn, "se": se, "status": status, "expected": expected}
        result: Json = await self.request("POST", "/replicas/status", json_body=body)
        return result

    async def set_replica_statuses(self, replicas: Iterable[Mapping[str, Any]]) -> Json:
        """Set the status of many replicas `{lfn, se, status, expected?}`, one per LFN; answers per LFN."""
        result: Json = await self.request("POST", "/replicas/statuses", json_body={"replicas": list(replicas)})
        return result

    # -------------------------------------------------------------------------- SEs and sites

    async def _named(self, method: str, kind: str, name: str, body: Mapping[str, Any] | None = None, *,
                     below: str = "") -> Json:
        """One call on `/{kind}/{name}{below}`: an SE or a VO of the installation's registries."""
        result: Json = await self.request(method, f"/{kind}/{quote(name, safe='')}{below}",
                                          json_body=dict(body) if body is not None else None)
        return result

    async def list_ses(self, *, site: str | None = None, kind: str | None = None) -> list[Json]:
        """Storage elements, optionally of one site or kind."""
        result: list[Json] = await self.request("GET", "/ses", params={"site": site, "kind": kind})
        return result

    async def get_se(self, name: str) -> Json:
        """One storage element."""
        return await self._named("GET", "ses", name)

    async def put_se(self, se: Mapping[str, Any]) -> Json:
        """Create or replace a storage element (admins)."""
        return await self._named("PUT", "ses", str(se["name"]), se)

    async def update_se(self, name: str, **changes: Any) -> Json:
        """Change read/write/delete switches, space or attributes of an SE (admins)."""
        return await self._named("PATCH", "ses", name, changes)

    async def delete_se(self, name: str) -> Json:
        """Remove an SE that holds no replica (admins)."""
        return await self._named("DELETE", "ses", name)

    async def bad_replicas(self, *, se: str | None = None, after: str | None = None, limit: int = 1000) -> Json:
        """One page of bad replicas (admins): `{"replicas": [...], "next_after": lfn | None}`."""
        result: Json = await self.request("GET", "/replicas/bad", params={"se": se, "after": after, "limit": limit})
        return result

    async def list_sites(self) -> list[Json]:
        """All sites."""
        result: list[Json] = await self.request("GET", "/sites")
        return result

    async def get_site(self, name: str) -> Json:
        """One site with its local SEs."""
        result: Json = await self.request("GET", f"/sites/{quote(name, safe='')}")
        return result

    async def put_site(self, name: str, *, description: str = "", attributes: Mapping[str, Any] | None = None) -> Json:
        """Create or replace a site (admins)."""
        body = {"name": name, "description": description, "attributes": dict(attributes or {})}
        result: Json = await self.request("PUT", f"/sites/{quote(name, safe='')}", json_body=body)
        return result

    async def delete_site(self, name: str) -> Json:
        """Remove a site that has no SE (admins)."""
        result: Json = await self.request("DELETE", f"/sites/{quote(name, safe='')}")
        return result

    async def site_queues(self, site: str | None = None) -> list[Json]:
        """The batch queues of every site (or of one), where the pilot factory sends pilots."""
        result: list[Json] = await self.request("GET", "/site-queues", params={"site": site})
        return result

    async def put_site_queue(self, site: str, name: str, **settings: Any) -> Json:
        """Create or replace a batch queue of a site (admins): backend, partition, cores,
        memory_mb, max_waiting, max_running, tags, enabled."""
        result: Json = await self.request("PUT", f"/sites/{quote(site, safe='')}/queues/{quote(name, safe='')}",
                                          json_body=settings)
        return result

    async def delete_site_queue(self, site: str, name: str) -> Json:
        result: Json = await self.request("DELETE", f"/sites/{quote(site, safe='')}/queues/{quote(name, safe='')}")
        return result

    # ------------------------------------------------------------------------------------- VOs

    async def list_vos(self) -> list[Json]:
        """The VOs of the installation (a VO's member sees only their own)."""
        result: list[Json] = await self.request("GET", "/vos")
        return result

    async def get_vo(self, name: str) -> Json:
        """One VO: roots, DID scopes, SEs (path, quota, switches), sites, admins, members."""
        return await self._named("GET", "vos", name)

    async def put_vo(self, vo: Mapping[str, Any]) -> Json:
        """Create or replace a VO (global admins); its missing root directories are made."""
        return await self._named("PUT", "vos", str(vo["name"]), vo)

    async def delete_vo(self, name: str) -> Json:
        """Delete a VO with no files, directories or datasets left (global admins; 409 names what remains)."""
        return await self._named("DELETE", "vos", name)

    async def identities(self, *, vo: str | None = None, issuer: str | None = None, after: str = "",
                         limit: int = 1000) -> list[Json]:
        """User names and the issuer each is bound to (admins: a VO's admin sees its VO's)."""
        result: list[Json] = await self.request("GET", "/identities", params={
            "vo": vo, "issuer": issuer, "after": after or None, "limit": limit})
        return result

    async def bind_identity(self, name: str, issuer: str) -> Json:
        """Bind a user name to an issuer: its tokens of other issuers are refused from then on."""
        return await self._named("PUT", "identities", name, {"issuer": issuer})

    async def forget_identity(self, name: str) -> Json:
        """Forget a name's binding (the next token naming it binds it to that token's issuer)."""
        return await self._named("DELETE", "identities", name)

    async def move_identities(self, old: str, new: str) -> Json:
        """Bind every name of issuer `old` to issuer `new`; answers how many moved."""
        result: Json = await self.request("POST", "/identities/move", json_body={"from": old, "to": new})
        return result

    async def vo_members(self, name: str) -> Json:
        """A VO's members and admins."""
        return await self._named("GET", "vos", name, below="/members")

    async def change_vo_members(self, name: str, *, add: Iterable[str] = (), remove: Iterable[str] = (),
                                admins: bool = False) -> Json:
        """Add or remove members (or admins) of a VO (its admins or a global admin)."""
        body = {"add": list(add), "remove": list(remove), "admins": admins}
        return await self._named("PATCH", "vos", name, body, below="/members")

    async def switch_vo_se(self, name: str, se: str, **switches: bool) -> Json:
        """Switch read_enabled/write_enabled/delete_enabled of a VO's files on one of its SEs
        (the VO's admins or a global admin); the SE's own switches are unchanged."""
        return await self._named("PATCH", "vos", name, switches, below=f"/ses/{quote(se, safe='')}")

    async def migrate_to_vo(self, name: str = "local") -> Json:
        """Give every rule, request, job, ... stored without a VO to VO `name` (global admins)."""
        return await self._named("POST", "vos", name, below="/migrate")
