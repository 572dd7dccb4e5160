"""A bounded property-based run over the OpenAPI document (schemathesis): generated valid and
invalid calls to every route of a real server on loopback, with an admin token. No answer may
be a 5xx, and every answer must match the status codes and schemas the document declares.

Bounded for CI: a fixed number of examples per operation, derandomized (same cases every run),
no example database, and the whole run under a wall-clock budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from pymongo.asynchronous.database import AsyncDatabase
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kernel.db import Document
from tests.fixtures.api import RunningApi

# Valid calls reach further into the handlers than invalid ones, which mostly meet the body's
# model: 10 and 6 per operation (12 and 12 took 74 s of the suite for 3603 calls).
EXAMPLES = {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 6}
BUDGET_S = 170
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Streams answer NDJSON whose lines the document cannot describe; their status is still checked.
STREAMING = "application/x-ndjson"


@dataclass
class Run:
    """One pass over the document: where to call, as whom, until when, and what went wrong."""

    base_url: str
    headers: dict[str, str]
    deadline: float
    session: requests.Session
    calls: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def check(self, operation: APIOperation, mode: GenerationMode, case: schemathesis.Case) -> None:
        if time.monotonic() > self.deadline:
            return
        self.calls += 1
        response = case.call(base_url=self.base_url, session=self.session, headers=self.headers, timeout=30)
        self.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, FailureGroup) as exc:  # collected, reported together
            kinds = [line.strip() for line in str(exc).splitlines() if line.startswith("- ")] or [str(exc)]
            self.failures.append(f"{operation.label} [{mode.value}] -> {response.status_code} "
                                 f"{response.text[:200]!r}: {'; '.join(kinds)}\n  {case.as_curl_command()[:300]}")

    def exercise(self, operation: APIOperation, mode: GenerationMode) -> None:
        @settings(max_examples=EXAMPLES[mode], derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(mode))
        def run(case: schemathesis.Case) -> None:
            self.check(operation, mode, case)

        with contextlib.suppress(Unsatisfiable):  # negative mode: nothing to make invalid
            run()


def _exercise(doc: dict[str, Any], base_url: str, token: str, deadline: float) -> Run:
    """Every operation's generated cases, valid and invalid, against the server."""
    schema = schemathesis.openapi.from_dict(doc)
    with requests.Session() as session:
        run = Run(base_url, {"Authorization": f"Bearer {token}"}, deadline, session)
        for result in schema.get_all_operations():
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run.exercise(result.ok(), mode)
    return run


async def test_generated_calls_never_get_a_5xx_and_match_the_schemas(
    api: RunningApi, catalogue_db: AsyncDatabase[Document]
) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{api.url}/api/v1/openapi.json") as resp:
        doc = await resp.json()
    started = time.monotonic()
    run = await asyncio.to_thread(_exercise, doc, api.url, api.admin_token, started + BUDGET_S)
    print(f"{run.calls} calls, statuses {dict(sorted(run.statuses.items()))}", *run.failures, sep="\n")
    assert not run.failures, f"{len(run.failures)} failing case(s) of {run.calls}; the first: {run.failures[0]}"
    assert run.calls >= 1000, f"only {run.calls} calls ran within {BUDGET_S} s"


async def test_every_operation_publishes_its_answer_schemas(api: RunningApi) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{api.url}/api/v1/openapi.json") as resp:
        doc = await resp.json()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            success = [code for code in op["responses"] if code.startswith("2")]
            assert len(success) == 1, (method, path, success)
            content = op["responses"][success[0]]["content"]
            assert STREAMING in content or "schema" in content["application/json"], (method, path)
            for code, answer in op["responses"].items():
                if code == "default" or code >= "400":
                    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "100000" in doc["components"]["schemas"]["LookupBody"]["properties"]["lfns"]["description"]
