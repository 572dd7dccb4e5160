"""Benchmark: `cairn upload` of many small files to a disk SE against `cp -r` plus one bulk
registration (issue 17: the upload at least 0.8x as fast as that floor).

    python -m bench.upload_small [--count 1000] [--kib 100] [--rounds 3] [--concurrency 4]

Starts the database (FerretDB in a scratch directory unless $CAIRN_MONGODB_URI) and a
`cairn server` subprocess, makes COUNT random files of KIB KiB and a local-disk SE, then per
round, each into a directory of its own (each round begins with the next phase in turn):
- floor: `cp -r` of the directory into the SE's tree where the catalogue derives the replicas'
  URLs, then the adler32 of every file (a registration needs it) and one bulk registration of
  all of them with an available replica, through the API (`Client.register_files`);
- floor_cli: the same at the command line, as a user without `cairn upload` would do it: `cp -r`,
  the sums (in this process, as above), then `cairn register --from-file` in a subprocess (its
  Python start included, like the cli's): the like-for-like floor of the command;
- cli: the `cairn upload --se SE --json FILES... LFN/` command in a subprocess, as a user
  runs it (its Python start included; `startup_s` is `cairn --help` alone, for scale), with
  the tree's modules compiled first as an installation has them (a PYTHONDONTWRITEBYTECODE in
  the environment would otherwise make every run compile ~50 modules from source);
- sdk: `Client.upload` in this process (what the command runs, without the start).
Prints JSON: seconds per round, the median, files/s, and floor/cairn ratios (1.0 = as fast as
the floor; issue 17 asks for >= 0.8 of the command): `cli_over_floor` and `sdk_over_floor`
against the in-process floor, `cli_over_floor_cli` command against command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# Run as a script, bench/ would come first on the path and its rules.py hide the rules package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dataio
from bench.harness import emit, start_server, testbed
from cairn.sdk import Client
from kernel import event_loop
from kernel.settings import load_settings
from kernel.tokens import BuiltinIssuer

# The tree whose code is measured (also in the CLI's subprocess): where `dataio` was imported from.
ROOT = Path(dataio.__file__).resolve().parent.parent
SE = "BENCH-DISK"
PACKAGES = ("cairn", "catalogue", "dataio", "kernel", "storage_plugins", "transfers")  # what the CLI imports


def make_files(directory: Path, count: int, kib: int) -> list[Path]:
    """COUNT files of random bytes."""
    directory.mkdir(parents=True)
    paths = []
    for index in range(count):
        path = directory / f"f{index:05d}"
        path.write_bytes(os.urandom(kib << 10))
        paths.append(path)
    return paths


def adler32_of(path: Path) -> tuple[int, str]:
    data = path.read_bytes()
    return len(data), f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


async def copied_and_summed(source: Path, se_root: Path, lfn_dir: str) -> list[dict[str, Any]]:
    """`cp -r` of source into the SE's tree at lfn_dir, then the files to register (with sums)."""
    target = se_root / lfn_dir.strip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    await (await asyncio.create_subprocess_exec("cp", "-r", str(source), str(target))).wait()
    sums = await asyncio.to_thread(lambda: [(p.name, *adler32_of(p)) for p in sorted(target.iterdir())])
    return [{"lfn": f"{lfn_dir}/{name}", "size": size, "adler32": adler32,
             "replicas": [{"se": SE, "status": "available"}]} for name, size, adler32 in sums]


async def floor(client: Client, source: Path, se_root: Path, lfn_dir: str) -> float:
    """`cp -r` into the SE's tree, then the checksums and one bulk registration; seconds."""
    began = time.perf_counter()
    files = await copied_and_summed(source, se_root, lfn_dir)
    result = await client.register_files(files)
    seconds = time.perf_counter() - began
    if result["failed"] or len(result["successful"]) != len(files):
        raise RuntimeError(f"floor registration failed: {list(result['failed'].items())[:3]}")
    return seconds


async def floor_cli(env: dict[str, str], source: Path, se_root: Path, lfn_dir: str, scratch: Path) -> float:
    """`floor` at the command line: the registration by `cairn register --from-file`; seconds."""
    began = time.perf_counter()
    files = await copied_and_summed(source, se_root, lfn_dir)
    listing = scratch / f"register-{lfn_dir.strip('/').replace('/', '-')}.json"
    listing.write_text(json.dumps(files))
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "cairn", "register", "--from-file",
                                                    str(listing), "--json"],
                                   env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != 0 or json.loads(done.stdout)["failed"]:
        raise RuntimeError(f"cairn register failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")
    return seconds


def cli_upload(env: dict[str, str], paths: list[Path], lfn_dir: str, concurrency: int) -> float:
    """`cairn upload` in a subprocess; seconds."""
    command = [sys.executable, "-m", "cairn", "upload", "--se", SE, "--json", "--concurrency", str(concurrency),
               *map(str, paths), f"{lfn_dir}/"]
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"cairn upload failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


async def sdk_upload(client: Client, paths: list[Path], lfn_dir: str, concurrency: int) -> float:
    began = time.perf_counter()
    outcomes = await client.upload(paths, f"{lfn_dir}/", SE, concurrency=concurrency)
    seconds = time.perf_counter() - began
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} upload(s) failed, first: {failed[0].error}")
    return seconds


def startup(env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cairn", "--help"], env=env, capture_output=True, check=True)
    return time.perf_counter() - began


def summary(seconds: list[float], count: int) -> dict[str, Any]:
    median = statistics.median(seconds)
    return {"seconds": [round(s, 3) for s in seconds], "median_s": round(median, 3),
            "files_per_s": round(count / median, 1)}


async def measure(args: argparse.Namespace, url: str, token: str, scratch: Path) -> dict[str, Any]:
    se_root = scratch / "se"
    paths = make_files(scratch / "src" / "small", args.count, args.kib)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAIRN_API_URL": url, "CAIRN_TOKEN": token}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    times: dict[str, list[float]] = {"floor": [], "floor_cli": [], "cli": [], "sdk": []}
    async with Client(url, token, timeout_s=3600) as client:
        await client.put_se({"name": SE, "site": "BENCH", "protocols": [{"scheme": "file", "prefix": str(se_root)}]})
        await client.mkdir("/bench")
        phases: dict[str, Callable[[str], Awaitable[float]]] = {
            "floor": lambda lfn_dir: floor(client, paths[0].parent, se_root, lfn_dir),
            "floor_cli": lambda lfn_dir: floor_cli(env, paths[0].parent, se_root, lfn_dir, scratch),
            "cli": lambda lfn_dir: asyncio.to_thread(cli_upload, env, paths, lfn_dir, args.concurrency),
            "sdk": lambda lfn_dir: sdk_upload(client, paths, lfn_dir, args.concurrency),
        }
        order = list(phases)
        for round_ in range(args.rounds):
            # Each round starts with another phase (none always follows the same one), and each
            # phase with no dirty pages of the one before: the kernel's writeback of 100 MB landing
            # inside a timed run made the same run take 0.5 s or 1.2 s on this VM. What a phase
            # wrote stays: removing it (as bench/transfers.py does with its gigabytes) made every
            # later phase slower, 0.29 s to 1.1 s for the floor over 8 rounds, creating files
            # after many deletions on this disk.
            for name in order[round_ % len(order):] + order[:round_ % len(order)]:
                os.sync()
                times[name].append(await phases[name](f"/bench/{name}{round_}"))
    figures = {name: summary(seconds, args.count) for name, seconds in times.items()}
    return {
        "files": args.count, "file_KiB": args.kib, "rounds": args.rounds, "concurrency": args.concurrency,
        "startup_s": round(startup(env), 3), **figures,
        "cli_over_floor": round(figures["floor"]["median_s"] / figures["cli"]["median_s"], 2),
        "cli_over_floor_cli": round(figures["floor_cli"]["median_s"] / figures["cli"]["median_s"], 2),
        "sdk_over_floor": round(figures["floor"]["median_s"] / figures["sdk"]["median_s"], 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(ROOT / p) for p in PACKAGES)], check=True)
    with testbed("cairn-bench-upload-") as bed:
        database = f"bench_upload_{uuid.uuid4().hex[:8]}"
        settings = load_settings(mongodb_uri=bed.database_uri, database=database, var_dir=bed.scratch / "var")
        token = BuiltinIssuer.from_settings(settings).issue(sub="bench", vo="bench", groups=["bench"],
                                                            scopes=["admin"])
        api, port = start_server(bed.database_uri, database, bed.scratch)
        bed.on_exit(lambda: (api.terminate(), api.wait(timeout=30)))
        result = event_loop.run(measure(args, f"http://127.0.0.1:{port}", token, bed.scratch))
        shutil.rmtree(bed.scratch / "se", ignore_errors=True)
        return {"database": bed.database_kind, **result}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="number of files (1000)")
    parser.add_argument("--kib", type=int, default=100, help="size of each file in KiB (100)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of floor, floor_cli, cli, sdk (3); medians reported")
    parser.add_argument("--concurrency", type=int, default=4, help="files in flight for the upload (4, the CLI's)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    emit(run(parse_args()))
