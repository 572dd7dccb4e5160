"""compose.yaml stays valid against the Compose specification and names every service."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_validates_against_the_compose_spec() -> None:
    tool = shutil.which("check-jsonschema")
    if tool is None:
        pytest.fail("check-jsonschema is not installed (it is in the test extras)")
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(ROOT / "compose.yaml")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_mongodb_minio_xrootd_and_the_server_with_health_checks() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name in ("mongo", "minio", "xrootd", "server"):
        assert name in services, f"compose.yaml has no {name} service"
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert "--replSet" in services["mongo"]["command"]


def test_compose_runs_every_daemon_cairn_knows() -> None:
    from cairn.components import daemon_factories

    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    commands = {tuple(s.get("command", [])) for s in services.values()}
    for name in daemon_factories():
        assert ("cairn", "daemon", name) in commands, f"compose.yaml does not run daemon {name}"
