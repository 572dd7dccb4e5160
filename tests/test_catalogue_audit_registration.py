"""Regression tests for the catalogue audit's findings on registration and its neighbours:
re-registering another user's file, ancestors given at registration, replicas on another VO's
SEs, the same SE twice, what /files/remove and /files/register tell of hidden entries, and
names that end in a newline. A hidden entry must answer exactly like a missing one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from catalogue.vos import Vo
from tests.fixtures.authz import ALICES, MISSING, PRIVATE, SHARED, World, same_answer

F = {"size": 1, "adler32": "00020002"}


async def test_a_metadata_key_ending_in_a_newline_is_refused(world: World) -> None:
    assert (await world.call("bob", "POST", "/metadata/set", {"path": "/lhcb/pub", "values": {"run\n": 1}}))[0] == 400
    assert (await world.call("bob", "POST", "/metadata/remove", {"path": "/lhcb/pub", "keys": ["run\n"]}))[0] == 400
    status, _ = await world.call("bob", "POST", "/files/register", {"files": [
        {"lfn": "/lhcb/pub/nl.root", **F, "meta": {"run\n": 1}}]})
    assert status == 400 and await world.db["files"].find_one({"_id": "/lhcb/pub/nl.root"}) is None


async def test_a_did_ending_in_a_newline_is_refused(world: World) -> None:
    for did in ("lhcb:evil\n", "lhcb\n:evil"):
        assert (await world.call("bob", "POST", "/dids", {"did": did, "type": "dataset"}))[0] == 400, did
    assert (await world.call("bob", "GET", "/dids/list", params={"scope": "lhcb\n"}))[0] == 400


def test_a_vo_scope_ending_in_a_newline_is_refused() -> None:
    with pytest.raises(ValidationError, match="invalid DID scope"):
        Vo(name="atlas", roots=["/atlas"], scopes=["atlas\n"])


async def test_a_file_registered_with_one_se_twice_is_refused(world: World) -> None:
    before = await world.snapshot()
    status, body = await world.call("bob", "POST", "/files/register", {"files": [
        {"lfn": "/lhcb/pub/dup.root", **F, "replicas": [{"se": "DISK1"}, {"se": "DISK1", "status": "copying"}]}]})
    assert status == 400 and "DISK1 is named twice" in body["message"], body
    assert await world.snapshot() == before


async def test_a_file_registered_as_its_own_ancestor_is_refused(world: World) -> None:
    status, body = await world.call("bob", "POST", "/files/register", {"files": [
        {"lfn": "/lhcb/pub/self.root", **F, "ancestors": ["/lhcb/pub/self.root"]}]})
    assert status == 400 and "cannot be its own ancestor" in body["message"], body


async def test_another_vos_se_is_refused_like_an_unknown_one(vo_world: World) -> None:
    before = await vo_world.snapshot()
    answers = {}
    for se in ("DISK2", "NOSUCH"):  # DISK2 is lhcb's; eve is of cta
        answers[se] = (
            await vo_world.call("eve", "POST", "/replicas/add", {"replicas": [{"lfn": ALICES, "se": se}]}),
            await vo_world.call("eve", "POST", "/files/register", {"files": [
                {"lfn": "/cta/mc/b.root", **F, "replicas": [{"se": se}]}]}))
    assert await vo_world.snapshot() == before
    for foreign, unknown in zip(answers["DISK2"], answers["NOSUCH"], strict=True):
        assert foreign[0] == 400 and same_answer(foreign, unknown, "DISK2", "NOSUCH"), (foreign, unknown)
    status, body = await vo_world.call("eve", "POST", "/replicas/add", {"replicas": [{"lfn": ALICES, "se": "DISK3"}]})
    assert status == 200 and body["successful"] == {ALICES: ["DISK3"]}, body


async def test_removing_a_hidden_file_answers_as_for_a_missing_one(world: World) -> None:
    before = await world.snapshot()
    status, body = await world.call("alice", "POST", "/files/remove", {"lfns": [PRIVATE, MISSING], "force": True})
    assert await world.snapshot() == before
    assert status == 200 and body == {"successful": {PRIVATE: {"removed": False}, MISSING: {"removed": False}},
                                      "failed": {}}, body


async def test_registering_at_a_hidden_directory_answers_as_at_a_missing_path(world: World) -> None:
    status, body = await world.call("alice", "POST", "/files/register", {"files": [
        {"lfn": "/lhcb/data", **F}, {"lfn": "/lhcb/nodir", **F}]})
    assert status == 200 and body["failed"]["/lhcb/data"] == body["failed"]["/lhcb/nodir"], body


async def test_registering_at_another_vos_directory_answers_as_at_a_missing_path(vo_world: World) -> None:
    status, body = await vo_world.call("eve", "POST", "/files/register", {"files": [
        {"lfn": "/lhcb/data", **F}, {"lfn": "/lhcb/nodir", **F}]})
    assert status == 200 and body["failed"]["/lhcb/data"] == body["failed"]["/lhcb/nodir"], body
    status, body = await vo_world.call("bob", "POST", "/files/register", {"files": [{"lfn": "/lhcb/data", **F}]})
    assert body["failed"] == {"/lhcb/data": "a directory exists at this path"}, body  # seen by its owner


async def test_registering_another_users_file_again_adds_nothing_without_w_on_it(world: World) -> None:
    lfn = "/lhcb/pub/shared/b.root"
    async with world.client("bob") as bob:
        await bob.mkdir("/lhcb/pub/shared", mode=0o770)  # carol (group lhcb) may create here
        assert not (await bob.register_files([{"lfn": lfn, **F, "mode": 0o640, "replicas": [{"se": "DISK1"}]}]))[
            "failed"]
    before = await world.snapshot()
    for extra in ({"replicas": [{"se": "DISK2", "status": "copying"}]}, {"ancestors": [SHARED]}):
        status, body = await world.call("carol", "POST", "/files/register", {"files": [{"lfn": lfn, **F, **extra}]})
        assert status == 200 and body == {"successful": {}, "failed": {
            lfn: f"permission denied: w permission needed on {lfn}"}}, body
    assert await world.snapshot() == before
    status, body = await world.call("carol", "POST", "/files/register", {"files": [{"lfn": lfn, **F}]})
    assert body["successful"][lfn]["created"] is False  # the same file again, changing nothing: still fine
    status, body = await world.call("bob", "POST", "/files/register", {"files": [
        {"lfn": lfn, **F, "replicas": [{"se": "DISK2", "status": "copying"}], "ancestors": [SHARED]}]})
    assert body["successful"][lfn]["created"] is False, body
    doc = await world.db["files"].find_one({"_id": lfn})
    assert [r["se"] for r in doc["replicas"]] == ["DISK1", "DISK2"] and doc["ancestors"] == [SHARED]


async def test_ancestors_given_at_registration_are_checked_as_provenance_links_are(world: World) -> None:
    before = await world.snapshot()
    answers = {}
    for ancestor in (PRIVATE, MISSING):
        status, body = await world.call("alice", "POST", "/files/register", {"files": [
            {"lfn": "/cta/mc/child.root", **F, "ancestors": [ancestor]}]})
        assert status == 200 and body["successful"] == {}, body
        answers[ancestor] = body
    assert answers[PRIVATE] == {"successful": {}, "failed": {"/cta/mc/child.root": f"ancestor {PRIVATE}: no such file"}}
    assert same_answer((200, answers[PRIVATE]), (200, answers[MISSING]), PRIVATE, MISSING)
    # an existing file of alice's, given again with a hidden ancestor, is not linked to it either
    stored = await world.db["files"].find_one({"_id": ALICES})
    status, body = await world.call("alice", "POST", "/files/register", {"files": [
        {"lfn": ALICES, "size": stored["size"], "adler32": stored["adler32"], "ancestors": [PRIVATE]}]})
    assert body["failed"] == {ALICES: f"ancestor {PRIVATE}: no such file"}, body
    assert await world.snapshot() == before
    _, descendants = await world.call("bob", "GET", "/provenance", params={"lfn": PRIVATE, "direction": "descendants"})
    assert "/cta/mc" not in str(descendants)


async def test_a_batch_may_hold_a_file_and_what_was_made_from_it(world: World) -> None:
    status, body = await world.call("alice", "POST", "/files/register", {"files": [
        {"lfn": "/cta/mc/derived.root", **F, "ancestors": ["/cta/mc/raw.root", ALICES]},
        {"lfn": "/cta/mc/raw.root", **F}]})
    assert status == 200 and not body["failed"], body
    doc = await world.db["files"].find_one({"_id": "/cta/mc/derived.root"})
    assert doc["ancestors"] == ["/cta/mc/raw.root", ALICES]
