"""Benchmark: what a Prometheus scrape of `GET /metrics` costs as the history grows.

    python -m bench.metrics_scrape [--history 0,100000] [--scrapes 3] [--baseline PATH]

For each history size and each tree (this one, and `--baseline`, another checkout of Cairn, for a
before/after in the same run): `cairn up` of the tree in a scratch directory (FerretDB from
$CAIRN_FERRETDB or the usual places), HISTORY ended transfer requests, HISTORY ended jobs and
HISTORY rules at rest (as bench/idle.py makes them), 10 s to settle, then SCRAPES scrapes of
/metrics one after the other: each one's wall time and the database's and API server's CPU.
The scrape counts requests, jobs and rules by state and VO; those counts must not cost the
whole history every time. Prints JSON with medians.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import cpu_seconds  # noqa: E402
from bench.idle import ended_history, running_up  # noqa: E402
from kernel import event_loop  # noqa: E402

KINDS = ("requests", "jobs", "rules")


async def scrapes(url: str, count: int, pids: dict[str, list[int]]) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"wall_s": [], "database_cpu_s": [], "api_cpu_s": []}
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            before = {name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()}
            began = time.perf_counter()
            async with session.get(f"{url}/metrics") as response:
                body = await response.text()
                response.raise_for_status()
            runs["wall_s"].append(round(time.perf_counter() - began, 3))
            for name, group in pids.items():
                runs[f"{name}_cpu_s"].append(round(sum(cpu_seconds(p) for p in group) - before[name], 2))
    series = [line for line in body.splitlines() if line.startswith(("cairn_jobs{", "cairn_rules{", "cairn_requests{"))]
    return {**runs, **{f"median_{name}": round(statistics.median(v), 3) for name, v in runs.items()},
            "series": series}


def one_size(tree: Path, history: int, count: int) -> dict[str, Any]:
    with running_up(tree) as (up, uri, log):
        url = re.search(r"API at (http://\S+)", log)
        if url is None:
            raise SystemExit("cairn up printed no API address")
        began = time.perf_counter()
        for kind in KINDS:
            event_loop.run(ended_history(uri, history, kind))
        filled = time.perf_counter() - began
        time.sleep(10)
        listed = subprocess.run(["pgrep", "-s", str(up.pid)], capture_output=True, text=True).stdout
        commands = {int(p): Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ") for p in listed.split()}
        pids = {"database": [p for p, c in commands.items() if "ferretdb" in c],
                "api": [p for p, c in commands.items() if "cairn server" in c]}
        result = event_loop.run(scrapes(url.group(1), count, pids))
    return {"history_each": history, "fill_s": round(filled, 1), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", default="0,100000",
                        help="ended requests, ended jobs and rules, each (comma-separated)")
    parser.add_argument("--scrapes", type=int, default=3, help="scrapes per size (3)")
    parser.add_argument("--baseline", type=Path, help="another Cairn checkout, measured the same way after this one")
    args = parser.parse_args()
    trees = [ROOT, *([args.baseline.resolve()] if args.baseline else [])]
    result = {str(tree): [one_size(tree, int(n), args.scrapes) for n in args.history.split(",")] for tree in trees}
    print(json.dumps({"benchmark": "GET /metrics", "trees": result}, indent=1))


if __name__ == "__main__":
    main()
