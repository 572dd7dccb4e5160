"""`cairn upload` and `cairn download` as a user runs them (subprocesses against the test API)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.payloads import Payload, small_files
from tests.fixtures.transfers import delete_removed_bytes


async def test_upload_then_download_with_json(
    api: RunningApi, live_ses: LiveSEs, payload: Callable[[int], Payload], tmp_path: Path
) -> None:
    se = await live_ses.add("s3")
    data = payload(3000)
    env = {"CAIRN_STORAGE_CREDENTIALS": json.dumps(live_ses.credentials)}
    up = await run_cli(api.url, api.admin_token, "upload", str(data.path), "/cta/cli/f", "--se", se.name, "--json",
                       env=env)
    assert up.returncode == 0, up.stderr
    [uploaded] = json.loads(up.stdout)
    assert (uploaded["lfn"], uploaded["status"], uploaded["adler32"]) == ("/cta/cli/f", "uploaded", data.adler32)

    down = await run_cli(api.url, api.admin_token, "download", "/cta/cli/f", str(tmp_path / "got"), "--json", env=env)
    assert down.returncode == 0, down.stderr
    [downloaded] = json.loads(down.stdout)
    assert (downloaded["status"], downloaded["se"]) == ("downloaded", se.name)
    assert (tmp_path / "got").read_bytes() == data.path.read_bytes()


async def test_many_files_upload_into_a_directory_and_print_a_table(
    api: RunningApi, live_ses: LiveSEs, tmp_path: Path
) -> None:
    se = await live_ses.add("file")
    names = [str(path) for path in small_files(tmp_path, 3, prefix="f", unit=b"x")]
    up = await run_cli(api.url, api.admin_token, "upload", *names, "/cta/many", "--se", se.name)
    assert up.returncode == 0, up.stderr
    assert "/cta/many/f2" in up.stdout and "uploaded: 3" in up.stderr
    down = await run_cli(api.url, api.admin_token, "download", "/cta/many/f1", "/cta/many/f2",
                         str(tmp_path / "out"), "--json")
    assert [d["status"] for d in json.loads(down.stdout)] == ["downloaded", "downloaded"]
    assert (tmp_path / "out" / "f2").read_bytes() == b"xx"


async def test_a_failed_download_exits_1_with_the_reason(api: RunningApi, live_ses: LiveSEs, tmp_path: Path) -> None:
    down = await run_cli(api.url, api.admin_token, "download", "/cta/none", str(tmp_path), "--json")
    assert down.returncode == 1
    [failed] = json.loads(down.stdout)
    assert (failed["status"], failed["code"]) == ("failed", "not_found")


async def test_an_se_switched_off_for_writing_is_an_error_message_not_a_traceback(
    api: RunningApi, live_ses: LiveSEs, payload: Callable[[int], Payload]
) -> None:
    se = await live_ses.add("file", write_enabled=False)
    up = await run_cli(api.url, api.admin_token, "upload", str(payload(1).path), "/cta/f", "--se", se.name)
    assert up.returncode == 2 and "forbidden" in up.stderr and se.name in up.stderr
    assert "Traceback" not in up.stderr


@pytest.mark.parametrize("kind", ["davs", "s3", "s3-signed"])
async def test_upload_and_download_leave_no_unclosed_session(
    api: RunningApi, live_ses: LiveSEs, payload: Callable[[int], Payload], tmp_path: Path, kind: str
) -> None:
    # The storage plugins' HTTP sessions belong to the client and are closed with it: aiohttp
    # warns "Unclosed client session" / "Unclosed connector" on stderr when one is left open.
    se = await live_ses.add(kind.removesuffix("-signed"), secrets_on_server=kind.endswith("-signed"))
    data = payload(2000)
    env = {"CAIRN_STORAGE_CREDENTIALS": json.dumps(live_ses.credentials)}
    up = await run_cli(api.url, api.admin_token, "upload", str(data.path), "/cta/closed/f", "--se", se.name, env=env)
    assert up.returncode == 0, up.stderr
    down = await run_cli(api.url, api.admin_token, "download", "/cta/closed/f", str(tmp_path / "got"), env=env)
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "got").read_bytes() == data.path.read_bytes()
    assert "Unclosed" not in up.stderr + down.stderr, up.stderr + down.stderr


async def test_rm_force_takes_a_file_with_replicas_out_and_the_reaper_deletes_its_bytes(
    api: RunningApi, live_ses: LiveSEs, database: AsyncDatabase[Document], settings: Settings, tmp_path: Path
) -> None:
    se = await live_ses.add("file")
    local = tmp_path / "f"
    local.write_bytes(b"forced out\n")
    up = await run_cli(api.url, api.admin_token, "upload", str(local), "/cta/forced", "--se", se.name)
    assert up.returncode == 0, up.stderr
    stored = live_ses.stored_file(se.name, "/cta/forced")
    plain = await run_cli(api.url, api.admin_token, "rm", "/cta/forced")
    assert plain.returncode != 0 and "replica" in plain.stderr, plain
    both = await run_cli(api.url, api.admin_token, "rm", "-r", "--force", "/cta/forced")
    assert both.returncode == 2, both
    forced = await run_cli(api.url, api.admin_token, "rm", "--force", "/cta/forced", "--json")
    assert forced.returncode == 0, forced.stderr
    assert "/cta/forced" in json.loads(forced.stdout)["successful"]
    again = await run_cli(api.url, api.admin_token, "rm", "--force", "/cta/forced")
    assert (again.returncode, again.stdout) == (0, "removed 0 entries (no such file)\n"), again  # idempotent
    assert stored.exists()  # until the reaper has deleted them; the path is held meanwhile
    assert await delete_removed_bytes(database, settings) == 1
    assert not stored.exists()
