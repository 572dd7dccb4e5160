"""Benchmark: the auditor comparing an SE's storage dump with its catalogue replicas.

    python bench/audit.py [--sizes 20000,100000,1000000] [--page 10000] [--mongodb-uri URI]
                          [--traced-up-to N] [--seed-concurrency K]
    python bench/audit.py --sort-only --sizes 200000,1000000

For each size N: a fresh database (FerretDB in a temp dir unless --mongodb-uri or
$CAIRN_MONGODB_URI) holding N files with a replica on a local-disk SE, registered through
`catalogue.files.register_files` in batches of BATCH, K batches in flight; and a site dump of N
lines (size and adler32 on each) written on that SE in random order — 1% of the catalogue's
replicas left out (lost) and 1% extra paths (dark). The audit run (`transfers.auditor.run_audit`:
external sort of the dump, merge with the catalogue walked in LFN pages, lost replicas marked)
is timed in a process of its own, which reports its peak RSS: only the audit (and the imports)
is in it, none of the bench's registration. The baseline, in the same run and the same kind of
process, is reading the dump alone (the same plugin stream, lines split, no sort and no
catalogue): its seconds and peak RSS. Up to --traced-up-to replicas the audit runs once more,
in a third process under tracemalloc, for its peak Python memory (slower; its time is not
reported). Memory is flat when the peaks do not grow with N. With --sort-only, only the storage
side is measured, without a database: a shuffled dump of N lines sorted externally and
streamed, its time and peak memory. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymongo import AsyncMongoClient  # noqa: E402
from pymongo.asynchronous.database import AsyncDatabase  # noqa: E402

from bench.harness import emit  # noqa: E402
from cairn.components import index_specs  # noqa: E402
from cairn.embedded_db import start_ferretdb  # noqa: E402
from catalogue.files import register_files  # noqa: E402
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element  # noqa: E402
from kernel import event_loop  # noqa: E402
from kernel.db import Document, ensure_indexes  # noqa: E402
from kernel.principal import Principal  # noqa: E402
from kernel.settings import Settings, load_settings  # noqa: E402
from storage_plugins.posix import PosixPlugin, file_url  # noqa: E402
from transfers import audit_runs  # noqa: E402
from transfers.audit_compare import dump_lines, sorted_dump  # noqa: E402
from transfers.auditor import run_audit  # noqa: E402

ADMIN = Principal(sub="bench", vo="bench", groups=("bench",), scopes=frozenset({"admin"}))
BATCH = 10000
SE = "BENCH-DISK"
DUMP = "/dumps/bench.txt"


def lfn(i: int) -> str:
    return f"/bench/d{i % 100:02d}/f{i:08d}"


async def catalogue(db: AsyncDatabase[Document], root: Path, n: int, concurrency: int) -> None:
    """N files with a replica on SE (no bytes: the dump stands for the storage), registered as a
    client would, `concurrency` batches at a time (the database works on one while Python builds
    the next)."""
    await ensure_indexes(db, index_specs())
    await put_storage_element(db, StorageElement(name=SE, site="BENCH", protocols=[
        Protocol(scheme="file", prefix=str(root))]))
    starts = iter(range(0, n, BATCH))

    async def worker() -> None:
        for start in starts:
            files = [{"lfn": lfn(i), "size": 100, "adler32": "00000001", "replicas": [{"se": SE}]}
                     for i in range(start, min(n, start + BATCH))]
            result = await register_files(db, ADMIN, files)
            assert not result["failed"], list(result["failed"].items())[:3]

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def write_dump(root: Path, n: int) -> int:
    """The site's dump: every replica but 1% (lost), plus 1% unknown paths (dark), shuffled; each
    line with its size and adler32, so both are compared."""
    lines = [f"{lfn(i)}\t100\t00000001" for i in range(n) if i % 100 != 7]
    lines += [f"/bench/dark/x{i:08d}\t5\t00000002" for i in range(n // 100)]
    random.Random(1).shuffle(lines)
    path = root / DUMP.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    os.utime(path, (time.time(), time.time()))  # after every registration: none is "too new" to be lost
    return len(lines)


async def read_only(root: Path) -> float:
    """Baseline: the dump streamed and split into lines, nothing else."""
    started = time.perf_counter()
    plugin = PosixPlugin({"root": str(root)})
    async for _ in dump_lines(plugin.read(file_url(root / DUMP.lstrip("/")))):
        pass
    return time.perf_counter() - started


async def child(job: dict[str, Any]) -> dict[str, Any]:
    """One job in a fresh process (this script with --child): the dump read, or one audit run, as
    {seconds, peak_rss_MB[, peak_python_MB], counts}."""
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--child", json.dumps(job),
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"child {job['kind']} exited {proc.returncode}"
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) * 1024 / 1e6, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6, 1)


async def child_job(job: dict[str, Any]) -> dict[str, Any]:
    """What a child process does and measures."""
    if job.get("traced"):
        tracemalloc.start()
    if job["kind"] == "read":
        figures: dict[str, Any] = {"seconds": await read_only(Path(job["root"]))}
    else:
        settings = load_settings(mongodb_uri=job["uri"], database=job["database"], var_dir=Path(job["var"]),
                                 audit={"dark_grace_s": 0, "page": job["page"]})
        client: AsyncMongoClient[Document] = AsyncMongoClient(job["uri"], tz_aware=True)
        try:
            counts, seconds = await one_run(client[settings.database], settings)
        finally:
            await client.close()
        figures = {"seconds": seconds, "counts": counts}
    if job.get("traced"):
        figures["peak_python_MB"] = round(tracemalloc.get_traced_memory()[1] / 1e6, 1)
    figures["peak_rss_MB"] = peak_rss_mb()
    return figures


async def one_run(db: AsyncDatabase[Document], settings: Settings) -> tuple[dict[str, Any], float]:
    run = await audit_runs.queue_run(db, SE, requester="bench", dump=DUMP)
    started = time.perf_counter()
    ended = await run_audit(db, settings, run["_id"])
    assert ended is not None and ended["state"] == "done", ended
    return ended["counts"], time.perf_counter() - started


async def measure(uri: str, scratch: Path, n: int, args: argparse.Namespace) -> dict[str, Any]:
    root = scratch / f"se-{n}"
    database = f"bench_audit_{n}"
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    db = client[database]
    try:
        await client.drop_database(database)
        started = time.perf_counter()
        await catalogue(db, root, n, args.seed_concurrency)
        registered_s = time.perf_counter() - started
        lines = write_dump(root, n)
        baseline = await child({"kind": "read", "root": str(root)})
        job = {"kind": "audit", "uri": uri, "database": database, "var": str(scratch / "var"), "page": args.page}
        audit = await child(job)
        counts, seconds = audit["counts"], audit["seconds"]
        figures: dict[str, Any] = {
            "catalogue_replicas": n, "dump_lines": lines, "register_seconds": round(registered_s, 1),
            "registered_per_s": round(n / registered_s),
            "audit_seconds": round(seconds, 2), "entries_per_s": round((n + lines) / seconds),
            "peak_rss_MB": audit["peak_rss_MB"],
            "baseline_dump_read_seconds": round(baseline["seconds"], 2),
            "baseline_peak_rss_MB": baseline["peak_rss_MB"],
            "found": {k: counts.get(k) for k in ("matched", "lost", "dark", "already_lost", "size_mismatch",
                                                        "checksum_mismatch")}}
        if n <= args.traced_up_to:
            figures["peak_python_MB"] = (await child({**job, "traced": True}))["peak_python_MB"]
        return figures
    finally:
        await client.drop_database(database)
        await client.close()


async def sort_only(sizes: list[int]) -> list[dict[str, Any]]:
    """The storage side alone, no database: a shuffled dump of N lines sorted and streamed in order."""

    async def shuffled(n: int) -> AsyncIterator[str]:
        for k in range(n):
            yield f"{lfn((k * 7919) % n)}\t100\t00000001"  # a permutation of 0..n-1 (7919 is prime), no list held

    results = []
    for n in sizes:
        tracemalloc.start()
        started = time.perf_counter()
        count = 0
        async for _ in sorted_dump(shuffled(n), None):
            count += 1
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        results.append({"dump_lines": n, "sorted_lines": count, "seconds": round(seconds, 2),
                        "lines_per_s": round(n / seconds), "peak_python_MB": round(peak / 1e6, 1)})
        tracemalloc.stop()
    return results


async def main(args: argparse.Namespace) -> None:
    if args.child:
        print(json.dumps(await child_job(json.loads(args.child))))
        return
    if args.sort_only:
        emit({"benchmark": "audit: sorting a site dump (no database)", "runs": await sort_only(
            [int(s) for s in args.sizes.split(",")])})
        return
    scratch = Path(tempfile.mkdtemp(prefix="cairn-bench-audit-"))
    uri = args.mongodb_uri or os.environ.get("CAIRN_MONGODB_URI")
    server = None
    if uri is None:
        server = start_ferretdb(scratch / "db")
        uri = server.uri
    try:
        results = []
        for n in (int(s) for s in args.sizes.split(",")):
            results.append(await measure(uri, scratch, n, args))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # each size as it ends
        emit({"benchmark": "audit (site dump vs catalogue)", "database": "ferretdb" if server else "given",
              "catalogue_page": args.page, "register_batch": BATCH, "seed_concurrency": args.seed_concurrency,
              "load_average": [round(x, 1) for x in os.getloadavg()], "runs": results})
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,100000", help="catalogue sizes, comma-separated (e.g. 1000000)")
    parser.add_argument("--mongodb-uri")
    parser.add_argument("--traced-up-to", type=int, default=1_000_000,
                        help="largest size also run under tracemalloc (peak Python memory)")
    parser.add_argument("--seed-concurrency", type=int, default=3, help="registration batches in flight")
    parser.add_argument("--sort-only", action="store_true", help="only the dump's external sort (no database)")
    parser.add_argument("--page", type=int, default=10000, help="catalogue replicas read per page (audit.page)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    event_loop.run(main(parser.parse_args()))
