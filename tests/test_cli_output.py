"""What `--json` prints: the API's JSON (datetimes in UTC, non-ASCII as is, integers of any size),
laid out two spaces per level for people, and parsing back to what the compact form says."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from cairn.cli.output import emit_json
from dataio.progress import FileOutcome
from kernel.jsonio import dumps


@pytest.mark.parametrize("huge", [False, True], ids=["orjson", "beyond-64-bits"])
def test_emit_json_is_indented_and_means_what_the_api_says(capsys: pytest.CaptureFixture[str], huge: bool) -> None:
    when = dt.datetime(2026, 12, 3, 16, 30, 0, 123000)  # naive: UTC, as the API writes it
    outcome = FileOutcome("/vo/é/f", "/tmp/f", "uploaded", "SE1", "file:///se/f", 3, "024d0127", 0.5,
                          notes=["a \"quoted\" note"])
    data = [outcome.to_json(), {"when": when, "tags": {"x"}, "n": (1 << 70) if huge else 7, "empty": []}]
    emit_json(data)
    printed = capsys.readouterr().out
    assert json.loads(printed) == json.loads(dumps(data))
    assert json.loads(printed)[1]["when"] == "2026-12-03T16:30:00.123000+00:00"
    assert printed.startswith("[\n  {\n    \"lfn\": ") and printed.endswith("]\n")


def test_outcome_json_is_a_copy(capsys: pytest.CaptureFixture[str]) -> None:
    outcome = FileOutcome("/vo/f", "/tmp/f", "failed", error="refused", code="forbidden", notes=["first"])
    shown = outcome.to_json()
    shown["notes"].append("changed by the caller")
    assert outcome.notes == ["first"]
    assert set(shown) == {"lfn", "local", "status", "se", "url", "size", "adler32", "seconds", "error", "code",
                          "notes"}
