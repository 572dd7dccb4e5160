"""Upload and download throughput of each storage plugin against command-line baselines.

For every plugin (file, s3 on moto, davs and root on a local XRootD), one big file and many
small files go up and come back; `cp`, `xrdcp` and `gfal-copy` move the same bytes in the same
run. Prints JSON: MB/s for the big file, files/s for the small ones, and each plugin's ratio to
the baseline of its protocol (cp for file, xrdcp for root, gfal-copy for davs).

    python -m bench.storage_io                          # 1 GiB and 1000 x 1 MiB
    python -m bench.storage_io --big-mib 64 --small-count 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.harness import MB, MOTO, timed
from cairn.embedded_db import free_port, wait_for_port
from cairn.embedded_xrootd import XRootDServer, make_base_dir, make_tls, start_xrootd
from kernel import event_loop
from kernel.process import child_preexec
from storage_plugins.posix import file_url
from storage_plugins.registry import close_plugins, plugin_for


def make_files(directory: Path, big_mib: int, small_count: int, small_kib: int) -> tuple[Path, list[Path]]:
    """The big file and the small ones, random bytes, written in 1 MiB pieces."""
    directory.mkdir(parents=True)
    big = directory / "big"
    with big.open("wb") as handle:
        for _ in range(big_mib):
            handle.write(os.urandom(1 << 20))
    small_dir = directory / "small"
    small_dir.mkdir()
    smalls = []
    for index in range(small_count):
        path = small_dir / f"f{index:05d}"
        path.write_bytes(os.urandom(small_kib << 10))
        smalls.append(path)
    return big, smalls


def _size(path: Path) -> int:
    return path.stat().st_size


async def run_command(*args: str, env: dict[str, str] | None = None) -> None:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env
    )
    _, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args[:3])}... failed: {err.decode(errors='replace')[-500:]}")


def figures(big_bytes: int, count: int, times: dict[str, float]) -> dict[str, float]:
    return {
        "upload_big_MBps": round(big_bytes / MB / times["up_big"], 1),
        "download_big_MBps": round(big_bytes / MB / times["down_big"], 1),
        "upload_small_files_per_s": round(count / times["up_small"], 1),
        "download_small_files_per_s": round(count / times["down_small"], 1),
    }


async def bench_plugin(
    base: str, options: dict[str, Any] | None, big: Path, smalls: list[Path], scratch: Path, concurrency: int
) -> dict[str, float]:
    plugin = plugin_for(base, options)
    out = scratch / "out"
    out.mkdir(parents=True, exist_ok=True)
    slots = asyncio.Semaphore(concurrency)

    async def each(action: Callable[[Path], Awaitable[Any]]) -> None:
        async def one(path: Path) -> None:
            async with slots:
                await action(path)

        await asyncio.gather(*(one(path) for path in smalls))

    times = {
        "up_big": await timed(lambda: plugin.put(big, f"{base}/big")),
        "down_big": await timed(lambda: plugin.get(f"{base}/big", out / "big")),
        "up_small": await timed(lambda: each(lambda p: plugin.put(p, f"{base}/small/{p.name}"))),
        "down_small": await timed(lambda: each(lambda p: plugin.get(f"{base}/small/{p.name}", out / p.name))),
    }
    shutil.rmtree(out)
    return figures(_size(big), len(smalls), times)


async def bench_cp(big: Path, smalls: list[Path], scratch: Path) -> dict[str, float]:
    dest = scratch / "cp"
    dest.mkdir()
    times = {
        "up_big": await timed(lambda: run_command("cp", str(big), str(dest / "big"))),
        "down_big": await timed(lambda: run_command("cp", str(dest / "big"), str(scratch / "cp-big-back"))),
        "up_small": await timed(lambda: run_command("cp", "-r", str(smalls[0].parent), str(dest / "small"))),
        "down_small": await timed(
            lambda: run_command("cp", "-r", str(dest / "small"), str(scratch / "cp-back"))
        ),
    }
    return figures(_size(big), len(smalls), times)


async def bench_xrdcp(
    server: XRootDServer, big: Path, smalls: list[Path], scratch: Path, parallel: int
) -> dict[str, float]:
    base = f"{server.root_url}/xrdcp"
    back = scratch / "xrdcp-back"
    back.mkdir()
    times = {
        "up_big": await timed(lambda: run_command("xrdcp", "-s", "-f", str(big), f"{base}/big")),
        "down_big": await timed(lambda: run_command("xrdcp", "-s", "-f", f"{base}/big", str(back / "big"))),
        "up_small": await timed(
            lambda: run_command(
                "xrdcp", "-s", "-f", "-r", "--parallel", str(parallel), str(smalls[0].parent), f"{base}/"
            )
        ),
        "down_small": await timed(
            lambda: run_command(
                "xrdcp", "-s", "-f", "-r", "--parallel", str(parallel), f"{base}/small", str(back)
            )
        ),
    }
    return figures(_size(big), len(smalls), times)


async def bench_gfal_copy(
    server: XRootDServer, big: Path, smalls: list[Path], scratch: Path
) -> dict[str, float] | str:
    gfal_copy = shutil.which("gfal-copy")
    if gfal_copy is None:
        return "gfal-copy not installed (apt-get install python3-gfal2-util)"
    # The script picks its interpreter; the system one has the gfal2 bindings.
    env = {**os.environ, "X509_CERT_DIR": str(server.tls.ca_dir), "GFAL_PYTHONBIN": "/usr/bin/python3"}
    base = f"{server.davs_url}/gfal"
    back = scratch / "gfal-back"
    back.mkdir()
    # gfal-copy -r copies a directory's files one by one.
    times = {
        "up_big": await timed(
            lambda: run_command(gfal_copy, "-f", "-p", file_url(big), f"{base}/big", env=env)
        ),
        "down_big": await timed(
            lambda: run_command(gfal_copy, "-f", f"{base}/big", file_url(back / "big"), env=env)
        ),
        "up_small": await timed(
            lambda: run_command(gfal_copy, "-f", "-r", file_url(smalls[0].parent), f"{base}/small", env=env)
        ),
        "down_small": await timed(
            lambda: run_command(gfal_copy, "-f", "-r", f"{base}/small", file_url(back / "small"), env=env)
        ),
    }
    return figures(_size(big), len(smalls), times)


def ratios(plugin: dict[str, float], baseline: dict[str, float] | str) -> dict[str, float] | str:
    if isinstance(baseline, str):
        return baseline
    return {key: round(plugin[key] / baseline[key], 2) for key in plugin}


async def measure(
    args: argparse.Namespace,
    server: XRootDServer,
    moto_port: int,
    scratch: Path,
    big: Path,
    smalls: list[Path],
) -> dict[str, Any]:
    s3_options = {
        "endpoint_url": f"http://127.0.0.1:{moto_port}",
        "access_key": "bench",
        "secret_key": "bench",
    }
    s3 = plugin_for("s3://bench/", s3_options)
    client = await s3.client()  # type: ignore[attr-defined]
    await client.create_bucket(Bucket="bench")
    endpoints: dict[str, tuple[str, dict[str, Any] | None]] = {
        "file": (file_url(scratch / "se"), None),
        "s3": ("s3://bench/data", s3_options),
        "davs": (f"{server.davs_url}/plugin", {"ca_file": str(server.tls.ca_file)}),
        "root": (f"{server.root_url}/plugin", None),
    }
    results: dict[str, Any] = {
        "sizes": {"big_MiB": args.big_mib, "small_count": args.small_count, "small_KiB": args.small_kib},
        "concurrency": args.concurrency,
        "baselines": {
            "cp": await bench_cp(big, smalls, scratch),
            "xrdcp": await bench_xrdcp(server, big, smalls, scratch, args.concurrency),
            "gfal-copy (davs)": await bench_gfal_copy(server, big, smalls, scratch),
        },
        "plugins": {},
    }
    for name in args.plugins:
        base, options = endpoints[name]
        results["plugins"][name] = await bench_plugin(
            base, options, big, smalls, scratch / name, args.concurrency
        )
    baseline_of = {"file": "cp", "root": "xrdcp", "davs": "gfal-copy (davs)", "s3": "cp"}
    results["ratios_to_baseline"] = {
        f"{name} / {baseline_of[name]}": ratios(
            results["plugins"][name], results["baselines"][baseline_of[name]]
        )
        for name in args.plugins
    }
    await close_plugins()
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the servers, make the files, measure, and clean everything up."""
    scratch = Path(tempfile.mkdtemp(prefix="cairn-bench-"))
    xrootd_base = make_base_dir("cairn-bench-xrootd-")
    moto_port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-c", MOTO.format(port=moto_port)],
        preexec_fn=child_preexec,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = start_xrootd(xrootd_base, "bench", make_tls(xrootd_base))
    try:
        wait_for_port("127.0.0.1", moto_port, timeout_s=30)
        big, smalls = make_files(scratch / "src", args.big_mib, args.small_count, args.small_kib)
        return event_loop.run(measure(args, server, moto_port, scratch, big, smalls))
    finally:
        server.stop()
        moto.kill()
        moto.wait()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(xrootd_base, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big-mib", type=int, default=1024, help="size of the big file in MiB (1024)")
    parser.add_argument("--small-count", type=int, default=1000, help="number of small files (1000)")
    parser.add_argument("--small-kib", type=int, default=1024, help="size of each small file in KiB (1024)")
    parser.add_argument("--concurrency", type=int, default=16, help="small files in flight at once (16)")
    parser.add_argument(
        "--plugins", nargs="+", default=["file", "s3", "davs", "root"], choices=["file", "s3", "davs", "root"]
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(run(parse_args()), indent=2))
