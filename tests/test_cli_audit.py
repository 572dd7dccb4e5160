"""`cairn audit` through `python -m cairn` against the in-process API, with an auditor daemon
running meanwhile: run (progress on stderr), list, show --dark (table and Parquet), show --mismatch,
clean-dark."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow.parquet as pq
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from tests.fixtures.audit import audit_settings, on_storage, write_on_storage
from tests.fixtures.cli import run_cli
from tests.fixtures.live_ses import LiveSEs
from transfers.auditor import Auditor
from transfers.reaper import Reaper


async def test_audit_run_list_show_and_clean_dark_from_the_cli(
    database: AsyncDatabase[Document], live_ses: LiveSEs, tmp_path: Path,
) -> None:
    api = live_ses.api
    fast = audit_settings(api.settings, dark_grace_s=0)
    se = await live_ses.add("file", name="CLI-SE")
    await write_on_storage(se, "/cta/stray.bin", b"stray", fast)
    await write_on_storage(se, "/cta/grown.bin", b"grown", fast)  # registered below as 3 bytes
    registered = await run_cli(api.url, api.admin_token, "register", "/cta/grown.bin", "--size", "3", "--adler32",
                               "00010001", "--se", "CLI-SE")
    assert registered.returncode == 0, registered.stderr
    auditor = Auditor(fast, database)
    task = asyncio.create_task(auditor.run())
    try:
        done = await run_cli(api.url, api.admin_token, "audit", "run", "CLI-SE", "--poll", "0.2", "--json")
    finally:
        auditor.stop()
        await task
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "done" and (run["counts"]["dark"], run["counts"]["size_mismatch"]) == (1, 1)
    assert f"{run['id']} done: storage 2" in done.stderr  # progress on stderr

    listed = await run_cli(api.url, api.admin_token, "audit", "list", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [run["id"]]
    shown = await run_cli(api.url, api.admin_token, "audit", "show", run["id"], "--dark")
    assert shown.returncode == 0 and "/cta/stray.bin" in shown.stdout and "/cta/grown.bin" not in shown.stdout
    mismatch = await run_cli(api.url, api.admin_token, "audit", "show", run["id"], "--mismatch", "--format", "json")
    assert mismatch.returncode == 0, mismatch.stderr
    [entry] = [json.loads(line) for line in mismatch.stdout.splitlines()]
    assert (entry["kind"], entry["lfn"], entry["size"], entry["storage_size"], entry["marked"]) == (
        "size_mismatch", "/cta/grown.bin", 3, 5, True)
    parquet = tmp_path / "dark.parquet"
    saved = await run_cli(api.url, api.admin_token, "audit", "show", run["id"], "--dark", "--format", "parquet",
                          "-o", str(parquet))
    assert saved.returncode == 0, saved.stderr
    assert pq.read_table(parquet).column("lfn").to_pylist() == ["/cta/stray.bin"]

    user = await run_cli(api.url, api.token(), "audit", "clean-dark", run["id"])
    assert user.returncode != 0 and "admin" in user.stdout + user.stderr
    cleaned = await run_cli(api.url, api.admin_token, "audit", "clean-dark", run["id"])
    assert cleaned.returncode == 0 and "1 deletion(s) queued" in cleaned.stdout, cleaned.stderr
    await Reaper(fast, database).run(max_cycles=1)
    assert await on_storage(se, "/cta/stray.bin", fast) is None
    missing = await run_cli(api.url, api.admin_token, "audit", "show", "audit-000000000000")
    assert missing.returncode != 0 and "does not exist" in missing.stdout + missing.stderr
