"""Benchmark: metadata queries and dataset listing.

    python bench/metadata_query.py [--files 200000] [--dataset-files 50000] [--mongodb-uri URI]

Starts a database (FerretDB in a temp dir unless --mongodb-uri or $CAIRN_MONGODB_URI) and the
API in this process; registers N files in batches with 5 metadata fields (run int, energy float,
particle string, taken datetime, tags strings; all declared, so indexed on MongoDB), then times
through the SDK over HTTP:
- a selective query (`run=<r> particle=<p>`, N/500 files) and a broad one
  (`energy>=0.5`, about half): time to the first result and to the last;
- listing a dataset of `--dataset-files` files (streamed NDJSON, and as Parquet).
The baseline in the same run is the bare database `find` of the same filter (no API, no ACL,
no JSON), so the API's overhead is visible. Prints JSON, with `docs_examined` and the plan where
the database's explain reports them (MongoDB's executionStats; FerretDB reports only whether
the filter was pushed down).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from cairn.components import index_specs  # noqa: E402
from cairn.embedded_db import start_ferretdb  # noqa: E402
from cairn.sdk import Client  # noqa: E402
from cairn.server import build_app  # noqa: E402
from catalogue.dataset_contents import attach_files  # noqa: E402
from catalogue.datasets import DidIn, create_did  # noqa: E402
from catalogue.files import register_files  # noqa: E402
from catalogue.find import explain_query, query_filter  # noqa: E402
from catalogue.metadata_fields import FieldDeclaration, declare_field  # noqa: E402
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element  # noqa: E402
from kernel import event_loop  # noqa: E402
from kernel.db import ensure_indexes, get_database  # noqa: E402
from kernel.principal import Principal  # noqa: E402
from kernel.settings import load_settings  # noqa: E402
from kernel.web import ISSUER  # noqa: E402

ADMIN = Principal(sub="bench", vo="bench", groups=("bench",), scopes=frozenset({"admin"}))
FIELDS = {"run": "int", "energy": "float", "particle": "string", "taken": "datetime", "tags": "strings"}
PARTICLES = ("proton", "gamma", "electron", "muon")
RUNS = 500


def file_of(i: int) -> dict[str, Any]:
    return {"lfn": f"/bench/d{i % 100:03d}/f{i:08d}", "size": 1000 + i % 997, "adler32": f"{i % 2**32:08x}",
            "replicas": [{"se": "BENCH-DISK"}],
            "meta": {"run": i % RUNS, "energy": (i * 7919 % 1000) / 1000, "particle": PARTICLES[i % 4],
                     "taken": (dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i)).isoformat(),
                     "tags": [f"t{i % 10}", "bench"]}}


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def examined(plan: dict[str, Any]) -> dict[str, Any]:
    stats = plan.get("executionStats") or {}
    winning = (plan.get("queryPlanner") or {}).get("winningPlan", {})
    out: dict[str, Any] = {"docs_examined": stats.get("totalDocsExamined"),
                           "keys_examined": stats.get("totalKeysExamined"), "returned": stats.get("nReturned")}
    if "filterPushdown" in plan:
        out["ferretdb_filter_pushdown"] = plan["filterPushdown"]
    if winning:
        out["plan"] = json.dumps(winning)[:300]
    return out


async def timed_stream(stream: Any) -> dict[str, Any]:
    start = time.perf_counter()
    first = None
    count = 0
    async for _ in stream:
        if first is None:
            first = time.perf_counter() - start
        count += 1
    return {"results": count, "first_s": round(first or 0.0, 4), "total_s": round(time.perf_counter() - start, 4)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--dataset-files", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--mongodb-uri", default=os.environ.get("CAIRN_MONGODB_URI"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cairn-bench-"))
    server = None
    uri = args.mongodb_uri
    if uri is None:
        server = start_ferretdb(tmp / "db")
        uri = server.uri
    settings = load_settings(mongodb_uri=uri, database=f"bench_{int(time.time())}", var_dir=tmp / "var",
                             api_port=0)
    db = get_database(settings)
    report: dict[str, Any] = {"database": "ferretdb" if server else uri.split("@")[-1], "files": args.files}
    try:
        await ensure_indexes(db, index_specs())
        for key, kind in FIELDS.items():
            await declare_field(db, FieldDeclaration(key=key, type=kind))  # type: ignore[arg-type]
        await put_storage_element(db, StorageElement(name="BENCH-DISK", site="BENCH",
                                                     protocols=[Protocol(scheme="file", prefix=str(tmp / "se"))]))
        start = time.perf_counter()
        for low in range(0, args.files, args.batch):
            result = await register_files(db, ADMIN, [file_of(i) for i in range(low, min(low + args.batch,
                                                                                        args.files))])
            assert not result["failed"], list(result["failed"].items())[:3]
        report["register_files_per_s"] = round(args.files / (time.perf_counter() - start))
        progress(f"registered {args.files} files")

        dataset_files = min(args.dataset_files, args.files)
        await create_did(db, ADMIN, DidIn(did="bench:big"))
        start = time.perf_counter()
        for low in range(0, dataset_files, args.batch):
            await attach_files(db, ADMIN, "bench:big", [file_of(i)["lfn"] for i in range(low, min(
                low + args.batch, dataset_files))])
        report["dataset_attach_files_per_s"] = round(dataset_files / (time.perf_counter() - start))
        progress(f"attached {dataset_files} files to bench:big")

        app = build_app(settings)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        token = app[ISSUER].issue(sub="bench", vo="bench", groups=("bench",), scopes=("admin",))
        try:
            async with Client(f"http://127.0.0.1:{port}", token) as client:
                run = RUNS // 3
                queries = {"selective": f"run={run} particle={PARTICLES[run % 4]}", "broad": "energy>=0.5"}
                for label, query in queries.items():
                    flt = await query_filter(db, query)
                    baseline = await timed_stream(db["files"].find(flt, {"_id": 1}).batch_size(10_000))
                    api = await timed_stream(client.find(query))
                    report[f"{label}_query"] = {"query": query, "api": api, "bare_find": baseline,
                                                **examined(await explain_query(db, query))}
                    progress(f"{label} query done")
                listing = await timed_stream(client.did_contents("bench:big"))
                start = time.perf_counter()
                size = await client.did_contents_to_file("bench:big", tmp / "big.parquet")
                report["dataset_listing"] = {"files": dataset_files, "ndjson": listing,
                                             "parquet": {"bytes": size,
                                                         "total_s": round(time.perf_counter() - start, 4)}}
        finally:
            await runner.cleanup()
        print(json.dumps(report, indent=2))
    finally:
        # The API server closed the process's client on cleanup: ask for it anew.
        await get_database(settings).client.drop_database(settings.database)
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    event_loop.run(main())
