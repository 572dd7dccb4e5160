"""Replication throughput through the transfer daemons, against command-line baselines.

Scenarios, each a bulk replication request served by `cairn daemon transfers` worker processes
on FerretDB (the embedded default), timed from submission until every request is done, after
an untimed warm-up replication (`--warmup` files) that waits for the workers to be up:
- small: many 1 MiB files between two XRootD servers (client-routed by XrdCl below the
  workers' `route_below_bytes`, else third-party copy);
- big: a few 1 GiB files between the same two servers (third-party copy);
- s3: many 1 MiB files from S3 (moto) to XRootD (streamed through the worker).
In the same run the same bytes move with `gfal-copy` one file at a time (root:// TPC, a subset
of the small files when there are many: files/s is a rate), `xrdcp --parallel 8 -r` (without
and with `--cksum adler32`: Cairn verifies every copy; the plain one just before Cairn's small
files and just after them, its idle workers stopped, reported alone and as their mean, since
this VM's speed drifts within a run), and a plain `cp -r` of the source directory; the S3 files
move through an aioboto3 download + `xrdcp` upload pipeline, `--pipeline` files at a time. Each
timed phase starts after a `sync` and ends by removing what it wrote, after an untimed primer
copy (`removed`: so that each starts alike). Prints JSON with files/s, MB/s, ratios, the
database commands the workers sent per file (`link_stats`' `db_commands`), and the CPU
milliseconds per file of each process involved (database, workers, each XRootD server, xrdcp;
from /proc): on a machine of few cores their total bounds the rate. `--worker-env KEY=VALUE`
sets the workers' settings; `--profile DIR` runs the workers under cProfile (one `.prof` per
worker in DIR).

    python -m bench.transfers                                  # 1000 x 1 MiB, 4 x 1 GiB, 1000 x 1 MiB S3
    python -m bench.transfers --small-count 200 --big-count 2 --big-mib 256 --s3-count 200
    python -m bench.transfers --small-count 200 --big-count 1 --big-mib 64 --s3-count 50 --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import aioboto3
from pymongo.asynchronous.database import AsyncDatabase

from bench.harness import CpuMeter, Testbed, emit, rate, testbed
from bench.storage_io import run_command
from cairn.components import index_specs
from cairn.embedded_xrootd import XRootDServer, start_xrootd_pair
from catalogue.files import register_files
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element
from kernel import event_loop
from kernel.db import Document, close_client, ensure_indexes, get_database
from kernel.principal import Principal
from kernel.process import child_preexec
from kernel.settings import load_settings
from storage_plugins.registry import close_plugins, plugin_for
from transfers import link_stats, queueing, request_reads
from transfers import requests as rq

ROOT = Path(__file__).resolve().parent.parent
ADMIN = Principal(sub="bench", vo="bench", groups=("admin",), scopes=frozenset({"admin"}))
S3_SECRETS = {"access_key": "bench", "secret_key": "bench"}


def xrootd_se(name: str, server: XRootDServer) -> StorageElement:
    return StorageElement(name=name, site=name, protocols=[
        Protocol(scheme="davs", host="127.0.0.1", port=server.http_port, prefix="/se", third_party_copy=True,
                 priority=1, extra={"ca_file": str(server.tls.ca_file)}),
        Protocol(scheme="root", host="127.0.0.1", port=server.root_port, prefix="/se", third_party_copy=True,
                 priority=2),
    ])


def s3_se(moto_port: int) -> StorageElement:
    return StorageElement(name="S3", site="S3", protocols=[Protocol(
        scheme="s3", host="bench", prefix="/se",
        extra={"endpoint_url": f"http://127.0.0.1:{moto_port}", "path_style": "true"})])


def write_random(path: Path, size: int) -> str:
    """Random bytes to path in 1 MiB pieces; returns their adler32."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = 1
    with path.open("wb") as handle:
        left = size
        while left:
            data = os.urandom(min(left, 1 << 20))
            value = zlib.adler32(data, value)
            handle.write(data)
            left -= len(data)
    return f"{value:08x}"


def make_dataset(server: XRootDServer, name: str, count: int, size: int) -> list[dict[str, Any]]:
    """Files written straight into the source server's data directory under /se/bench/<name>/."""
    files = []
    for index in range(count):
        lfn = f"/bench/{name}/f{index:05d}"
        adler = write_random(server.data_dir / "se" / lfn.lstrip("/"), size)
        files.append({"lfn": lfn, "size": size, "adler32": adler, "replicas": [{"se": "XRD-A"}]})
    return files


async def upload_to_s3(moto_port: int, files: list[dict[str, Any]], source_dir: Path) -> None:
    options = {"endpoint_url": f"http://127.0.0.1:{moto_port}", "path_style": True, **S3_SECRETS}
    s3 = plugin_for("s3://bench/", options)
    client = await s3.client()  # type: ignore[attr-defined]
    await client.create_bucket(Bucket="bench")
    sem = asyncio.Semaphore(16)

    async def one(doc: dict[str, Any]) -> None:
        async with sem:
            await s3.put(source_dir / doc["lfn"].lstrip("/"), f"s3://bench/se{doc['lfn']}")

    await asyncio.gather(*(one(d) for d in files))
    await close_plugins()


async def commands_and_files(db: AsyncDatabase[Document]) -> tuple[int, int]:
    """Database commands the workers reported so far, and the files they did over those links."""
    links = await link_stats.link_statistics(db)
    return sum(link["db_commands"] for link in links), sum(link["done"] for link in links if link["db_commands"])


async def written_out() -> None:
    """`sync` before a timed phase: otherwise the kernel writes the previous phase's data out
    during this one, on the same two cores."""
    await asyncio.to_thread(os.sync)


async def removed(path: Path) -> None:
    """Remove what a timed phase wrote, once it is measured. On this VM, writing into memory the
    guest freed a while ago costs about twice as much as into memory just freed (presumably given
    back to the host meanwhile): the same xrdcp cost its destination server 2.6 CPU-ms per file
    when it ran right after a deletion and 5.2-5.9 otherwise. Each phase deleting its own writes
    gives the next one the same start."""
    await asyncio.to_thread(shutil.rmtree, path, True)


async def replicate(db: AsyncDatabase[Document], files: list[dict[str, Any]], dest: str,
                    meter: CpuMeter) -> dict[str, Any]:
    """Submit one bulk request and wait until it is all done; files/s and MB/s from the submission
    to the last request's end (its `finished`), the database commands the workers reported per
    file meanwhile, and the CPU each role spent per file."""
    await written_out()
    commands_before, files_before = await commands_and_files(db)
    meter.start()
    started = time.time()
    result = await queueing.submit_transfers(db, [{"lfn": f["lfn"], "dest_se": dest} for f in files], requester="bench")
    query = {"submission": result["submission"]}
    # Seldom, and asking only whether one request is still open: the database the workers share
    # then skips ended requests before decoding them (counting every state each second decoded
    # the whole submission: a tenth of the database's CPU with 3000 files).
    still_open = {**query, "state": {"$in": list(rq.OPEN_STATES)}}
    while True:
        if not await db[rq.REQUESTS].find_one(still_open, {"_id": 1}):
            break
        await asyncio.sleep(1.0)
    counts = await request_reads.progress(db, query)
    last = await db[rq.REQUESTS].find_one(query, {"finished": 1}, sort=[("finished", -1)])
    seconds = last["finished"].timestamp() - started if last and last.get("finished") else time.time() - started
    cpu = meter.ms_per(len(files))
    modes: dict[str, int] = {}
    async for doc in db[rq.REQUESTS].find({**query, "state": "done"}, {"result.mode": 1}):
        mode = doc.get("result", {}).get("mode", "?")
        modes[mode] = modes.get(mode, 0) + 1
    await asyncio.sleep(1.0)  # the workers' last cycle reports its commands
    commands_after, files_after = await commands_and_files(db)
    per_file = (commands_after - commands_before) / (files_after - files_before) if files_after > files_before else None
    return {"done": counts["done"], "failed": counts["failed"], "modes": modes,
            "db_commands_per_file": round(per_file, 2) if per_file is not None else None,
            "cpu_ms_per_file": cpu, **rate(len(files), sum(f["size"] for f in files), seconds)}


async def s3_pipeline(moto_port: int, b: XRootDServer, files: list[dict[str, Any]], scratch: Path,
                      parallel: int) -> dict[str, Any]:
    """The S3 files moved without Cairn: an aioboto3 download to local disk, then `xrdcp` up to
    the destination server, `parallel` files at a time."""
    await run_command("xrdfs", f"127.0.0.1:{b.root_port}", "mkdir", "-p", "/pipeline")
    sem = asyncio.Semaphore(parallel)
    landing = Path(tempfile.mkdtemp(dir=scratch, prefix="pipeline-"))
    session = aioboto3.Session(aws_access_key_id=S3_SECRETS["access_key"],
                               aws_secret_access_key=S3_SECRETS["secret_key"], region_name="us-east-1")
    await written_out()
    started = time.perf_counter()
    async with session.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}") as s3:

        async def one(index: int, doc: dict[str, Any]) -> None:
            async with sem:
                local = landing / f"f{index:05d}"
                response = await s3.get_object(Bucket="bench", Key=f"se{doc['lfn']}")
                async with response["Body"] as body:
                    local.write_bytes(await body.read())
                await run_command("xrdcp", "-s", "-f", str(local), f"{b.root_url}/pipeline/f{index:05d}")
                local.unlink()

        await asyncio.gather(*(one(i, d) for i, d in enumerate(files)))
    measured = rate(len(files), sum(f["size"] for f in files), time.perf_counter() - started)
    await removed(b.data_dir / "pipeline")
    return measured


async def baselines(a: XRootDServer, b: XRootDServer, name: str, files: list[dict[str, Any]], scratch: Path,
                    gfal_max: int, plain: dict[str, Any] | None = None) -> dict[str, Any]:
    """gfal-copy one file at a time, xrdcp --parallel 8 -r (unless `plain` is its figure, timed
    already), and cp -r of the same files (none without files: `--big-count 0` leaves that
    scenario out)."""
    if not files:
        return {}
    size = files[0]["size"]
    out: dict[str, Any] = {}
    src_dir = a.data_dir / "se" / "bench" / name
    await written_out()
    started = time.perf_counter()
    await run_command("cp", "-r", str(src_dir), str(scratch / f"cp-{name}"))
    out["cp"] = rate(len(files), size * len(files), time.perf_counter() - started)
    await removed(scratch / f"cp-{name}")
    # As the issue compares (no checksum), and verified end to end as Cairn verifies every copy.
    for label, options in (("xrdcp --parallel 8", ()), ("xrdcp --parallel 8 --cksum adler32", ("--cksum", "adler32"))):
        target = f"/xrdcp-{name}{'-cksum' if options else ''}"
        out[label] = plain if plain and not options else await xrdcp_parallel(a, b, name, files, options, target=target)
    gfal_copy = shutil.which("gfal-copy")
    if gfal_copy is None:
        out["gfal-copy"] = "gfal-copy not installed"
        return out
    env = {**os.environ, "GFAL_PYTHONBIN": "/usr/bin/python3", "X509_CERT_DIR": str(a.tls.ca_dir)}
    subset = files[:gfal_max]
    started = time.perf_counter()
    for doc in subset:
        await run_command(gfal_copy, "-f", "-p", f"{a.root_url}/se{doc['lfn']}", f"{b.root_url}/gfal{doc['lfn']}",
                          env=env)
    out["gfal-copy one at a time"] = rate(len(subset), size * len(subset), time.perf_counter() - started)
    await removed(b.data_dir / "gfal")
    return out


async def xrdcp_parallel(a: XRootDServer, b: XRootDServer, name: str, files: list[dict[str, Any]],
                         options: tuple[str, ...], *, target: str) -> dict[str, Any]:
    """`xrdcp --parallel 8 -r` of the dataset's directory into `target` on b, with its rate and the
    CPU it cost (xrdcp and both servers)."""
    size = files[0]["size"]
    await run_command("xrdfs", f"127.0.0.1:{b.root_port}", "mkdir", "-p", target)
    await written_out()
    meter = CpuMeter(xrootd_roles(a, b), ended_children="xrdcp")
    meter.start()
    started = time.perf_counter()
    await run_command("xrdcp", "-s", "-f", "-r", "--parallel", "8", *options, f"{a.root_url}/se/bench/{name}",
                      f"{b.root_url}{target}/")
    measured = {**rate(len(files), size * len(files), time.perf_counter() - started),
                "cpu_ms_per_file": meter.ms_per(len(files))}
    await removed(b.data_dir / target.lstrip("/"))
    return measured


def bracketed(before: dict[str, Any], after: dict[str, Any], nbytes: int) -> dict[str, Any]:
    """The mean of a baseline timed before and after Cairn's run (by time, so files/s is their
    harmonic mean): on a VM whose speed drifts, what Cairn's run in between is fairly compared with."""
    seconds = (before["seconds"] + after["seconds"]) / 2
    return rate(before["files"], nbytes, seconds)


def xrootd_roles(a: XRootDServer, b: XRootDServer) -> dict[str, list[int | None]]:
    return {"xrootd source": [a.process.pid], "xrootd destination": [b.process.pid]}


def ratios(cairn: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    return {f"cairn / {k}": round(cairn["MB_per_s"] / v["MB_per_s"], 2) for k, v in base.items()
            if isinstance(v, dict) and v.get("MB_per_s")}  # a baseline left out (--gfal-max 0) has none


def start_workers(count: int, env: dict[str, str], log_dir: Path,
                  profile_dir: Path | None = None) -> list[subprocess.Popen[bytes]]:
    procs = []
    for index in range(count):
        profiler = ["-m", "cProfile", "-o", str(profile_dir / f"worker-{index}.prof")] if profile_dir else []
        with (log_dir / f"worker-{index}.log").open("wb") as log:
            procs.append(subprocess.Popen([sys.executable, *profiler, "-m", "cairn", "daemon", "transfers"], env=env,
                                          stdout=log, stderr=subprocess.STDOUT, preexec_fn=child_preexec))
    return procs


async def measure(args: argparse.Namespace, bed: Testbed, a: XRootDServer, b: XRootDServer) -> dict[str, Any]:
    uri, moto_port, scratch = bed.database_uri, bed.moto_port, bed.scratch
    settings = load_settings(mongodb_uri=uri, database="bench", var_dir=scratch / "var")
    db = get_database(settings)
    await ensure_indexes(db, index_specs())
    for se in (xrootd_se("XRD-A", a), xrootd_se("XRD-B", b), s3_se(moto_port)):
        await put_storage_element(db, se)
    small = make_dataset(a, "small", args.small_count, args.small_kib << 10)
    warm = make_dataset(a, "warm", args.warmup, args.small_kib << 10)
    big = make_dataset(a, "big", args.big_count, args.big_mib << 20)
    s3_files = [{**f, "lfn": f["lfn"].replace("/small/", "/s3/"), "replicas": [{"se": "S3"}]}
                for f in small[:args.s3_count]]
    for doc in s3_files:  # the same bytes under the S3 names, so the upload reads them from disk
        target = a.data_dir / "se" / doc["lfn"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(a.data_dir / "se" / doc["lfn"].replace("/s3/", "/small/").lstrip("/"), target)
    await upload_to_s3(moto_port, s3_files, a.data_dir / "se")
    every = small + big + s3_files + warm
    for start in range(0, len(every), 1000):
        await register_files(db, ADMIN, every[start:start + 1000])

    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update({"PYTHONPATH": str(ROOT), "CAIRN_MONGODB_URI": uri, "CAIRN_DATABASE": "bench",
                "CAIRN_LOG_LEVEL": "WARNING", "X509_CERT_DIR": str(a.tls.ca_dir),
                "CAIRN_STORAGE_CREDENTIALS": json.dumps({"S3": S3_SECRETS}),
                "CAIRN_TRANSFERS__IDLE_SLEEP_S": "0.2"})
    env.update(dict(item.split("=", 1) for item in args.worker_env))
    (scratch / "logs").mkdir()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    # Untimed, so that the first timed phase starts as the others do: right after a phase's writes
    # were removed (`removed`).
    await xrdcp_parallel(a, b, "small", small, (), target="/xrdcp-small-primer")
    # The baseline just before Cairn's run and just after it (below), each into its own directory.
    xrdcp_before = await xrdcp_parallel(a, b, "small", small, (), target="/xrdcp-small-before")
    workers = start_workers(args.workers, env, scratch / "logs", args.profile)
    results: dict[str, Any] = {
        "sizes": {"small": [args.small_count, f"{args.small_kib} KiB"], "big": [args.big_count, f"{args.big_mib} MiB"],
                  "s3": [args.s3_count, f"{args.small_kib} KiB"]},
        "workers": args.workers, "database": bed.database_kind,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    meter = CpuMeter({"database": [bed.database_pid], "workers": [w.pid for w in workers], **xrootd_roles(a, b),
                      "this benchmark": [os.getpid()]})
    try:
        if warm:  # untimed: the workers' start (imports, first claim) is not part of any scenario
            results["warm-up (untimed)"] = await replicate(db, warm, "XRD-B", meter)
        results["cairn"] = {}
        xrdcp_after: dict[str, Any] | None = None
        for label, files in (("small XRD-A→XRD-B", small), ("big XRD-A→XRD-B", big), ("small S3→XRD-B", s3_files)):
            results["cairn"][label] = await replicate(db, files, "XRD-B", meter)
            if files:  # where the workers wrote them: /se/bench/<dataset>/ on the destination
                await removed(b.data_dir / "se" / files[0]["lfn"].rsplit("/", 1)[0].lstrip("/"))
            if files is small:  # the baseline again right away, the idle workers stopped meanwhile
                for proc in workers:
                    proc.send_signal(signal.SIGSTOP)
                try:
                    xrdcp_after = await xrdcp_parallel(a, b, "small", small, (), target="/xrdcp-small")
                finally:
                    for proc in workers:
                        proc.send_signal(signal.SIGCONT)
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(timeout=30)
    results["baselines"] = {
        "small": await baselines(a, b, "small", small, scratch, args.gfal_max, plain=xrdcp_after),
        "big": await baselines(a, b, "big", big, scratch, args.gfal_max),
        "s3": {f"aioboto3 + xrdcp, {args.pipeline} at a time":
               await s3_pipeline(moto_port, b, s3_files, scratch, args.pipeline)} if s3_files else {},
    }
    small_bases = results["baselines"]["small"]
    small_bases["xrdcp --parallel 8, before Cairn"] = xrdcp_before
    small_bases["xrdcp --parallel 8, before and after"] = bracketed(
        xrdcp_before, small_bases["xrdcp --parallel 8"], sum(f["size"] for f in small))
    results["ratios"] = {
        "small": ratios(results["cairn"]["small XRD-A→XRD-B"], results["baselines"]["small"]),
        "big": ratios(results["cairn"]["big XRD-A→XRD-B"], results["baselines"]["big"]),
        "s3": ratios(results["cairn"]["small S3→XRD-B"], results["baselines"]["s3"]),
    }
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    await close_client()
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the database, two XRootD servers and moto; measure; clean everything up."""
    with testbed("cairn-bench-transfers-") as bed:
        a, b = start_xrootd_pair(bed.xrootd_base)
        bed.on_exit(a.stop)
        bed.on_exit(b.stop)
        return event_loop.run(measure(args, bed, a, b))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small-count", type=int, default=1000, help="small files XRootD→XRootD (1000)")
    parser.add_argument("--small-kib", type=int, default=1024, help="size of a small file in KiB (1024)")
    parser.add_argument("--big-count", type=int, default=4, help="big files (4)")
    parser.add_argument("--big-mib", type=int, default=1024, help="size of a big file in MiB (1024)")
    parser.add_argument("--s3-count", type=int, default=1000,
                        help="small files S3→XRootD (1000, at most --small-count)")
    parser.add_argument("--warmup", type=int, default=16,
                        help="small files replicated before the timed scenarios, so that the workers are up (16)")
    parser.add_argument("--workers", type=int, default=2, help="transfer worker processes (2)")
    parser.add_argument("--gfal-max", type=int, default=100, help="files gfal-copy copies one by one (100)")
    parser.add_argument("--pipeline", type=int, default=8,
                        help="S3 files the aioboto3 + xrdcp baseline moves at once (8)")
    parser.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                        help="set in the workers' environment, e.g. CAIRN_TRANSFERS__SETTLE_EVERY_S=2 (repeatable)")
    parser.add_argument("--profile", type=Path, help="run the workers under cProfile, writing worker-N.prof here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    emit(run(parse_args()))
