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


async def make_dataset(admin: Client, did: str, lfns: list[str], *, container: str | None = None) -> None:
    await register(admin, lfns)
    await admin.create_did(did)
    await admin.attach(did, lfns=lfns)
    if container is not None:
        await admin.create_did(container, type="container")
        await admin.attach(container, children=[did])


async def test_replicating_a_dataset_queues_each_of_its_files(api: RunningApi, admin: Client) -> None:
    await put_se(admin, "DEST")
    lfns = [f"/cta/ds/f{i}" for i in range(5)]
    await make_dataset(admin, "cta:ds", lfns)
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        result = await alice.replicate_dataset("cta:ds", "DEST")
        assert sorted(result["successful"]) == lfns and result["failed"] == {} and result["dataset"] == "cta:ds"
        assert (await alice.submission(result["submission"]))["states"]["queued"] == 5


async def test_replicating_a_container_takes_the_files_of_every_dataset_below_it(
    api: RunningApi, admin: Client
) -> None:
    await put_se(admin, "DEST")
    await make_dataset(admin, "cta:a", ["/cta/c/a1", "/cta/c/a2"], container="cta:inner")
    await make_dataset(admin, "cta:b", ["/cta/c/b1", "/cta/c/a1"])
    await admin.create_did("cta:outer", type="container")
    await admin.attach("cta:outer", children=["cta:inner", "cta:b"])
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        result = await alice.replicate_dataset("cta:outer", "DEST")
    assert sorted(result["successful"]) == ["/cta/c/a1", "/cta/c/a2", "/cta/c/b1"]


async def test_replicating_an_unknown_dataset_is_404_and_queues_nothing(api: RunningApi, admin: Client) -> None:
    await put_se(admin, "DEST")
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        with pytest.raises(NotFound, match="cta:nothing"):
            await alice.replicate_dataset("cta:nothing", "DEST")
        with pytest.raises(InvalidInput, match="scope:name"):
            await alice.replicate_dataset("no-colon", "DEST")
        assert await alice.list_requests() == []


async def test_a_replication_names_lfns_or_a_dataset_not_both(api: RunningApi, admin: Client) -> None:
    await put_se(admin, "DEST")
    await make_dataset(admin, "cta:ds", ["/cta/ds/f"])
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        for body in ({"dest_se": "DEST"}, {"dest_se": "DEST", "lfns": [], "dataset": None},
                     {"dest_se": "DEST", "lfns": ["/cta/ds/f"], "dataset": "cta:ds"}):
            with pytest.raises(InvalidInput, match="either 'lfns'"):
                await alice.request("POST", "/requests/transfers", json_body=body)
        assert await alice.list_requests() == []


async def test_replicating_a_dataset_needs_the_scopes_that_list_it_and_that_move_data(
    api: RunningApi, admin: Client
) -> None:
    await put_se(admin, "DEST")
    await make_dataset(admin, "cta:ds", ["/cta/ds/f"])
    async with api.client(api.token(scopes=("transfers.write",))) as mover:
        with pytest.raises(Forbidden, match=r"catalogue\.read"):
            await mover.replicate_dataset("cta:ds", "DEST")
    async with api.client(api.token(scopes=("catalogue.read",))) as reader:
        with pytest.raises(Forbidden, match=r"transfers\.write"):
            await reader.replicate_dataset("cta:ds", "DEST")
    assert await admin.list_requests() == []


async def test_an_empty_dataset_is_refused(api: RunningApi, admin: Client) -> None:
    await put_se(admin, "DEST")
    await admin.create_did("cta:empty")
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        with pytest.raises(InvalidInput, match="holds no files"):
            await alice.replicate_dataset("cta:empty", "DEST")


async def test_cli_replicate_dataset_from_one_source_se(api: RunningApi, admin: Client) -> None:
    await put_se(admin, "DEST")
    await put_se(admin, "SRC")
    await make_dataset(admin, "cta:ds", ["/cta/ds/f1", "/cta/ds/f2"])
    token = api.token(scopes=USER_SCOPES)
    out = await run_cli(api.url, token, "replicate", "--to", "DEST", "--from", "SRC", "--dataset", "cta:ds", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["successful"]) == ["/cta/ds/f1", "/cta/ds/f2"]
    assert {(r["source_se"], r["dest_se"]) for r in await admin.list_requests()} == {("SRC", "DEST")}
    missing = await run_cli(api.url, token, "replicate", "--to", "DEST", "--dataset", "cta:none")
    assert missing.returncode != 0 and "cta:none" in missing.stderr
    both = await run_cli(api.url, token, "replicate", "--to", "DEST", "--dataset", "cta:ds", "/cta/ds/f1")
    assert both.returncode == 2 and "not both" in both.stderr


async def test_cli_cancels_a_submission_and_needs_something_to_cancel(api: RunningApi, admin: Client) -> None:
    await put_se(admin, "DEST")
    await register(admin, ["/cta/c1", "/cta/c2"])
    token = api.token(scopes=USER_SCOPES)
    queued = await run_cli(api.url, token, "replicate", "--to", "DEST", "--json", "/cta/c1", "/cta/c2")
    submission = json.loads(queued.stdout)["submission"]
    out = await run_cli(api.url, token, "requests", "cancel", "--submission", submission, "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == {"cancelled": 2}, out.stderr
    again = await run_cli(api.url, token, "requests", "cancel", "--submission", submission)
    assert again.returncode == 0 and "cancelled 0 request(s)" in again.stdout
    nothing = await run_cli(api.url, token, "requests", "cancel")
    assert nothing.returncode == 2 and "--submission" in nothing.stderr
