"""Regression tests for the catalogue's read paths found leaking by the audit: metadata queries
(/find), dataset contents pages, directory metadata and usage across VO roots, and dynamic
datasets. A hidden object answers exactly like a missing one; another VO's data is not counted,
typed nor reached (tests.fixtures.authz and tests.fixtures.multi_vo)."""

from __future__ import annotations

import aiohttp
import pyarrow as pa

from catalogue import change_feed
from kernel.web import API_PREFIX
from productions.feeding import feed_lfns
from tests.fixtures.authz import ALICES, DATASET, PRIVATE, SHARED, USER_SCOPES, World


async def test_find_in_a_hidden_directory_answers_like_a_missing_one(world: World) -> None:
    hidden = await world.call("alice", "POST", "/find", {"query": "size >= 0", "path": "/lhcb/data"})
    missing = await world.call("alice", "POST", "/find", {"query": "size >= 0", "path": "/lhcb/nodir"})
    assert hidden[0] == missing[0] == 404
    assert hidden[1]["message"] == "directory /lhcb/data does not exist"
    unreadable = await world.call("carol", "POST", "/find", {"query": "size >= 0", "path": "/lhcb/data"})
    assert unreadable[0] == 403, unreadable  # carol reaches /lhcb/data (x on /lhcb) but may not read it


async def test_contents_page_never_names_a_hidden_file(world: World) -> None:
    for who in ("alice", "carol"):
        status, body = await world.call(who, "GET", "/dids/contents", params={"did": DATASET, "limit": "1"})
        assert status == 200 and PRIVATE not in str(body), (who, body)
    _, alices = await world.call("alice", "GET", "/dids/contents", params={"did": DATASET, "limit": "1"})
    assert alices == {"members": [], "next_after": None}


async def test_contents_page_reads_past_hidden_rows_to_fill_itself(world: World) -> None:
    _, first = await world.call("carol", "GET", "/dids/contents", params={"did": DATASET, "limit": "1"})
    assert [m["lfn"] for m in first["members"]] == [SHARED] and first["next_after"] is None
    _, bobs = await world.call("bob", "GET", "/dids/contents", params={"did": DATASET, "limit": "1"})
    assert [m["lfn"] for m in bobs["members"]] == [PRIVATE] and bobs["next_after"] == PRIVATE


async def test_contents_pages_through_hidden_runs_naming_only_shown_members(world: World) -> None:
    hidden = [f"/lhcb/data/h{i}" for i in range(5)] + [f"/lhcb/x/h{i}" for i in range(3)]
    shown = [f"/lhcb/pub/v{i}" for i in range(3)]
    async with world.client("bob") as bob:
        await bob.mkdir("/lhcb/x", mode=0o700)
    files = [{"lfn": lfn, "size": 1, "adler32": "00020002"} for lfn in hidden + shown]
    assert (await world.call("bob", "POST", "/files/register", {"files": files}))[0] == 200
    assert (await world.call("bob", "POST", "/dids", {"did": "lhcb:mixed", "type": "dataset"}))[0] == 201
    assert (await world.call("bob", "POST", "/dids/attach", {"did": "lhcb:mixed", "lfns": hidden + shown}))[0] == 200
    seen, cursors, after = [], [], None
    while True:
        params = {"did": "lhcb:mixed", "limit": "2", **({"after": after} if after else {})}
        status, page = await world.call("carol", "GET", "/dids/contents", params=params)
        assert status == 200, page
        seen += [m["lfn"] for m in page["members"]]
        if (after := page["next_after"]) is None:
            break
        cursors.append(after)
    assert seen == shown and cursors == [shown[1]]


async def _find_arrow_columns(world: World, who: str) -> list[str]:
    async with aiohttp.ClientSession() as session, session.post(
            world.api.url + API_PREFIX + "/find", json={"query": "size >= 0", "format": "arrow"},
            headers={"Authorization": f"Bearer {world.tokens[who]}"}) as resp:
        assert resp.status == 200, await resp.text()
        return list(pa.ipc.open_stream(await resp.read()).schema.names)


async def test_find_types_a_query_by_the_callers_fields_only(vo_world: World) -> None:
    status, _ = await vo_world.call("lhcbadmin", "PUT", "/metadata/fields", {"key": "lhcbsecret", "type": "int"})
    assert status == 200
    assert "meta_lhcbsecret" not in await _find_arrow_columns(vo_world, "eve")
    assert "meta_lhcbsecret" in await _find_arrow_columns(vo_world, "bob")
    typed = await vo_world.call("eve", "POST", "/find", {"query": "lhcbsecret = abc"})
    free = await vo_world.call("eve", "POST", "/find", {"query": "nosuchfield = abc"})
    assert typed == free == (200, "")
    dynamic = await vo_world.call("eve", "POST", "/dids", {"did": "cta:dyn", "query": "lhcbsecret = abc"})
    assert dynamic[0] == 201, dynamic
    assert (await vo_world.call("bob", "POST", "/find", {"query": "lhcbsecret = abc"}))[0] == 400
    # a transformation's feeding types its owner's query by the owner's fields too
    status, made = await vo_world.call("eve", "POST", "/transformations", {
        "name": "t", "type": "replication", "input_query": "lhcbsecret = abc", "input_path": "/cta",
        "request": {"ses": "DISK3"}})
    assert status == 201, made
    await vo_world.call("eve", "POST", "/metadata/set", {"path": ALICES, "values": {"lhcbsecret": "abc"}})
    doc = await vo_world.db["transformations"].find_one({"_id": made["id"]})
    assert await feed_lfns(vo_world.db, doc, [ALICES]) == 1


async def test_a_refused_dynamic_dataset_is_not_created(world: World) -> None:
    before = await change_feed.read(world.db, 0, 100_000)
    body = {"did": "cta:dyn", "type": "dataset", "query": "size >= 0", "path": "/lhcb/data"}
    assert (await world.call("alice", "POST", "/dids", body))[0] == 404
    assert (await world.call("alice", "GET", "/dids", params={"did": "cta:dyn"}))[0] == 404
    assert await change_feed.read(world.db, 0, 100_000) == before
    assert (await world.call("alice", "POST", "/dids", {**body, "path": "/cta"}))[0] == 201


async def test_directory_usage_leaves_out_other_vos_nested_roots(vo_world: World) -> None:
    status, _ = await vo_world.call("admin", "PUT", "/vos/local", {"name": "local", "roots": ["/"],
                                                                   "scopes": ["local"]})
    assert status == 200
    vo_world.tokens["lou"] = vo_world.api.token("lou", vo="local", groups=("local",), scopes=USER_SCOPES)
    _, everything = await vo_world.call("admin", "GET", "/usage/directory", params={"path": "/"})
    _, lhcb = await vo_world.call("bob", "GET", "/usage/directory", params={"path": "/lhcb"})
    assert everything["files"] > lhcb["files"] > 0
    assert await vo_world.call("lou", "GET", "/usage/directory", params={"path": "/"}) == (
        200, {"path": "/", "files": 0, "bytes": 0})


async def test_directory_metadata_stops_at_another_vos_nested_root(vo_world: World) -> None:
    async with vo_world.client("bob") as bob:
        await bob.mkdir("/lhcb/grp", mode=0o775)
    status, _ = await vo_world.call("admin", "PUT", "/vos/sub", {"name": "sub", "roots": ["/lhcb/grp/s"],
                                                                 "scopes": ["sub"], "admins": ["sam"]})
    assert status == 200
    vo_world.tokens["sam"] = vo_world.api.token("sam", vo="sub", groups=("sub",), scopes=USER_SCOPES)
    files = [{"lfn": "/lhcb/grp/s/f.root", "size": 1, "adler32": "00020002"}]
    assert (await vo_world.call("sam", "POST", "/files/register", {"files": files}))[0] == 200
    async with vo_world.client("bob") as bob:
        await bob.mkdir("/lhcb/grp/s.b", mode=0o775)  # beside the root, sorting between it and its subtree
    for path in ("/lhcb/grp", "/lhcb"):
        answer = await vo_world.call("bob", "POST", "/metadata/set", {"path": path, "values": {"quality": "bad"}})
        assert answer[0] == 200, answer
    for path in ("/lhcb/grp/s", "/lhcb/grp/s/f.root"):
        _, sams = await vo_world.call("sam", "GET", "/metadata", params={"path": path})
        assert sams["effective"] == {}, sams
    _, bobs = await vo_world.call("bob", "GET", "/metadata", params={"path": "/lhcb/grp/s.b"})
    assert bobs["effective"] == {"quality": "bad"} and bobs["origin"] == {"quality": "/lhcb/grp"}
    removed = await vo_world.call("bob", "POST", "/metadata/remove", {"path": "/lhcb/grp", "keys": ["quality"]})
    assert removed[0] == 200, removed
    _, bobs = await vo_world.call("bob", "GET", "/metadata", params={"path": "/lhcb/grp/s.b"})
    assert bobs["origin"] == {"quality": "/lhcb"}
    _, sams = await vo_world.call("sam", "GET", "/metadata", params={"path": "/lhcb/grp/s/f.root"})
    assert sams["effective"] == {}, sams
