"""What confining callers to their VO costs: the same reads through the real API server, first on a
single-VO installation (no VO registered: the baseline), then with two VOs registered and the
caller confined to one. Prints JSON with the median and p95 latency of each read, both ways.

    python bench/vo_confine.py                   # 500 calls per read, on embedded FerretDB
    python bench/vo_confine.py --calls 2000
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web

from cairn.embedded_db import start_ferretdb
from cairn.server import build_app
from catalogue import namespace, vos
from catalogue.files import register_files
from kernel import event_loop
from kernel.api_prefix import API_PREFIX
from kernel.db import get_database
from kernel.principal import Principal
from kernel.settings import load_settings
from kernel.web import ISSUER

SCOPES = ("catalogue.read", "catalogue.write")
LFN = "/cta/run1/f.root"
READS = {"whoami": ("/whoami", None), "file": ("/files", {"lfn": LFN}), "ls": ("/namespace/ls", {"path": "/cta"})}


async def latencies(url: str, token: str, calls: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for name, (path, params) in READS.items():
            times = []
            for _ in range(calls):
                started = time.perf_counter()
                async with session.get(url + API_PREFIX + path, params=params) as resp:
                    await resp.read()
                    assert resp.status == 200, (name, resp.status)
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            out[name] = {"p50_ms": round(statistics.median(times), 3),
                         "p95_ms": round(times[int(len(times) * 0.95)], 3)}
    return out


async def run(calls: int, uri: str, var_dir: Path) -> dict[str, Any]:
    settings = load_settings(mongodb_uri=uri, database=f"bench_{uuid.uuid4().hex[:8]}", var_dir=var_dir, api_port=0)
    app = build_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    db = get_database(settings)
    try:
        owner = Principal(sub="cta:ann", vo="cta", groups=("cta:cta",), scopes=frozenset({"admin"}))
        await namespace.mkdir(db, owner, "/cta/run1", parents=True)
        result = await register_files(db, owner, [{"lfn": LFN, "size": 1, "adler32": "00020002"}])
        assert not result["failed"], result
        single = app[ISSUER].issue(sub="cta:ann", vo="cta", groups=["cta:cta"], scopes=SCOPES)
        baseline = await latencies(url, single, calls)
        await vos.put_vo(db, vos.Vo(name="cta", roots=["/cta"], scopes=["cta"]))
        await vos.put_vo(db, vos.Vo(name="lhcb", roots=["/lhcb"], scopes=["lhcb"]))
        confined = await latencies(url, app[ISSUER].issue(sub="ann", vo="cta", groups=["cta"], scopes=SCOPES), calls)
    finally:
        await runner.cleanup()
    return {"calls_per_read": calls, "single_vo_baseline": baseline, "two_vos_confined": confined,
            "p50_ratio": {k: round(confined[k]["p50_ms"] / baseline[k]["p50_ms"], 3) for k in READS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="cairn-bench-vo-"))
    ferret = start_ferretdb(scratch / "db")
    try:
        figures = event_loop.run(run(args.calls, ferret.uri, scratch / "var"))
    finally:
        ferret.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"benchmark": "vo_confine", "database": "FerretDB 1.24 (SQLite)", **figures}, indent=2))


if __name__ == "__main__":
    main()
