"""Benchmark: how long a `cairn` command takes to start, for two trees of the code (issue 17:
every command paid the import of the whole CLI, SDK, server and models).

    python -m bench.cli_startup --baseline DIR [--rounds 5]

DIR is another checkout (e.g. `git archive <commit> | tar -x -C DIR`); the tree measured is the
one this file belongs to. Starts the database and a `cairn server`, then for each tree, in
alternating rounds: `cairn --help` and `cairn ls /bench --json` (wall seconds, subprocesses as a
user runs them) and the import time of `cairn.cli.main` under `python -X importtime`, and
which heavy packages `--help` and `ls` import. Each command runs in its tree's directory (`-m`
puts the working directory before PYTHONPATH). Prints JSON with medians per tree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, api_server, emit

HEAVY = ("aiohttp", "aiohttp.web", "pydantic", "pymongo", "pyarrow", "gfal2", "aioboto3", "rich", "yaml", "jwt")


def wall(env: dict[str, str], *args: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cairn", *args], env=env, cwd=env["PYTHONPATH"], capture_output=True,
                   check=True)
    return time.perf_counter() - began


def imports(env: dict[str, str], *args: str) -> tuple[float, list[str]]:
    """Seconds spent importing (the sum of top-level imports) and which heavy packages came in."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "cairn", *args], env=env,
                          cwd=env["PYTHONPATH"], capture_output=True, text=True, check=True)
    total, heavy = 0, set()
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].strip()
        if not parts[2][1:2].isspace():  # a top-level import: its cumulative time counts once
            total += int(parts[1])
        if name in HEAVY:
            heavy.add(name)
    return total / 1e6, sorted(heavy)


def measure(tree: Path, url: str, token: str, rounds: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "CAIRN_API_URL": url, "CAIRN_TOKEN": token}
    helps = [wall(env, "--help") for _ in range(rounds)]
    lss = [wall(env, "ls", "/", "--json") for _ in range(rounds)]
    help_import, help_heavy = imports(env, "--help")
    ls_import, ls_heavy = imports(env, "ls", "/", "--json")
    return {"tree": str(tree), "help_s": statistics.median(helps), "ls_s": statistics.median(lss),
            "help_rounds": [round(s, 3) for s in helps], "ls_rounds": [round(s, 3) for s in lss],
            "help_import_s": round(help_import, 3), "ls_import_s": round(ls_import, 3),
            "help_imports_heavy": help_heavy, "ls_imports_heavy": ls_heavy}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with api_server("cairn-bench-cli-", os.environ.get("CAIRN_MONGODB_URI")) as api:
        load_before = os.getloadavg()
        baseline = measure(args.baseline.resolve(), api.url, api.token, args.rounds)
        tree = measure(ROOT, api.url, api.token, args.rounds)
        load_after = os.getloadavg()
    for figures in (baseline, tree):
        figures["help_s"] = round(figures["help_s"], 3)
        figures["ls_s"] = round(figures["ls_s"], 3)
    return {"rounds": args.rounds, "baseline": baseline, "tree": tree,
            "help_speedup": round(baseline["help_s"] / tree["help_s"], 2),
            "ls_speedup": round(baseline["ls_s"] / tree["ls_s"], 2),
            "load_average": {"before": [round(x, 2) for x in load_before],
                             "after": [round(x, 2) for x in load_after]}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout to compare against")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each command per tree (5); medians")
    return parser.parse_args(argv)


if __name__ == "__main__":
    emit(run(parse_args()))
