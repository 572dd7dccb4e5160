"""Every Cairn process runs on asyncio's loop unless CAIRN_EVENT_LOOP=uvloop (kernel/event_loop.py);
the suite runs on asyncio's (a pilot on uvloop: tests/test_payload_account.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from kernel import event_loop
from kernel.errors import ConfigurationError


async def test_the_suite_runs_on_the_default_loop() -> None:
    assert type(asyncio.get_running_loop()).__module__.startswith("asyncio")


async def _kind() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_setting_chooses_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.ENV, raising=False)
    assert event_loop.loop_name() == "asyncio"
    assert event_loop.run(_kind()).startswith("asyncio")
    monkeypatch.setenv(event_loop.ENV, " UVLOOP ")
    assert event_loop.run(_kind()) == "uvloop"
    monkeypatch.setenv(event_loop.ENV, "asyncio")
    assert event_loop.run(_kind()).startswith("asyncio")


def test_a_wrong_setting_is_a_clear_error_at_the_command_line() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(event_loop.ENV, "tokio")
        with pytest.raises(ConfigurationError, match="CAIRN_EVENT_LOOP='tokio': give one of asyncio, uvloop"):
            event_loop.loop_name()
    done = subprocess.run([sys.executable, "-m", "cairn", "whoami"], env={"CAIRN_EVENT_LOOP": "tokio",
                          "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "CAIRN_EVENT_LOOP='tokio': give one of asyncio, uvloop" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
