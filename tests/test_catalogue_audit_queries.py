"""Regression tests for the catalogue's read paths found leaking by the audit: metadata queries
(/find), dataset contents pages, directory metadata and usage across VO roots, and dynamic
datasets. A hidden object answers exactly like a missing one; another VO's data is not counted,
typed nor reached (tests.fixtures.authz and tests.fixtures.multi_vo)."""

from __future__ import annotations

from tests.fixtures.authz import DATASET, PRIVATE, SHARED, World


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
