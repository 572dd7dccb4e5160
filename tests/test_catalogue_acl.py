"""Path authorization over HTTP: scopes, then owner/group/mode as catalogue.permissions documents."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from kernel.db import Document
from kernel.errors import Forbidden, NotFound
from tests.fixtures.api import RunningApi


@pytest.fixture
async def tree(api: RunningApi, catalogue_db: AsyncDatabase[Document], admin: Client) -> RunningApi:
    """/cta (0775 cta) holding alice's private dir (0700), a group dir (0750) and a shared file."""
    await admin.mkdir("/cta", mode=0o775)
    await admin.chown("/cta", group="cta")
    async with api.client(api.token("alice", groups=("cta",))) as alice:
        await alice.mkdir("/cta/private", mode=0o700)
        await alice.mkdir("/cta/group", mode=0o750)
        await alice.register_files([{"lfn": "/cta/group/f", "size": 1, "adler32": "00000001", "mode": 0o640,
                                     "replicas": [{"se": "CERN-DISK"}]},
                                    {"lfn": "/cta/private/secret", "size": 1, "adler32": "00000001"}])
    return api


@pytest.fixture
async def carol(tree: RunningApi) -> AsyncIterator[Client]:
    """Another member of group cta."""
    async with tree.client(tree.token("carol", groups=("cta",))) as client:
        yield client


@pytest.fixture
async def bob(tree: RunningApi) -> AsyncIterator[Client]:
    """A member of another VO and group."""
    async with tree.client(tree.token("bob", vo="km3net", groups=("km3net",))) as client:
        yield client


async def test_listing_needs_r_on_the_directory(carol: Client, bob: Client) -> None:
    assert [e["name"] for e in (await carol.ls_page("/cta/group"))["entries"]] == ["f"]
    with pytest.raises(Forbidden, match=r"rx permission needed on /cta/private"):
        await carol.ls_page("/cta/private")
    with pytest.raises(Forbidden):
        await bob.ls_page("/cta/group")
    with pytest.raises(Forbidden):
        [e async for e in bob.ls("/cta/group")]


async def test_traversal_needs_x_on_every_ancestor(carol: Client) -> None:
    with pytest.raises(Forbidden, match=r"no search \(x\) permission on directory /cta/private"):
        await carol.stat("/cta/private/secret")
    with pytest.raises(Forbidden, match=r"no search \(x\) permission on directory /cta/private"):
        await carol.stat("/cta/private/missing")  # the same refusal: stat tells nothing of what is hidden
    resolved = await carol.get_replicas(["/cta/private/secret", "/cta/private/missing"])
    assert resolved["failed"] == {"/cta/private/secret": "no such file", "/cta/private/missing": "no such file"}


async def test_reading_replicas_needs_r_on_the_file(carol: Client, bob: Client) -> None:
    resolved = await carol.get_replicas(["/cta/group/f"])
    assert list(resolved["successful"]) == ["/cta/group/f"]
    denied = await bob.get_replicas(["/cta/group/f"])  # bob cannot enter /cta/group: hidden = missing
    assert denied == {"successful": {}, "failed": {"/cta/group/f": "no such file"}}
    with pytest.raises(NotFound, match="file /cta/group/f does not exist"):
        await bob.get_file("/cta/group/f")


async def test_one_resolution_judges_each_file_and_each_directory(tree: RunningApi, carol: Client) -> None:
    async with tree.client(tree.token("alice", groups=("cta",))) as alice:
        await alice.register_files([{"lfn": "/cta/group/own", "size": 1, "adler32": "00000001", "mode": 0o600,
                                     "replicas": [{"se": "CERN-DISK"}]}])
    lfns = ["/cta/group/f", "/cta/private/secret", "/cta/group/own", "/cta/private/missing", "/cta/group/nothing"]
    resolved = await carol.get_replicas(lfns)
    assert list(resolved["successful"]) == ["/cta/group/f"]
    assert resolved["failed"] == {"/cta/private/secret": "no such file", "/cta/private/missing": "no such file",
                                  "/cta/group/own": "permission denied: r permission needed on /cta/group/own",
                                  "/cta/group/nothing": "no such file"}


async def test_creating_needs_w_on_the_parent(carol: Client, bob: Client) -> None:
    with pytest.raises(Forbidden, match="wx permission needed on directory /cta/group"):
        await carol.mkdir("/cta/group/mine")
    result = await bob.register_files([{"lfn": "/cta/km3/f", "size": 1, "adler32": "00000001"}])
    assert result["successful"] == {} and "wx permission needed on directory /cta" in result["failed"]["/cta/km3/f"]
    assert (await carol.mkdir("/cta/carol"))["owner"] == "carol"  # group cta may write in /cta


async def test_changing_replicas_needs_w_on_the_file(carol: Client) -> None:
    added = await carol.add_replicas([{"lfn": "/cta/group/f", "se": "DESY-DISK"}])
    assert "permission denied" in added["failed"]["/cta/group/f"]
    with pytest.raises(Forbidden):
        await carol.set_replica_status("/cta/group/f", "CERN-DISK", "bad")


async def test_removing_and_moving_need_w_on_the_parent(carol: Client) -> None:
    removed = await carol.remove_files(["/cta/group/f"], force=True)
    assert "permission denied" in removed["failed"]["/cta/group/f"]
    with pytest.raises(Forbidden):
        await carol.move("/cta/group/f", "/cta/f")
    with pytest.raises(Forbidden):
        await carol.remove("/cta/group/f")


async def test_chmod_is_for_the_owner(carol: Client) -> None:
    with pytest.raises(Forbidden, match="only the owner"):
        await carol.chmod("/cta/group", 0o777)


async def test_scopes_gate_before_modes(tree: RunningApi) -> None:
    async with tree.client(tree.token("alice", groups=("cta",), scopes=("catalogue.read",))) as reader:
        assert (await reader.stat("/cta/group/f"))["owner"] == "alice"
        with pytest.raises(Forbidden, match=r"catalogue\.write"):
            await reader.mkdir("/cta/group/x")
    async with tree.client(tree.token("alice", groups=("cta",))) as alice:
        with pytest.raises(Forbidden, match="admin"):
            await alice.put_site("X")


async def test_admins_bypass_modes(tree: RunningApi, admin: Client) -> None:
    assert (await admin.stat("/cta/private/secret"))["owner"] == "alice"
    assert [e["name"] for e in (await admin.ls_page("/cta/private"))["entries"]] == ["secret"]
