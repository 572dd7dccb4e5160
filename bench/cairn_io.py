"""Upload and download through Cairn (register + verify + catalogue) against the bare plugins.

For each SE kind (file, s3 on moto, davs and root on a local XRootD) the same big file and
small files go up with `Client.upload` and come back with `Client.download`, through a
`cairn server` subprocess on FerretDB; in the same run the storage plugin alone moves the same
bytes (`bench.storage_io.bench_plugin`), which is the floor Cairn's overhead is measured
against (local adler32 before upload, registration, status flip, catalogue lookups,
verification of every byte on the way down). Prints JSON: MB/s and files/s, and ratios.

Small files pay Cairn's per-file catalogue work (registration, the status flip after each
upload, one call per batch of 500 by `dataio.status_batches`; one bulk lookup per 1000 downloads). Figures depend
on the database: the embedded FerretDB needs the build of `.ci/install-ferretdb`, whose `_id`
lookups use the index (the stock 1.24.2 scans the files collection for each of these writes).
Run it against MongoDB (`CAIRN_MONGODB_URI`) for production figures.

    python -m bench.cairn_io                                # 1 GiB and 1000 x 1 MiB
    python -m bench.cairn_io --big-mib 64 --small-count 100 --kinds file root
"""

from __future__ import annotations

import argparse
import shutil
import uuid
from pathlib import Path
from typing import Any

from bench.harness import emit, start_server, testbed, timed
from bench.storage_io import bench_plugin, figures, make_files
from cairn.embedded_xrootd import XRootDServer, make_tls, start_xrootd
from cairn.sdk import Client
from dataio.progress import FileOutcome
from kernel import event_loop
from kernel.settings import load_settings
from kernel.tokens import BuiltinIssuer
from storage_plugins.posix import file_url
from storage_plugins.registry import close_plugins, plugin_for

KINDS = ("file", "s3", "davs", "root")


def storage_element(kind: str, scratch: Path, server: XRootDServer, moto_port: int) -> dict[str, Any]:
    """The catalogue definition of the bench SE of one kind."""
    protocol: dict[str, Any]
    if kind == "file":
        protocol = {"scheme": "file", "prefix": str(scratch / "cairn-se")}
    elif kind == "s3":
        protocol = {"scheme": "s3", "host": "bench", "prefix": "/cairn",
                    "extra": {"endpoint_url": f"http://127.0.0.1:{moto_port}"}}
    elif kind == "davs":
        protocol = {"scheme": "davs", "host": "127.0.0.1", "port": server.http_port, "prefix": "/cairn-davs",
                    "extra": {"ca_file": str(server.tls.ca_file)}}
    else:
        protocol = {"scheme": "root", "host": "127.0.0.1", "port": server.root_port, "prefix": "/cairn-root"}
    return {"name": f"BENCH-{kind.upper()}", "site": "BENCH", "protocols": [protocol]}


def _all_ok(outcomes: list[FileOutcome]) -> None:
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} file(s) failed, first: {failed[0].error}")


async def bench_cairn(client: Client, se: str, big: Path, smalls: list[Path], scratch: Path,
                      concurrency: int, credentials: dict[str, dict[str, str]]) -> dict[str, float]:
    """Seconds for Client.upload/download of the big file and of the small ones."""
    out = scratch / "out"
    out.mkdir(parents=True)
    big_size = big.stat().st_size  # noqa: ASYNC240 - one stat, before the clock starts
    base = f"/bench/{se}"
    small_lfns = [f"{base}/small/{p.name}" for p in smalls]

    async def up(paths: list[Path], lfn: str) -> None:
        _all_ok(await client.upload(paths, lfn, se, credentials=credentials, concurrency=concurrency))

    async def down(lfns: list[str], dest: Path) -> None:
        _all_ok(await client.download(lfns, dest, credentials=credentials, concurrency=concurrency))

    times = {
        "up_big": await timed(lambda: up([big], f"{base}/big")),
        "down_big": await timed(lambda: down([f"{base}/big"], out / "big")),
        "up_small": await timed(lambda: up(smalls, f"{base}/small/")),
        "down_small": await timed(lambda: down(small_lfns, out / "small")),
    }
    shutil.rmtree(out)
    return figures(big_size, len(smalls), times)


async def measure(args: argparse.Namespace, api_url: str, token: str, server: XRootDServer, moto_port: int,
                  scratch: Path, big: Path, smalls: list[Path]) -> dict[str, Any]:
    s3_secrets = {"access_key": "bench", "secret_key": "bench"}
    s3_options = {"endpoint_url": f"http://127.0.0.1:{moto_port}", **s3_secrets}
    s3 = plugin_for("s3://bench/", s3_options)
    await (await s3.client()).create_bucket(Bucket="bench")  # type: ignore[attr-defined]
    plugin_bases: dict[str, tuple[str, dict[str, Any] | None]] = {
        "file": (file_url(scratch / "plugin-se"), None),
        "s3": ("s3://bench/plugin", s3_options),
        "davs": (f"{server.davs_url}/plugin", {"ca_file": str(server.tls.ca_file)}),
        "root": (f"{server.root_url}/plugin", None),
    }
    results: dict[str, Any] = {
        "sizes": {"big_MiB": args.big_mib, "small_count": args.small_count, "small_KiB": args.small_kib},
        "concurrency": args.concurrency, "plugin": {}, "cairn": {}, "cairn_over_plugin": {},
    }
    async with Client(api_url, token, timeout_s=3600) as client:
        await client.mkdir("/bench")
        for kind in args.kinds:
            se = storage_element(kind, scratch, server, moto_port)
            await client.put_se(se)
            credentials = {se["name"]: s3_secrets} if kind == "s3" else {}
            base, options = plugin_bases[kind]
            plugin = await bench_plugin(base, options, big, smalls, scratch / f"plugin-{kind}", args.concurrency)
            cairn = await bench_cairn(client, se["name"], big, smalls, scratch / f"cairn-{kind}", args.concurrency,
                                      credentials)
            results["plugin"][kind], results["cairn"][kind] = plugin, cairn
            results["cairn_over_plugin"][kind] = {key: round(cairn[key] / plugin[key], 2) for key in cairn}
    await close_plugins()
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the database, the API server, moto and XRootD; make the files; measure; clean up."""
    with testbed("cairn-bench-io-") as bed:
        xrootd = start_xrootd(bed.xrootd_base, "bench-io", make_tls(bed.xrootd_base))
        bed.on_exit(xrootd.stop)
        database = f"bench_{uuid.uuid4().hex[:8]}"
        settings = load_settings(mongodb_uri=bed.database_uri, database=database, var_dir=bed.scratch / "var")
        token = BuiltinIssuer.from_settings(settings).issue(sub="bench", vo="bench", groups=["bench"],
                                                            scopes=["admin"])
        api, port = start_server(bed.database_uri, database, bed.scratch)
        bed.on_exit(lambda: (api.terminate(), api.wait(timeout=30)))
        big, smalls = make_files(bed.scratch / "src", args.big_mib, args.small_count, args.small_kib)
        return event_loop.run(measure(args, f"http://127.0.0.1:{port}", token, xrootd, bed.moto_port, bed.scratch,
                                   big, smalls))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-mib", type=int, default=1024, help="size of the big file in MiB (1024)")
    parser.add_argument("--small-count", type=int, default=1000, help="number of small files (1000)")
    parser.add_argument("--small-kib", type=int, default=1024, help="size of each small file in KiB (1024)")
    parser.add_argument("--concurrency", type=int, default=16, help="files in flight at once (16)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    emit(run(parse_args()))
