"""Regression tests for the namespace-permission holes and leaks of issue 12: alice (group cta)
against bob's /lhcb (0750) with its 0700 and 0750 directories (tests.fixtures.authz). Each
refusal is checked for its answer (a hidden file answers exactly like a missing one) and for
changing nothing in the database or on storage; a permitted caller is the positive control."""

from __future__ import annotations

import json

from kernel.settings import Settings
from rules.evaluator import RuleEvaluator
from rules.rule_models import ERROR_WITHHELD
from tests.fixtures.authz import ALICES, DATASET, MISSING, PRIVATE, SHARED, World, same_answer
from tests.fixtures.portal import PortalFactory
from tests.fixtures.rules import rule_settings


async def unchanged(world: World, who: str, method: str, path: str, body: object = None,
                    params: dict[str, str] | None = None) -> tuple[int, object]:
    """Make the call and assert it changed nothing in the database or on any SE."""
    before = await world.snapshot()
    answer = await world.call(who, method, path, body, params)
    assert await world.snapshot() == before, f"{who} {method} {path} changed something: {answer}"
    return answer


async def test_deletion_requests_need_w_on_the_file(world: World) -> None:
    status, body = await unchanged(world, "alice", "POST", "/requests/deletions",
                                   {"lfns": [PRIVATE, SHARED, MISSING], "se": "DISK1"})
    assert status == 201 and body["successful"] == {}
    assert body["failed"] == {PRIVATE: "no such file", SHARED: "no such file", MISSING: "no such file"}
    status, body = await unchanged(world, "carol", "POST", "/requests/deletions", {"lfns": [SHARED], "se": "DISK1"})
    assert status == 201 and body["failed"][SHARED].startswith("permission denied: w permission needed")
    status, body = await world.call("bob", "POST", "/requests/deletions", {"lfns": [SHARED], "se": "DISK1"})
    assert status == 201 and list(body["successful"]) == [SHARED]


async def test_transfer_requests_need_r_on_every_file(world: World) -> None:
    status, body = await unchanged(world, "alice", "POST", "/requests/transfers",
                                   {"lfns": [PRIVATE, MISSING], "dest_se": "DISK2"})
    assert status == 201 and body["successful"] == {}
    assert body["failed"] == {PRIVATE: "no such file", MISSING: "no such file"}
    status, body = await unchanged(world, "alice", "POST", "/requests/transfers", {"dataset": DATASET,
                                                                                   "dest_se": "DISK2"})
    # the files she cannot see are not named: to her the dataset holds none (as its contents list)
    assert status == 400 and "holds no files" in body["message"] and PRIVATE not in json.dumps(body)
    status, body = await unchanged(world, "alice", "POST", "/requests/stages", {"lfns": [PRIVATE], "se": "TAPE1"})
    assert status == 201 and body["failed"] == {PRIVATE: "no such file"}
    # carol (group lhcb) reads SHARED but cannot see into the 0700 directory
    status, body = await world.call("carol", "POST", "/requests/transfers", {"dataset": DATASET, "dest_se": "DISK2"})
    assert status == 201 and list(body["successful"]) == [SHARED] and body["failed"] == {}


async def test_a_rule_on_a_hidden_file_is_refused_like_a_missing_one(world: World) -> None:
    rule = {"copies": 1, "expression": "DISK2"}
    hidden = await unchanged(world, "alice", "POST", "/rules", {"did": PRIVATE, **rule})
    missing = await unchanged(world, "alice", "POST", "/rules", {"did": MISSING, **rule})
    assert hidden[0] == 404 and same_answer(hidden, missing, PRIVATE, MISSING)
    # a dataset is a shared name: refused (403) unless every file in it is readable
    status, body = await unchanged(world, "alice", "POST", "/rules", {"did": DATASET, **rule})
    assert status == 403 and "needs r on each of its files" in body["message"]
    # carol is in the dataset's group (lhcb), who may change it: she may also make rules on it
    assert (await world.call("carol", "POST", "/rules", {"did": DATASET, **rule}))[0] == 201
    assert (await world.call("carol", "POST", "/rules", {"did": SHARED, **rule}))[0] == 201
    # nothing of alice's locks bob's replicas: his deletion request goes through
    status, body = await world.call("bob", "POST", "/requests/deletions", {"lfns": [PRIVATE], "se": "DISK1"})
    assert status == 201 and list(body["successful"]) == [PRIVATE]


async def test_rules_on_hidden_files_are_not_shown(world: World) -> None:
    status, rule = await world.call("bob", "POST", "/rules", {"did": PRIVATE, "copies": 1, "expression": "DISK1"})
    assert status == 201
    assert await world.call("alice", "GET", "/rules") == (200, [])
    assert await world.call("alice", "GET", "/rules", params={"did": PRIVATE}) == (200, [])
    nothing = "0" * len(rule["id"])
    for method, path, body in (("GET", "/rules/{}", None), ("GET", "/rules/{}/locks", None),
                               ("PATCH", "/rules/{}", {"comment": "mine now"}), ("DELETE", "/rules/{}", None)):
        shown = await unchanged(world, "alice", method, path.format(rule["id"]), body)
        absent = await world.call("alice", method, path.format(nothing), body)
        assert shown[0] == 404 and same_answer(shown, absent, rule["id"], nothing), (method, path)
    assert [r["id"] for r in (await world.call("admin", "GET", "/rules"))[1]] == [rule["id"]]


async def test_provenance_does_not_reveal_hidden_files(world: World) -> None:
    hidden = await unchanged(world, "alice", "POST", "/provenance/link", {"lfn": ALICES, "ancestors": [PRIVATE]})
    missing = await unchanged(world, "alice", "POST", "/provenance/link", {"lfn": ALICES, "ancestors": [MISSING]})
    assert hidden[0] == 404 and same_answer(hidden, missing, PRIVATE, MISSING)
    # links made by those who may: ALICES <- PRIVATE (admin), SHARED <- ALICES (bob reads ALICES)
    assert (await world.call("admin", "POST", "/provenance/link", {"lfn": ALICES, "ancestors": [PRIVATE]}))[0] == 200
    assert (await world.call("bob", "POST", "/provenance/link", {"lfn": SHARED, "ancestors": [ALICES]}))[0] == 200

    async def related(who: str, direction: str) -> list[object]:
        status, body = await world.call(who, "GET", "/provenance", params={"lfn": ALICES, "direction": direction,
                                                                           "depth": "5"})
        assert status == 200, body
        return [(f["lfn"], f["exists"]) for f in body["files"]]

    assert await related("alice", "ancestors") == [(PRIVATE, False)]  # as if it were not catalogued
    assert await related("alice", "descendants") == []
    assert await related("carol", "descendants") == [(SHARED, True)]
    assert await related("admin", "ancestors") == [(PRIVATE, True)]


async def test_directory_usage_needs_r_and_x_on_the_directory(world: World) -> None:
    # /lhcb is visible (`ls /` shows it) but not readable to alice; /lhcb/data is hidden
    status, body = await unchanged(world, "alice", "GET", "/usage/directory", params={"path": "/lhcb"})
    assert status == 403 and "files" not in body
    hidden = await unchanged(world, "alice", "GET", "/usage/directory", params={"path": "/lhcb/data"})
    missing = await world.call("alice", "GET", "/usage/directory", params={"path": "/lhcb/nowhere"})
    assert hidden[0] == 404 and same_answer(hidden, missing, "/lhcb/data", "/lhcb/nowhere"), hidden
    assert (await world.call("carol", "GET", "/usage/directory", params={"path": "/lhcb/data"}))[0] == 403
    status, body = await world.call("carol", "GET", "/usage/directory", params={"path": "/lhcb"})
    assert status == 200 and body["files"] == 2


async def test_reading_a_hidden_file_is_like_reading_a_missing_one(world: World) -> None:
    for method in ("GET", "PUT"):
        hidden = await unchanged(world, "alice", "POST", "/storage/signed-url",
                                 {"lfn": PRIVATE, "se": "DISK1", "method": method})
        missing = await world.call("alice", "POST", "/storage/signed-url",
                                   {"lfn": MISSING, "se": "DISK1", "method": method})
        assert hidden[0] == 404 and same_answer(hidden, missing, PRIVATE, MISSING)
    hidden = await world.call("alice", "GET", "/files", params={"lfn": PRIVATE})
    assert same_answer(hidden, await world.call("alice", "GET", "/files", params={"lfn": MISSING}), PRIVATE, MISSING)
    for path in ("/replicas/resolve", "/files/lookup"):
        status, body = await world.call("alice", "POST", path, {"lfns": [PRIVATE, MISSING]})
        assert status == 200 and body["failed"] == {PRIVATE: "no such file", MISSING: "no such file"}
    status, body = await world.call("carol", "POST", "/replicas/resolve", {"lfns": [SHARED]})
    assert status == 200 and list(body["successful"]) == [SHARED]


async def test_dataset_contents_leave_out_files_the_reader_cannot_reach(world: World) -> None:
    def listed(answer: tuple[int, object]) -> list[str]:
        status, body = answer
        assert status == 200, body
        if isinstance(body, dict):  # a page, or a stream of one line
            return [m["lfn"] for m in body["members"]] if "members" in body else [body["lfn"]]
        return [json.loads(line)["lfn"] for line in str(body).splitlines() if line]

    for path in ("/dids/contents", "/dids/contents/stream"):
        assert listed(await world.call("bob", "GET", path, params={"did": DATASET})) == sorted([PRIVATE, SHARED])
        # carol (group lhcb) reaches SHARED but not the 0700 directory; alice reaches neither
        assert listed(await world.call("carol", "GET", path, params={"did": DATASET})) == [SHARED]
        assert listed(await world.call("alice", "GET", path, params={"did": DATASET})) == []


async def test_a_dataset_rules_locks_leave_out_files_the_reader_cannot_reach(
    world: World, settings: Settings, portal: PortalFactory,
) -> None:
    status, rule = await world.call("bob", "POST", "/rules", {"did": DATASET, "copies": 1, "expression": "DISK2"})
    assert status == 201, rule
    await RuleEvaluator(rule_settings(settings), world.db).run(max_cycles=2)
    locks = f"/rules/{rule['id']}/locks"
    _, bobs = await world.call("bob", "GET", locks)
    assert [x["lfn"] for x in bobs] == sorted([PRIVATE, SHARED])
    # carol sees bob's dataset rule (datasets are shared names) but not the 0700 directory's file
    status, carols = await world.call("carol", "GET", locks)
    assert status == 200 and [x["lfn"] for x in carols] == [SHARED], carols
    status, first = await world.call("carol", "GET", locks, params={"limit": "1"})
    assert status == 200 and [x["lfn"] for x in first] == [SHARED], first
    async with portal(world.tokens["carol"]) as carol:
        page = await carol.get(f"/ui/rules/{rule['id']}", params={"limit": "1"})
    assert page.status == 200 and SHARED in page.text and PRIVATE not in page.text


async def test_a_dataset_rules_error_is_withheld_from_readers_who_are_not_its_account(
    world: World, portal: PortalFactory,
) -> None:
    status, rule = await world.call("bob", "POST", "/rules", {"did": DATASET, "copies": 1, "expression": "DISK2"})
    assert status == 201, rule
    # What the evaluator writes on a stuck rule: its first stuck lock's file and the transfer's error.
    error = f"{PRIVATE}: copy failed: davs://disk2.example.org{PRIVATE}: 507 Insufficient Storage"
    await world.db["rules"].update_one({"_id": rule["id"]}, {"$set": {
        "state": "stuck", "error": error, "last_repair": {"moved": 1, "reason": error}}})
    _, bobs = await world.call("bob", "GET", f"/rules/{rule['id']}")
    assert bobs["error"] == bobs["last_repair"]["reason"] == error
    _, carols = await world.call("carol", "GET", f"/rules/{rule['id']}")
    _, listed = await world.call("carol", "GET", "/rules", params={"did": DATASET})
    assert PRIVATE not in str(carols) and PRIVATE not in str(listed) and carols["error"] == ERROR_WITHHELD
    async with portal(world.tokens["carol"]) as carol:
        pages = [await carol.get(f"/ui/rules/{rule['id']}"), await carol.get("/ui/rules")]
    assert all(p.status == 200 and PRIVATE not in p.text for p in pages)
