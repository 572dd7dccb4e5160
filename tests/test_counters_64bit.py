"""Usage and quota counters are 64-bit on every database: on FerretDB, `$inc` of an int32 on an
int32 wraps at 2^31, so two 2 GB files must not count as -294967296 bytes, nor let a 5 GB quota
lock 6 GB. Through the CLI and the API, with the rule evaluator running on the same database."""

from __future__ import annotations

import json
from pathlib import Path

from bson import Int64
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.usage import USAGE, directory_key
from kernel.db import Document
from rules.evaluator import RuleEvaluator
from rules.locks import LOCKS
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.fixtures.rules import rule_settings, tiered_ses

TWO_GB = 2_000_000_000


async def cli_json(api: RunningApi, *args: str) -> object:
    done = await run_cli(api.url, api.admin_token, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


async def register_big(api: RunningApi, lfn: str, se: str) -> None:
    await cli_json(api, "register", lfn, "--size", str(TWO_GB), "--adler32", "0000abcd", "--se", se)


async def test_two_2gb_files_count_4gb_of_directory_usage(
    api: RunningApi, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path, tier1=1)
    await register_big(api, "/vo/big/f1", "T1-A")
    await register_big(api, "/vo/big/f2", "T1-A")
    usage = await cli_json(api, "usage", "dir", "/vo/big", "--json")
    assert usage == {"path": "/vo/big", "files": 2, "bytes": 2 * TWO_GB}
    stored = await database[USAGE].find_one({"_id": directory_key("/vo/big")})
    assert stored is not None and isinstance(stored["bytes"], Int64)
    ses = await cli_json(api, "usage", "ses", "--json")
    assert {"se": "T1-A", "replicas": 2, "bytes": 2 * TWO_GB} in ses  # type: ignore[operator]


async def test_a_5gb_quota_locks_only_two_of_three_2gb_files(
    api: RunningApi, database: AsyncDatabase[Document], tmp_path: Path, settings: object,
) -> None:
    await tiered_ses(database, tmp_path, tier1=1)
    await cli_json(api, "quota", "set", "root", "T1-A", "5000000000")
    await register_big(api, "/vo/q/f0", "T1-A")
    await cli_json(api, "dataset", "create", "vo:big")
    await cli_json(api, "dataset", "attach", "vo:big", "/vo/q/f0")
    await cli_json(api, "rule", "add", "vo:big", "--copies", "1", "--expression", "T1-A")
    evaluator_settings = rule_settings(settings)  # type: ignore[arg-type]
    await RuleEvaluator(evaluator_settings, database).run(max_cycles=2)
    for lfn in ("/vo/q/f1", "/vo/q/f2"):
        await register_big(api, lfn, "T1-A")
        await cli_json(api, "dataset", "attach", "vo:big", lfn)
        await RuleEvaluator(evaluator_settings, database).run(max_cycles=2)
    locks = {lock["lfn"]: lock["state"] for lock in await database[LOCKS].find({}).to_list()}
    assert sum(state == "ok" for state in locks.values()) == 2, locks
    assert locks.get("/vo/q/f2") != "ok"
    rows = await cli_json(api, "quota", "list", "--json")
    assert [(r["se"], r["used_bytes"], r["used_files"]) for r in rows] == [  # type: ignore[index, union-attr]
        ("T1-A", 2 * TWO_GB, 2)]
