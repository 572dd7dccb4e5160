"""Watching transfers: per-link stats and queue depths through the API, the CLI and /metrics."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import aiohttp
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from kernel.db import Document, cairn_build_at
from kernel.principal import DEFAULT_VO
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files, run_until_drained
from transfers import link_stats, queueing
from transfers import requests as rq
from transfers.worker import TransferWorker


async def _some_transfers(db: AsyncDatabase[Document], api: RunningApi, tmp_path: Path) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(db, src, dst)
    await put_files(db, [src], ["/vo/a", "/vo/b"], size=1000)
    await queueing.submit_transfers(db, [{"lfn": lfn, "dest_se": "DST"} for lfn in ("/vo/a", "/vo/b", "/vo/none")],
                                    requester="t")
    (tmp_path / "src" / "vo" / "b").unlink()
    await run_until_drained(db, TransferWorker(fast_settings(api.settings), db))
    await queueing.submit_transfers(db, [{"lfn": "/vo/a", "dest_se": "SRC"}], requester="t")  # stays queued


async def test_stats_report_links_queues_and_failures(
    api: RunningApi, admin: Client, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    await _some_transfers(database, api, tmp_path)
    stats = await admin.transfer_stats()
    [link] = stats["links"]
    assert (link["source"], link["dest"], link["done"], link["failed"], link["bytes"]) == ("SRC", "DST", 1, 1, 1000)
    assert link["failures"] == {"source_missing": 1} and link["modes"] == {"stream": 1}
    assert stats["failures"] == {"source_missing": 1}
    # What the worker's database work cost per file it transferred, amortised over its cycles.
    assert link["db_commands"] > 0 and stats["db_commands_per_file"] == link["db_commands_per_file"] > 0
    queues = {(q["kind"], q["state"], q["dest_se"]): q["requests"] for q in stats["queues"]}
    assert queues == {("transfer", "done", "DST"): 1, ("transfer", "failed", "DST"): 2,
                      ("transfer", "queued", "SRC"): 1}


async def test_cli_prints_stats_as_json_and_as_tables(
    api: RunningApi, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    await _some_transfers(database, api, tmp_path)
    out = await run_cli(api.url, api.admin_token, "transfers", "stats", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["links"][0]["done"] == 1
    human = await run_cli(api.url, api.admin_token, "transfers", "stats")
    assert human.returncode == 0 and "SRC" in human.stdout and "source_missing" in human.stdout
    assert "database commands per transferred file: " in human.stdout
    assert "not reported" not in human.stdout


async def test_metrics_endpoint_exports_link_counters_and_queue_gauges(
    api: RunningApi, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    await _some_transfers(database, api, tmp_path)
    async with aiohttp.ClientSession() as session, session.get(f"{api.url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert 'cairn_transfers_done_total{dest="DST",source="SRC",vo="local"} 1.0' in text
    assert 'cairn_transfers_failed_total{dest="DST",reason="source_missing",source="SRC",vo="local"} 1.0' in text
    assert 'cairn_transfer_bytes_total{dest="DST",source="SRC",vo="local"} 1000.0' in text
    assert 'cairn_requests{dest_se="SRC",kind="transfer",state="queued",vo="local"} 1.0' in text


async def test_queues_are_counted_in_an_index_on_the_build(
    api: RunningApi, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    """On Cairn's FerretDB build the requests have an index by (state, kind, dest_se, vo), which
    its group count reads (`tests/test_group_count.py` shows it does) instead of every request
    ever held; elsewhere it is not made (MongoDB's `$group` reads no index). Counted from it, the
    queues are what the requests hold."""
    await _some_transfers(database, api, tmp_path)
    made = "requests_by_state_kind_dest_vo" in await database[rq.REQUESTS].index_information()
    assert made == (await cairn_build_at(database) >= 11)
    recount = Counter((d["state"], d["kind"], d["dest_se"], d.get("vo") or DEFAULT_VO)
                      for d in await database[rq.REQUESTS].find({}).to_list())
    depths = await link_stats.queue_depths(database, by_vo=True)
    assert {(q["state"], q["kind"], q["dest_se"], q["vo"]): q["requests"] for q in depths} == recount
