"""The namespace routes found leaking by the catalogue audit: a move that carries another VO's
nested root away, moves and removals that tell a hidden entry from a missing one, and stat (and
the portal's file page) showing where the bytes of a file the caller may not read are."""

from __future__ import annotations

from tests.fixtures.authz import ALICES, MISSING, PRIVATE, SHARED, USER_SCOPES, World, register_with_bytes, same_answer
from tests.fixtures.portal import PortalFactory

UNREADABLE = "/lhcb/pub/own.root"  # bob's, 0600 in the directory carol may enter


async def _nested_vo(world: World, root: str) -> None:
    """VO `sub`, rooted at `root` inside lhcb's namespace, administered by sam."""
    st, answer = await world.call("admin", "PUT", "/vos/sub", {"name": "sub", "roots": [root], "scopes": ["sub"],
                                                               "admins": ["sam"]})
    assert st == 200, answer
    world.tokens["sam"] = world.api.token("sam", vo="sub", groups=("sub",), scopes=USER_SCOPES)


async def test_moving_a_directory_that_holds_another_vos_root_is_refused(vo_world: World) -> None:
    async with vo_world.client("bob") as bob:
        await bob.mkdir("/lhcb/grp", mode=0o775)
    await _nested_vo(vo_world, "/lhcb/grp/s")
    registered = await vo_world.call("sam", "POST", "/files/register", {"files": [
        {"lfn": "/lhcb/grp/s/f.root", "size": 1, "adler32": "00020002", "mode": 0o664}]})
    assert not registered[1]["failed"], registered
    moved = await vo_world.call("bob", "POST", "/namespace/move", {"source": "/lhcb/grp", "destination": "/lhcb/grp2"})
    assert moved[0] == 403 and "another VO" in moved[1]["message"], moved
    assert (await vo_world.call("sam", "GET", "/files", params={"lfn": "/lhcb/grp/s/f.root"}))[0] == 200
    by_admin = await vo_world.call("admin", "POST", "/namespace/move",
                                   {"source": "/lhcb/grp", "destination": "/lhcb/grp2"})
    assert by_admin[0] == 200, by_admin  # a global admin may


async def test_moving_a_directory_onto_another_vos_root_is_refused(vo_world: World) -> None:
    async with vo_world.client("bob") as bob:
        await bob.mkdir("/lhcb/mine/s", parents=True, mode=0o775)
    await _nested_vo(vo_world, "/lhcb/grp/s")
    gone = await vo_world.call("admin", "POST", "/namespace/remove", {"path": "/lhcb/grp", "recursive": True})
    assert gone[0] == 200, gone  # sub's root directory is gone, sub is not: bob's /lhcb/mine/s would become sub's
    moved = await vo_world.call("bob", "POST", "/namespace/move", {"source": "/lhcb/mine", "destination": "/lhcb/grp"})
    assert moved[0] == 403 and "another VO" in moved[1]["message"], moved
    assert (await vo_world.call("bob", "GET", "/namespace/stat", params={"path": "/lhcb/mine/s"}))[0] == 200


async def test_moving_onto_a_hidden_entry_answers_as_onto_a_missing_one(world: World) -> None:
    hidden = await world.call("alice", "POST", "/namespace/move", {"source": ALICES, "destination": PRIVATE})
    missing = await world.call("alice", "POST", "/namespace/move", {"source": ALICES, "destination": MISSING})
    no_dir = await world.call("alice", "POST", "/namespace/move", {"source": ALICES, "destination": "/lhcb/nodir/x"})
    assert same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)
    assert same_answer(no_dir, missing, "/lhcb/nodir/x", MISSING), (no_dir, missing)


async def test_moving_onto_another_vos_entry_answers_as_onto_a_missing_one(vo_world: World) -> None:
    async with vo_world.client("eve") as eve:
        await eve.mkdir("/cta/mine")
    source = "/cta/mine"
    hidden = await vo_world.call("eve", "POST", "/namespace/move", {"source": source, "destination": PRIVATE})
    missing = await vo_world.call("eve", "POST", "/namespace/move", {"source": source, "destination": MISSING})
    no_dir = await vo_world.call("eve", "POST", "/namespace/move", {"source": source, "destination": "/lhcb/nodir/x"})
    assert hidden[0] == 404 and same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)
    assert same_answer(no_dir, missing, "/lhcb/nodir/x", MISSING), (no_dir, missing)


async def test_moving_a_hidden_entry_answers_as_moving_a_missing_one(world: World) -> None:
    hidden = await world.call("alice", "POST", "/namespace/move", {"source": PRIVATE, "destination": "/cta/mc/b.root"})
    missing = await world.call("alice", "POST", "/namespace/move", {"source": MISSING, "destination": "/cta/mc/b.root"})
    assert same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)


async def test_removing_a_hidden_entry_answers_as_removing_a_missing_one(world: World) -> None:
    hidden = await world.call("alice", "POST", "/namespace/remove", {"path": PRIVATE})
    missing = await world.call("alice", "POST", "/namespace/remove", {"path": MISSING})
    assert same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)


async def test_removing_another_vos_entry_answers_as_removing_a_missing_one(vo_world: World) -> None:
    hidden = await vo_world.call("eve", "POST", "/namespace/remove", {"path": PRIVATE})
    missing = await vo_world.call("eve", "POST", "/namespace/remove", {"path": MISSING})
    assert hidden[0] == 404 and same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)


async def test_stat_shows_replicas_only_to_a_reader_of_the_file(world: World) -> None:
    async with world.client("bob") as bob:
        await register_with_bytes(bob, world.ses[:1], [(UNREADABLE, 0o600)])
    unreadable = await world.call("carol", "GET", "/namespace/stat", params={"path": UNREADABLE})
    assert unreadable[0] == 200 and "replicas" not in unreadable[1], unreadable
    readable = await world.call("carol", "GET", "/namespace/stat", params={"path": SHARED})
    assert readable[0] == 200 and readable[1]["replicas"], readable
    own = await world.call("bob", "GET", "/namespace/stat", params={"path": UNREADABLE})
    assert own[1]["replicas"], own


async def test_the_file_page_shows_replicas_only_to_a_reader_of_the_file(world: World, portal: PortalFactory) -> None:
    async with world.client("bob") as bob:
        await register_with_bytes(bob, world.ses[:1], [(UNREADABLE, 0o600)])
    async with portal(world.tokens["carol"]) as carol:
        unreadable = await carol.get("/ui/file", params={"path": UNREADABLE})
        assert unreadable.status == 200 and 'id="replicas"' not in unreadable.text and "file://" not in unreadable.text
        readable = await carol.get("/ui/file", params={"path": SHARED})
        assert readable.status == 200 and 'id="replicas"' in readable.text


async def test_metadata_is_shown_only_to_a_reader_of_the_entry(world: World, portal: PortalFactory) -> None:
    """An entry's metadata is reading it (r, as POSIX asks for extended attributes, and as /find
    shows only readable files): stat, listings, GET /metadata and the file page gave it to anyone
    who could traverse to it."""
    async with world.client("bob") as bob:
        await register_with_bytes(bob, world.ses[:1], [(UNREADABLE, 0o600)])
        await bob.request("POST", "/metadata/set", json_body={"path": UNREADABLE, "values": {"secret": "s3"}})
        await bob.request("POST", "/metadata/set", json_body={"path": SHARED, "values": {"kind": "open"}})
    refused = await world.call("carol", "GET", "/metadata", params={"path": UNREADABLE})
    assert refused[0] == 403 and "s3" not in str(refused[1]), refused
    assert (await world.call("carol", "GET", "/metadata", params={"path": SHARED}))[1]["effective"] == {"kind": "open"}
    stat = await world.call("carol", "GET", "/namespace/stat", params={"path": UNREADABLE})
    assert stat[0] == 200 and "s3" not in str(stat[1]), stat
    status, listing = await world.call("carol", "GET", "/namespace/ls", params={"path": "/lhcb/pub"})
    assert status == 200, listing
    entries = {e["path"]: e for e in listing["entries"]}
    assert "s3" not in str(entries[UNREADABLE]) and entries[SHARED]["meta_effective"] == {"kind": "open"}
    own = await world.call("bob", "GET", "/namespace/stat", params={"path": UNREADABLE})
    assert own[1]["meta"] == {"secret": "s3"}, own
    async with portal(world.tokens["carol"]) as carol:
        page = await carol.get("/ui/file", params={"path": UNREADABLE})
        assert page.status == 200 and "s3" not in page.text and 'id="metadata"' not in page.text
