"""The transfer daemons are registered: `cairn daemon NAME` knows them and `cairn up` runs them."""

from __future__ import annotations

import sys

import yaml

from cairn.components import daemon_factories
from cairn.up import child_commands
from kernel.settings import Settings
from tests.fixtures.cli import ROOT


def test_cairn_up_runs_the_transfer_worker_stager_and_reaper(settings: Settings) -> None:
    commands = dict(child_commands(settings))
    for name in ("transfers", "stager", "reaper"):
        assert name in daemon_factories()
        assert commands[f"daemon-{name}"] == [sys.executable, "-m", "cairn", "daemon", name]


def test_compose_runs_each_transfer_daemon() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name in ("transfers", "stager", "reaper"):
        assert services[name]["command"] == ["cairn", "daemon", name]
