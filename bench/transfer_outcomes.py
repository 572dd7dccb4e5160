"""Database commands per request when transfers end every way at once: copied, failed for good,
failed and retried until their attempts run out, found at the destination already.

One transfer worker in this process, on two local disk SEs and FerretDB (the embedded default),
drains N requests: a quarter of each kind. Prints JSON with the commands the process sent per
request and per attempt, and the seconds it took. Run it on two trees to compare them:

    python -m bench.transfer_outcomes --requests 400
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import zlib
from pathlib import Path
from typing import Any

from bench.harness import emit, testbed
from cairn.components import index_specs
from catalogue.files import register_files
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element
from kernel import event_loop
from kernel.db import COMMANDS, close_client, ensure_indexes, get_database
from kernel.principal import Principal
from kernel.settings import load_settings
from transfers import link_stats, queueing, request_reads
from transfers import requests as rq
from transfers.worker import TransferWorker

ADMIN = Principal(sub="bench", vo="bench", groups=("admin",), scopes=frozenset({"admin"}))
MAX_ATTEMPTS = 2


def disk_se(name: str, root: Path) -> StorageElement:
    root.mkdir(parents=True, exist_ok=True)
    return StorageElement(name=name, site="SITE", protocols=[Protocol(scheme="file", prefix=str(root))])


async def run(n: int, scratch: Path, uri: str) -> dict[str, Any]:
    settings = load_settings(mongodb_uri=uri, database="bench", var_dir=scratch / "var")
    settings = settings.model_copy(update={"transfers": settings.transfers.model_copy(update={
        "retry_base_s": 0.05, "retry_cap_s": 0.1, "idle_sleep_s": 0.05})})
    db = get_database(settings)
    await ensure_indexes(db, index_specs())
    src, dst = disk_se("SRC", scratch / "src"), disk_se("DST", scratch / "dst")
    for se in (src, dst):
        await put_storage_element(db, se)
    kinds = ["ok", "gone", "blocked", "there"]
    lfns = {kind: [f"/bench/{kind}/f{i:05d}" for i in range(n // 4)] for kind in kinds}
    files = []
    for kind, names in lfns.items():
        for lfn in names:
            data = os.urandom(1024)
            on = [src, dst] if kind == "there" else [src]
            for se in on:
                path = Path(se.protocols[0].prefix) / lfn.lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                if kind != "gone":
                    path.write_bytes(data)
            files.append({"lfn": lfn, "size": 1024, "adler32": f"{zlib.adler32(data):08x}",
                          "replicas": [{"se": se.name} for se in on]})
    for start in range(0, len(files), 1000):
        await register_files(db, ADMIN, files[start:start + 1000])
    # A destination directory leading out of the SE: refused on every attempt (retried, then given up).
    (scratch / "outside").mkdir()
    (Path(dst.protocols[0].prefix) / "bench/blocked").parent.mkdir(parents=True, exist_ok=True)
    (Path(dst.protocols[0].prefix) / "bench/blocked").symlink_to(scratch / "outside")
    await queueing.submit(db, "transfer", [{"lfn": lfn, "dest_se": "DST"} for names in lfns.values() for lfn in names],
                          requester="bench", max_attempts=MAX_ATTEMPTS)
    worker = TransferWorker(settings, db)
    sent = COMMANDS.sent
    started = time.perf_counter()
    task = asyncio.create_task(worker.run())
    polls = 1
    while await db[rq.REQUESTS].count_documents({"state": {"$in": list(rq.OPEN_STATES)}}):
        polls += 1
        await asyncio.sleep(0.2)
    seconds = time.perf_counter() - started
    worker.stop()
    await task
    commands = COMMANDS.sent - sent - polls  # the polling above is this process's too: one command each
    states = await request_reads.progress(db, {})
    [link] = await link_stats.link_statistics(db)
    attempts = sum(d["attempts"] for d in await db[rq.REQUESTS].find({}, {"attempts": 1}).to_list())
    await close_client()
    return {"requests": len(files), "attempts": attempts, "states": {k: v for k, v in states.items() if v},
            "link": {"done": link["done"], "failed": link["failed"], "failures": link["failures"]},
            "seconds": round(seconds, 2), "db_commands": commands,
            "db_commands_per_request": round(commands / len(files), 2),
            "db_commands_per_attempt": round(commands / attempts, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests, a quarter of each outcome (400)")
    args = parser.parse_args()
    with testbed("cairn-bench-outcomes-") as bed:
        emit({"database": bed.database_kind, **event_loop.run(run(args.requests, bed.scratch, bed.database_uri))})


if __name__ == "__main__":
    main()
