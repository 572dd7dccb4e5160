"""Benchmark: a directory of N entries listed through the API by the CLI, streamed.

    python bench/listing.py [--entries 1000000]

Starts a database (FerretDB in a temp dir, unless $CAIRN_MONGODB_URI) and `python -m cairn server`;
registers one file in /big through the API and fills the directory with N-1 copies of its record
(bare `insert_many`: only reading is measured). Then runs, one after the other, each as a user
would: `cairn ls /big --json`, `cairn find 'size>=0' --path /big --format parquet -o F`,
`cairn se dump SE -o F.jsonl`, and two of the Parquet finds at once (unless --no-two-at-once).
For each it prints the time to the first entry (the first bytes past the JSON array's `[`, or in
the output file), entries/s, the peak RSS of the CLI, of the API server and of the database
against their idle RSS before the command (peaks reset through /proc/PID/clear_refs, sampled
every 20 ms), the CPU each of them spent per entry (where the time goes; on a loaded machine
every figure inflates, the database's up to 8x), and checks that every entry arrived. The
baseline in the same run: a bare keyset scan of the same records straight from the database
(the floor of any listing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow.parquet as pq  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from bench.catalogue_bulk import se  # noqa: E402
from bench.harness import api_server, children_cpu_seconds, cpu_seconds  # noqa: E402
from cairn.sdk import Client  # noqa: E402
from kernel import event_loop  # noqa: E402

SE_NAME = "BENCH-DISK1"
FILL_BATCH = 10_000


def rss_kib(pid: int, field_name: str) -> int:
    """VmRSS or VmHWM of a process in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current RSS (Linux: `5` to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Watch:
    """Peak RSS of the CLI processes, the server and the database while one command runs."""

    server: int
    database: int | None
    idle: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        for name, pid in self.services():
            reset_peak(pid)
            self.idle[name] = rss_kib(pid, "VmRSS")
            self.peak[name] = self.idle[name]
            self.cpu[name] = cpu_seconds(pid)
        self.peak["cli"] = 0
        self.cpu["cli"] = children_cpu_seconds()

    def cpu_used(self) -> dict[str, float]:
        """CPU seconds each used since `start` (the CLI's once its processes are reaped)."""
        now = {name: cpu_seconds(pid) for name, pid in self.services()}
        now["cli"] = children_cpu_seconds()
        return {name: now[name] - self.cpu[name] for name in now}

    def services(self) -> list[tuple[str, int]]:
        return [("server", self.server)] + ([("database", self.database)] if self.database else [])

    def sample(self, clis: list[int]) -> None:
        for name, pid in self.services():
            self.peak[name] = max(self.peak[name], rss_kib(pid, "VmHWM"))
        self.peak["cli"] = max([self.peak["cli"], *(rss_kib(pid, "VmHWM") for pid in clis)])


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def cli(url: str, token: str, args: list[str], stdout: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAIRN_API_URL": url, "CAIRN_TOKEN": token}
    return subprocess.Popen([sys.executable, "-m", "cairn", *args], env=env, stdout=stdout, stderr=subprocess.PIPE)


def run_command(name: str, url: str, token: str, commands: list[tuple[list[str], Path]], watch: Watch,
                started_past: int, watched: Path | None = None, tolerate_failure: bool = False) -> dict[str, Any]:
    """Run the commands at once (stdout of each to its file); time the first entry of the first
    (`watched`, else its stdout, growing past `started_past` bytes), the whole, and the peaks. A
    failed command ends the benchmark, unless `tolerate_failure` (then the result says `failed`)."""
    watched = watched or commands[0][1]
    watch.start()
    began = time.perf_counter()
    outs = [path.open("wb") for _, path in commands]
    procs = [cli(url, token, args, out) for (args, _), out in zip(commands, outs, strict=True)]
    first: float | None = None
    while any(p.poll() is None for p in procs):
        watch.sample([p.pid for p in procs])
        if first is None and watched.exists() and watched.stat().st_size > started_past:
            first = time.perf_counter() - began
        time.sleep(0.02)
    seconds = time.perf_counter() - began
    cpu = watch.cpu_used()
    for out in outs:
        out.close()
    failures = [f"exit {proc.returncode}: " + (proc.stderr.read().decode() if proc.stderr else "")[-2000:]
                for proc in procs if proc.returncode != 0]
    if failures and not tolerate_failure:
        raise SystemExit(f"{name}: {failures[0]}")
    if first is None:
        first = seconds
    return {"command": name, **({"failed": " ".join(failures[0].split())} if failures else {}),
            "first_entry_s": round(first, 3), "seconds": round(seconds, 2),
            "cpu_s": {name: round(value, 2) for name, value in cpu.items()},
            "server_idle_mib": mib(watch.idle["server"]), "server_peak_mib": mib(watch.peak["server"]),
            "server_peak_over_idle": round(watch.peak["server"] / watch.idle["server"], 2),
            "cli_peak_mib": mib(watch.peak["cli"]),
            **({"database_idle_mib": mib(watch.idle["database"]), "database_peak_mib": mib(watch.peak["database"])}
               if watch.database else {})}


def json_array_items(path: Path) -> int:
    """Items of the CLI's JSON array (one per line between `[` and `]`), checked to parse."""
    count = 0
    with path.open("rb") as handle:
        for line in handle:
            text = line.strip().rstrip(b",")
            if text.startswith(b"{"):
                json.loads(text)
                count += 1
    return count


def lines_of(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


async def fill(uri: str, database: str, url: str, token: str, entries: int, workdir: Path) -> float:
    """One file registered through the API, N-1 copies of its record inserted bare; seconds taken."""
    async with Client(url, token, timeout_s=3600) as client:
        await client.put_se(se(SE_NAME, str(workdir / "se")))
        first = {"lfn": "/big/f0000000000.root", "size": 1000, "adler32": "00000001", "replicas": [{"se": SE_NAME}]}
        assert not (await client.register_files([first]))["failed"]
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        files = mongo[database]["files"]
        template = await files.find_one({"_id": first["lfn"]})
        assert template is not None
        url_prefix = template["replicas"][0]["url"].removesuffix("/big/f0000000000.root")
        started = time.perf_counter()
        for start in range(1, entries, FILL_BATCH):
            docs = []
            for i in range(start, min(entries, start + FILL_BATCH)):
                name = f"f{i:010d}.root"
                replica = {**template["replicas"][0], "url": f"{url_prefix}/big/{name}"}
                docs.append({**template, "_id": f"/big/{name}", "name": name, "guid": str(uuid.uuid4()),
                             "replicas": [replica], "registered_in": None})
            await files.insert_many(docs, ordered=False)
        return time.perf_counter() - started
    finally:
        await mongo.close()


async def bare_scan(uri: str, database: str, database_pid: int | None) -> dict[str, Any]:
    """The floor: the same records read straight from the database by keyset pages of 1000, with
    the CPU the database and this client spent per entry."""
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        files = mongo[database]["files"]
        started, first, count, last = time.perf_counter(), None, 0, "/big/"
        db_cpu, own_cpu = cpu_seconds(database_pid) if database_pid else 0.0, time.process_time()
        while True:
            page = await files.find({"_id": {"$gt": last, "$lt": "/big0"}}, {"meta": 0},
                                    comment="cairn:id-order").sort("_id", 1).limit(1000).to_list()
            if first is None:
                first = time.perf_counter() - started
            count += len(page)
            if len(page) < 1000:
                break
            last = page[-1]["_id"]
        seconds = time.perf_counter() - started
        used = {"client": time.process_time() - own_cpu}
        if database_pid:
            used["database"] = cpu_seconds(database_pid) - db_cpu
        return {"entries": count, "first_entry_s": round(first or 0, 3), "seconds": round(seconds, 2),
                "entries_per_s": round(count / seconds),
                "cpu_us_per_entry": {name: round(value / count * 1e6) for name, value in used.items()}}
    finally:
        await mongo.close()


def measure(args: argparse.Namespace, uri: str, database: str, url: str, token: str, watch: Watch,
            workdir: Path) -> dict[str, Any]:
    fill_s = event_loop.run(fill(uri, database, url, token, args.entries, workdir))
    n = args.entries
    out = workdir / "out"
    out.mkdir()
    idle_cli = run_command("cairn ls / --json (idle CLI)", url, token, [(["ls", "/", "--json"], out / "idle.json")],
                           watch, 0, tolerate_failure=True)
    runs = []
    ls = run_command("cairn ls /big --json", url, token, [(["ls", "/big", "--json"], out / "ls.json")], watch, 2)
    assert json_array_items(out / "ls.json") == n, "ls did not list every entry"
    runs.append(ls)
    find_args = ["find", "size>=0", "--path", "/big", "--format", "parquet", "-o"]
    find = run_command("cairn find --format parquet", url, token,
                       [([*find_args, str(out / "find.parquet")], out / "find.log")], watch, 0, out / "find.parquet")
    assert pq.ParquetFile(out / "find.parquet").metadata.num_rows == n, "find did not return every entry"
    runs.append(find)
    dump = run_command("cairn se dump", url, token,
                       [(["se", "dump", SE_NAME, "-o", str(out / "dump.jsonl")], out / "dump.log")], watch, 0,
                       out / "dump.jsonl")
    assert lines_of(out / "dump.jsonl") == n, "se dump did not return every replica"
    runs.append(dump)
    for run in runs:
        run["entries_per_s"] = round(n / run["seconds"])
        run["cpu_us_per_entry"] = {name: round(value / n * 1e6) for name, value in run["cpu_s"].items()}
        run["cli_peak_over_idle"] = round(run["cli_peak_mib"] / idle_cli["cli_peak_mib"], 2)
    # The first-entry time of a file output is when its first bytes land: for Parquet that is the
    # first row group (catalogue.tabular.BATCH rows).
    for run in (find, dump):
        run["first_entry_s_measured_as"] = "first bytes in the output file"
    if args.two_at_once:
        two = run_command("two Parquet finds at once", url, token,
                          [([*find_args, str(out / f"two{i}.parquet")], out / f"two{i}.log") for i in range(2)], watch,
                          0, out / "two0.parquet")
        two["entries_per_s"] = round(2 * n / two["seconds"])
        runs.append(two)
    idle_failed = {"idle_cli_failed": idle_cli["failed"]} if "failed" in idle_cli else {}
    return {"entries": n, "fill_bare_insert_s": round(fill_s, 1), "idle_cli_peak_mib": idle_cli["cli_peak_mib"],
            "idle_cli_seconds": idle_cli["seconds"], **idle_failed, "runs": runs,
            "baseline_bare_keyset_scan": event_loop.run(bare_scan(uri, database, watch.database))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--no-two-at-once", dest="two_at_once", action="store_false",
                        help="skip the run of two Parquet finds at once")
    args = parser.parse_args()
    with api_server("cairn-bench-listing-", os.environ.get("CAIRN_MONGODB_URI")) as api:
        watch = Watch(api.pid, api.database_pid)
        figures = measure(args, api.uri, api.database, api.url, api.token, watch, api.workdir)
        figures["database"] = api.database_kind
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
