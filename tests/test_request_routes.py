"""Bulk requests through the API and the CLI: validation, ownership, progress and cancel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cairn.sdk import Client
from kernel.errors import Forbidden, InvalidInput, NotFound
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli

USER_SCOPES = ("transfers.read", "transfers.write", "catalogue.read")


async def put_se(admin: Client, name: str, **extra: object) -> None:
    se = {"name": name, "site": "S1", "protocols": [{"scheme": "file", "prefix": f"/tmp/{name}"}], **extra}
    await admin.request("PUT", f"/ses/{name}", json_body=se)


async def register(admin: Client, lfns: list[str]) -> None:
    """Catalogue files (no replica needed to be the subject of a request)."""
    result = await admin.register_files([{"lfn": lfn, "size": 1, "adler32": "00020002"} for lfn in lfns])
    assert not result["failed"], result["failed"]


async def test_replication_of_many_lfns_is_queued_and_reported_by_submission(api: RunningApi, admin: Client) -> None:
    await put_se(admin, "DEST")
    await register(admin, [f"/cta/f{i}" for i in range(300)])
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        result = await alice.replicate([f"/cta/f{i}" for i in range(300)], "DEST")
        assert len(result["successful"]) == 300 and not result["failed"]
        progress = await alice.submission(result["submission"])
        assert progress["states"]["queued"] == 300


async def test_unknown_destination_se_is_404_and_queues_nothing(api: RunningApi, admin: Client) -> None:
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        with pytest.raises(NotFound, match="NOWHERE"):
            await alice.replicate(["/cta/a"], "NOWHERE")
        assert await alice.list_requests() == []


async def test_destination_switched_off_for_writing_is_refused(api: RunningApi, admin: Client) -> None:
    await put_se(admin, "OFF", write_enabled=False)
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        with pytest.raises(InvalidInput, match="writing"):
            await alice.replicate(["/cta/a"], "OFF")


async def test_wrong_types_and_missing_fields_are_400(api: RunningApi, admin: Client) -> None:
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        with pytest.raises(InvalidInput, match="lfns"):
            await alice.request("POST", "/requests/transfers", json_body={"lfns": "not-a-list", "dest_se": "X"})
        with pytest.raises(InvalidInput, match="dest_se"):
            await alice.request("POST", "/requests/transfers", json_body={"lfns": ["/a"]})


async def test_requests_for_files_not_in_the_catalogue_fail_one_by_one(api: RunningApi, admin: Client) -> None:
    await put_se(admin, "DEST")
    await register(admin, ["/cta/here"])
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        result = await alice.replicate(["/cta/here", "/cta/nowhere"], "DEST")
        assert list(result["successful"]) == ["/cta/here"]
        assert result["failed"] == {"/cta/nowhere": "no such file"}
        deletion = await alice.delete_replicas(["/cta/nowhere", "relative"], "DEST")
        assert deletion["successful"] == {} and deletion["failed"]["/cta/nowhere"] == "no such file"
        assert "relative" in deletion["failed"]
        assert len(await alice.list_requests()) == 1


async def test_users_see_and_cancel_only_their_own_requests(api: RunningApi, admin: Client) -> None:
    await put_se(admin, "DEST")
    await register(admin, ["/cta/a", "/cta/b"])
    async with api.client(api.token(sub="alice", scopes=USER_SCOPES)) as alice, \
            api.client(api.token(sub="bob", scopes=USER_SCOPES)) as bob:
        mine = await alice.replicate(["/cta/a", "/cta/b"], "DEST")
        assert await bob.list_requests() == []
        rid = mine["successful"]["/cta/a"]
        with pytest.raises(NotFound):
            await bob.get_request(rid)
        assert await bob.cancel_requests([rid]) == 0
        assert await alice.cancel_requests(submission=mine["submission"]) == 2
        assert {r["state"] for r in await alice.list_requests()} == {"cancelled"}


async def test_deleting_every_replica_needs_an_admin(api: RunningApi, admin: Client) -> None:
    await register(admin, ["/cta/a"])
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        with pytest.raises(Forbidden):
            await alice.delete_replicas(["/cta/a"])
    result = await admin.delete_replicas(["/cta/a"])
    assert list(result["successful"]) == ["/cta/a"]


async def test_token_without_transfer_scope_cannot_submit(api: RunningApi, admin: Client) -> None:
    await put_se(admin, "DEST")
    async with api.client(api.token(scopes=("catalogue.read",))) as reader:
        with pytest.raises(Forbidden, match=r"transfers\.write"):
            await reader.replicate(["/cta/a"], "DEST")


async def test_cli_replicate_reads_lfns_from_a_file_and_prints_json(
    api: RunningApi, admin: Client, tmp_path: Path
) -> None:
    await put_se(admin, "DEST")
    await register(admin, ["/cta/x1", "/cta/x2", "/cta/x3"])
    listing = tmp_path / "lfns.txt"
    listing.write_text("/cta/x1\n/cta/x2\n\n/cta/x3\n")
    token = api.token(scopes=USER_SCOPES)
    out = await run_cli(api.url, token, "replicate", "--to", "DEST", "--from-file", str(listing), "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["successful"]) == ["/cta/x1", "/cta/x2", "/cta/x3"]
    bad = await run_cli(api.url, token, "replicate", "--to", "NOWHERE", "/cta/x1")
    assert bad.returncode == 2
    assert "NOWHERE" in bad.stderr
