"""A moved file's replicas stay reachable where their bytes are, and its old path stays its own.

`cairn mv` renames in the catalogue only; on every SE the bytes stay at the old LFN's path
(`catalogue.moved_paths`). Before, every reader derived the URL from the new LFN and refused the
stored one, so a moved file could not be downloaded, copied, staged or deleted; the auditor
called its bytes dark (and an operator's clean-up deleted them) and its replica lost; and a new
file at the old LFN was written over the moved file's bytes. Checked on the storage itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from catalogue import dataset_contents, datasets
from catalogue.datasets import DidIn
from catalogue.files import register_files, remove_files
from catalogue.moves import move
from catalogue.namespace import mkdir
from catalogue.replicas import add_replicas
from catalogue.usage import rebuild
from kernel.db import Document
from kernel.settings import Settings
from rules import store
from rules.evaluation import evaluate
from rules.rule_models import RuleIn
from tests.fixtures.api import RunningApi
from tests.fixtures.audit import audit_settings
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.cli import run_cli
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.payloads import Payload
from tests.fixtures.rules import rule_settings
from tests.fixtures.transfers import (
    add_ses,
    disk_se,
    fast_settings,
    put_files,
    replica_status,
    run_until_drained,
    se_root,
    tape_se,
)
from transfers import queueing
from transfers import requests as rq
from transfers.auditor import Auditor
from transfers.reaper import Reaper
from transfers.stager import Stager
from transfers.worker import TransferWorker

HELD = "holds the bytes of another file that was moved"


async def cli(api: RunningApi, *args: str, env: dict[str, str] | None = None, code: int = 0) -> str:
    done = await run_cli(api.url, api.admin_token, *args, env=env)
    assert done.returncode == code, done.stdout + done.stderr
    return done.stdout + done.stderr


async def downloaded(api: RunningApi, lfn: str, dest: Path, site: str) -> tuple[bytes, str]:
    """The bytes `cairn download` fetched, read at `site` (its SEs first), and the SE they came from."""
    out = await cli(api, "download", lfn, str(dest), "--json", env={"CAIRN_SITE": site})
    [outcome] = json.loads(out[:out.rindex("]") + 1])
    return await asyncio.to_thread(dest.read_bytes), outcome["se"]


async def test_a_moved_file_is_read_copied_and_deleted_where_its_bytes_are_and_keeps_its_old_path(
    api: RunningApi, live_ses: LiveSEs, database: AsyncDatabase[Document], payload: Callable[[int], Payload],
    tmp_path: Path,
) -> None:
    xrd = await live_ses.add("xrootd", name="XRD", site="SITE-X")
    s3 = await live_ses.add("s3", name="S3", site="SITE-S", secrets_on_server=True)  # read through signed URLs
    disk = await live_ses.add("file", name="DISK", site="SITE-D")
    data, other = payload(50_000), payload(3000)
    fast = fast_settings(api.settings)
    await cli(api, "upload", str(data.path), "/cta/mv/a/f", "--se", xrd.name)
    await cli(api, "replicate", "/cta/mv/a/f", "--to", s3.name)
    await run_until_drained(database, TransferWorker(fast, database))

    await cli(api, "mv", "/cta/mv/a", "/cta/mv/b")  # a directory move: its files go with it
    assert live_ses.stored_file(xrd.name, "/cta/mv/a/f").read_bytes() == data.path.read_bytes()
    for site, se in (("SITE-X", xrd.name), ("SITE-S", s3.name)):
        assert await downloaded(api, "/cta/mv/b/f", tmp_path / site, site) == (data.path.read_bytes(), se)

    # A copy reads its source at the old path (TPC from XRootD is not possible to a local
    # directory: streamed) and writes the new replica at the new LFN's path.
    await cli(api, "replicate", "/cta/mv/b/f", "--to", disk.name, "--from", xrd.name)
    await run_until_drained(database, TransferWorker(fast, database))
    assert live_ses.stored_file(disk.name, "/cta/mv/b/f").read_bytes() == data.path.read_bytes()

    # A new file at the old LFN may not go where the moved file's bytes are, and goes elsewhere.
    refused = await cli(api, "upload", str(other.path), "/cta/mv/a/f", "--se", xrd.name, code=1)
    assert HELD in refused
    assert live_ses.stored_file(xrd.name, "/cta/mv/a/f").read_bytes() == data.path.read_bytes()
    await cli(api, "upload", str(other.path), "/cta/mv/a/f", "--se", disk.name)
    await cli(api, "replicate", "/cta/mv/a/f", "--to", xrd.name)
    await run_until_drained(database, TransferWorker(fast, database))
    request = await database[rq.REQUESTS].find_one({"lfn": "/cta/mv/a/f", "dest_se": xrd.name})
    assert request is not None and request["state"] == "failed" and HELD in request["last_error"]
    assert live_ses.stored_file(xrd.name, "/cta/mv/a/f").read_bytes() == data.path.read_bytes()

    # Deleting the moved file's replica deletes its bytes at the old path; the path is free then.
    await cli(api, "requests", "delete-replicas", "/cta/mv/b/f", "--se", xrd.name)
    await Reaper(fast, database).run(max_cycles=1)
    assert not live_ses.stored_file(xrd.name, "/cta/mv/a/f").exists()
    await cli(api, "replicate", "/cta/mv/a/f", "--to", xrd.name)
    await run_until_drained(database, TransferWorker(fast, database))
    assert live_ses.stored_file(xrd.name, "/cta/mv/a/f").read_bytes() == other.path.read_bytes()
    assert await downloaded(api, "/cta/mv/b/f", tmp_path / "again", "SITE-S") == (data.path.read_bytes(), s3.name)


async def test_an_audit_finds_a_moved_files_bytes_neither_dark_nor_lost(
    api: RunningApi, live_ses: LiveSEs, database: AsyncDatabase[Document], admin: Client,
    payload: Callable[[int], Payload],
) -> None:
    se = await live_ses.add("file", name="AUDITED")
    data = payload(1000)
    await cli(api, "upload", str(data.path), "/cta/au/f", "--se", se.name)
    await cli(api, "upload", str(data.path), "/cta/au/stays", "--se", se.name)
    await cli(api, "mv", "/cta/au/f", "/cta/au/g")
    live_ses.stored_file(se.name, "/cta/au/lost").parent.mkdir(parents=True, exist_ok=True)
    live_ses.stored_file(se.name, "/cta/au/dark").write_bytes(b"nobody registered me")
    run = await admin.queue_audit(se.name)
    await Auditor(audit_settings(api.settings, dark_grace_s=0), database).run(max_cycles=1)
    done = await admin.audit_run(str(run["id"]))
    counts = done["counts"]
    assert isinstance(counts, dict)
    assert (counts["dark"], counts["lost"], counts["matched"]) == (1, 0, 1), counts
    assert [e["lfn"] async for e in admin.audit_entries(str(run["id"]), "dark")] == ["/cta/au/dark"]


async def test_a_moved_file_on_tape_is_staged_and_copied_from_its_old_path(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape, dst = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.2), disk_se("DST", tmp_path / "dst")
    await add_ses(database, tape, dst)
    contents = await put_files(database, [tape], ["/vo/raw/f"])
    await mkdir(database, ADMIN, "/vo/kept")
    await move(database, ADMIN, "/vo/raw/f", "/vo/kept/f")
    await queueing.submit(database, "stage", [{"lfn": "/vo/kept/f", "dest_se": "TAPE"}], requester="t")
    await queueing.submit_transfers(database, [{"lfn": "/vo/kept/f", "dest_se": "DST"}], requester="t")
    fast = fast_settings(settings)
    await run_until_drained(database, TransferWorker(fast, database), Stager(fast, database), timeout_s=60)
    states = {d["kind"]: (d["state"], d.get("last_error")) async for d in database[rq.REQUESTS].find({})}
    assert states == {"stage": ("done", None), "transfer": ("done", None)}, states
    assert (se_root(dst) / "vo/kept/f").read_bytes() == contents["/vo/raw/f"]
    assert await replica_status(database, "/vo/kept/f", "DST") == "available"


async def test_a_file_moved_back_owns_its_path_again_and_a_new_file_there_is_not_registered(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    a, b = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b")
    await add_ses(database, a, b)
    await put_files(database, [a], ["/vo/x/f"])
    await mkdir(database, ADMIN, "/vo/y")
    await move(database, ADMIN, "/vo/x/f", "/vo/y/f")
    new = {"lfn": "/vo/x/f", "size": 1, "adler32": "00000001"}
    answer = await register_files(database, ADMIN, [{**new, "replicas": [{"se": "A"}]}])
    assert HELD in answer["failed"]["/vo/x/f"]
    assert await database["files"].find_one({"_id": "/vo/x/f"}) is None  # nothing registered, nothing counted
    assert (await rebuild(database, fix=False))["drifted"] == 0
    assert "/vo/x/f" in (await register_files(database, ADMIN, [{**new, "replicas": [{"se": "B"}]}]))["successful"]
    assert HELD in (await add_replicas(database, [{"lfn": "/vo/x/f", "se": "A"}]))["failed"]["/vo/x/f"]
    await remove_files(database, ADMIN, ["/vo/x/f"], force=True)
    await Reaper(fast_settings(settings), database).run(max_cycles=1)  # its bytes' deletion frees its paths

    await move(database, ADMIN, "/vo/y/f", "/vo/x/f")  # back where its bytes are
    back = await database["files"].find_one({"_id": "/vo/x/f"})
    assert back is not None
    [replica] = back["replicas"]
    assert "path_lfn" not in replica and (se_root(a) / "vo/x/f").exists()
    assert (await add_replicas(database, [{"lfn": "/vo/x/f", "se": "B"}]))["successful"] == {"/vo/x/f": ["B"]}


async def test_files_a_dataset_holds_a_rule_locks_or_a_writer_writes_keep_their_lfn(
    api: RunningApi, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    disk = disk_se("KEEP", tmp_path / "keep")
    await add_ses(database, disk)
    await put_files(database, [disk], ["/vo/ds/in", "/vo/ds/out", "/vo/locked/f"])
    await datasets.create_did(database, ADMIN, DidIn(did="vo:kept"))
    assert not (await dataset_contents.attach_files(database, ADMIN, "vo:kept", ["/vo/ds/in"]))["failed"]
    rule = await store.create_rule(database, ADMIN, RuleIn(did="/vo/locked/f", copies=1, expression="KEEP"))
    await evaluate(database, rule, rule_settings(api.settings).rules)  # the replica is there: an ok lock
    await mkdir(database, ADMIN, "/vo/elsewhere")
    busy = {"lfn": "/vo/busy/f", "size": 1, "adler32": "00000001", "replicas": [{"se": "KEEP", "status": "copying"}]}
    assert not (await register_files(database, ADMIN, [busy]))["failed"]  # an upload under way

    for source, why in (("/vo/ds/in", "attached to a dataset"), ("/vo/ds", "/vo/ds/in is attached to a dataset"),
                        ("/vo/locked/f", "locked by replication rules"), ("/vo/locked", "locked by replication"),
                        ("/vo/busy/f", "being written"), ("/vo/busy", "/vo/busy/f has a replica being written")):
        refused = await run_cli(api.url, api.admin_token, "mv", source, "/vo/elsewhere/x")
        assert refused.returncode != 0 and why in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert await database["files"].count_documents({"_id": {"$regex": "^/vo/elsewhere"}}) == 0
    await move(database, ADMIN, "/vo/ds/out", "/vo/elsewhere/out")  # a file no dataset holds moves
    await dataset_contents.detach_files(database, ADMIN, "vo:kept", ["/vo/ds/in"])
    await move(database, ADMIN, "/vo/ds", "/vo/elsewhere/ds")
    assert sorted([d["_id"] async for d in database["files"].find({"_id": {"$regex": "^/vo/elsewhere/"}})]) == [
        "/vo/elsewhere/ds/in", "/vo/elsewhere/out"]


async def test_a_path_whose_moved_replica_left_the_catalogue_is_free_and_its_bytes_found_dark(
    api: RunningApi, live_ses: LiveSEs, database: AsyncDatabase[Document], admin: Client,
    payload: Callable[[int], Payload],
) -> None:
    se = await live_ses.add("file", name="FORGOT")
    data, other = payload(1000), payload(2000)
    await cli(api, "upload", str(data.path), "/cta/fg/f", "--se", se.name)
    await cli(api, "mv", "/cta/fg/f", "/cta/fg/g")
    # (as JSON: a table wraps the detail column to the width left by the local path)
    assert HELD in await cli(api, "upload", str(other.path), "/cta/fg/f", "--se", se.name, "--json", code=1)
    # An administrator forgets the replica in the catalogue only: its bytes are dark data now.
    assert not (await admin.remove_replicas([{"lfn": "/cta/fg/g", "se": se.name}]))["failed"]
    run = await admin.queue_audit(se.name)
    await Auditor(audit_settings(api.settings, dark_grace_s=0), database).run(max_cycles=1)
    assert [e["lfn"] async for e in admin.audit_entries(str(run["id"]), "dark")] == ["/cta/fg/f"]
    await cli(api, "upload", str(other.path), "/cta/fg/f", "--se", se.name)
    assert live_ses.stored_file(se.name, "/cta/fg/f").read_bytes() == other.path.read_bytes()
