"""Regression tests for the catalogue audit's findings on registration and its neighbours:
re-registering another user's file, ancestors given at registration, replicas on another VO's
SEs, the same SE twice, what /files/remove and /files/register tell of hidden entries, and
names that end in a newline. A hidden entry must answer exactly like a missing one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from catalogue.vos import Vo
from tests.fixtures.authz import ALICES, MISSING, PRIVATE, World, same_answer

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
