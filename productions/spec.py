"""What a user gives to create a transformation: validated at the edge, before anything is stored.

A job template is a job description (`wms.description.JobDescription`) whose strings may hold
placeholders filled per task: `%(transformation)s`, `%(task)s` (the task's number) and any
metadata key whose value all of the task's input files share (e.g. `%(run)s`). The task's input
files become the job's `input_data`. An output's `meta` value that is exactly one placeholder
takes the value with its type (`run: "%(run)s"` stays a number).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kernel.errors import InvalidInput
from rules.se_expression import validate as validate_expression
from wms.description import NAME_PATTERN, JobDescription, check_widths, substitution_bound

Kind = Literal["processing", "mc", "replication", "removal"]
GroupingPlugin = Literal["count", "size", "meta", "broadcast", "share"]
# A value that fills every placeholder when the template is checked at creation.
_SAMPLE = {"transformation": "t", "transformation_id": "t", "task": 1}
# The most characters a task's job may hold once filled: its record must fit a 16 MB document.
MAX_FILLED_CHARS = 8 * 1024 * 1024


class Grouping(BaseModel):
    """How unused files become tasks: `count` files per task, files up to `bytes` per task,
    files sharing the value of the metadata `key`, files on the same SEs (`broadcast`), or files
    divided among sites by `shares` (`share`); at most `count` per task except for `size`
    (see `productions.grouping`)."""

    model_config = ConfigDict(extra="forbid")

    plugin: GroupingPlugin = "count"
    count: int = Field(1, ge=1, le=10_000, description="files per task (the most, for `meta`)")
    bytes: int = Field(10**10, ge=1, description="total input bytes per task (`size`)")
    key: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$",
                            description="the metadata key whose value groups files (`meta`)")
    shares: dict[str, float] | None = Field(None, min_length=1, max_length=1000,
                                            description="site name → its share of the files (`share`)")

    @model_validator(mode="after")
    def _key_for_meta(self) -> Grouping:
        if (self.plugin == "meta") != (self.key is not None):
            raise ValueError("give `key` with plugin meta, and only then")
        if (self.plugin == "share") != (self.shares is not None):
            raise ValueError("give `shares` with plugin share, and only then")
        for site, share in (self.shares or {}).items():
            if not re.fullmatch(NAME_PATTERN, site) or not 0 < share <= 1e6:
                raise ValueError(f"shares: {site!r}: {share} must be a site name with a share above 0")
        return self


class RequestTemplate(BaseModel):
    """What a replication or removal transformation asks of the transfer queue for each file:
    replication keeps `copies` replicas on SEs of the expression `ses`; removal deletes the
    file's replicas on the SEs of `ses` (never its last one)."""

    model_config = ConfigDict(extra="forbid")

    ses: str = Field(..., min_length=1, max_length=1000, description="an SE expression, e.g. tier=1")
    copies: int = Field(1, ge=1, le=100, description="replicas to keep on those SEs (replication)")
    activity: str = Field("production", max_length=64)

    @model_validator(mode="after")
    def _expression_parses(self) -> RequestTemplate:
        validate_expression(self.ses)
        return self


class TransformationSpec(BaseModel):
    """A transformation to create."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=NAME_PATTERN)
    type: Kind = "processing"
    input_query: str | None = Field(None, min_length=1, max_length=10_000,
                                    description="metadata query (as `cairn find`) selecting the input files")
    input_path: str = Field("/", pattern=r"^/", max_length=4096, description="the directory the query is scoped to")
    job: dict[str, Any] | None = Field(None, description="the job template (a job description with placeholders)")
    request: RequestTemplate | None = Field(None, description="what to ask of the transfer queue "
                                                              "(replication, removal)")
    grouping: Grouping = Field(default_factory=Grouping)
    max_tasks: int | None = Field(None, ge=0, le=10_000_000, description="at most this many tasks (MC: exactly)")
    max_attempts: int = Field(3, ge=1, le=20, description="attempts of a task before its files are problematic")
    priority: int = Field(5, ge=0, le=10)
    group: str | None = Field(None, pattern=NAME_PATTERN, description="the job group (default: the owner's)")

    @model_validator(mode="after")
    def _consistent(self) -> TransformationSpec:
        if self.type == "mc" and self.input_query is not None:
            raise ValueError("an mc transformation has no input query")
        if self.type == "mc" and self.max_tasks is None:
            raise ValueError("an mc transformation needs max_tasks (how many tasks to make)")
        if self.grouping.plugin == "share" and self.type not in ("processing", "replication"):
            raise ValueError("grouping by share is for processing and replication transformations")
        if self.type == "mc" and self.grouping.plugin == "broadcast":
            raise ValueError("an mc transformation has no input files to broadcast")
        if self.type != "mc" and self.input_query is None:
            raise ValueError(f"a {self.type} transformation needs an input_query")
        if self.type in ("replication", "removal"):
            if self.request is None or self.job is not None:
                raise ValueError(f"a {self.type} transformation gives a `request` template, not a `job`")
            return self
        if self.job is None or self.request is not None:
            raise ValueError(f"a {self.type} transformation gives a `job` template, not a `request`")
        if "parameters" in self.job or "input_data" in self.job:
            raise ValueError("the job template may not give parameters or input_data (the task gives its inputs)")
        render(self.job, _SAMPLE | placeholder_keys(self.job, sample=True), task_inputs=[])
        return self


def placeholder_keys(template: Any, *, sample: bool = False) -> dict[str, Any]:
    """The metadata placeholders a template uses (`%(run)s` → run), each with a sample value."""
    found: dict[str, Any] = {}
    for text in _strings(template):
        for key in re.findall(r"%\(([A-Za-z_][A-Za-z0-9_.-]*)\)", text):
            if key not in _SAMPLE:
                found[key] = 1 if sample else None
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _fill(value: Any, env: dict[str, Any]) -> Any:
    if isinstance(value, str):
        for key, given in env.items():
            if value == f"%({key})s":
                return given
        return value % env
    if isinstance(value, dict):
        return {k: _fill(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, env) for v in value]
    return value


def render(template: dict[str, Any], env: dict[str, Any], *, task_inputs: list[str]) -> JobDescription:
    """The job of one task: the template with its placeholders filled and the task's inputs
    (ValueError naming the problem when a placeholder has no value or the job is invalid).
    A file's metadata fills it, so any value must give a ValueError, not another error: `%(run)c`
    with run=2**40 overflows, with run=0xD800 gives a lone surrogate the database cannot store.
    What filling could build is bounded first, as for parametric jobs (`wms.description`): a
    printf width (`%(task)999999999d` is 1 GB) or a long value in many placeholders would
    otherwise fill the memory of the server (at creation) or of the task daemon."""
    texts = _strings(template)
    try:
        for text in texts:
            check_widths(text)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None
    if (bound := substitution_bound(texts, list(env.values()))) > MAX_FILLED_CHARS:
        raise ValueError(f"the job template would hold up to {bound} characters once filled; the limit is "
                         f"{MAX_FILLED_CHARS} (fewer placeholders, or shorter values)")
    try:
        filled = _fill(template, env)
        _check_text(filled)
    except (KeyError, ValueError, TypeError, ArithmeticError) as exc:
        raise ValueError(f"cannot fill the job template's placeholders: {exc!r}") from exc
    return JobDescription.model_validate({**filled, "input_data": task_inputs})


def _check_text(value: Any) -> None:
    """UnicodeEncodeError (a ValueError) for text that is not valid UTF-8 (a lone surrogate)."""
    if isinstance(value, str):
        value.encode()
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)
