"""What a user submits: a job description, validated at the edge, and its parametric expansion.

A description with `parameters` stands for one job per value; `%(param)s` and `%(index)s` in
the name, arguments, input LFNs, input dataset, input query and output LFNs are replaced by the
value and its position.

Inputs are LFNs (`input_data`), plus at most one of: a dataset or container (`input_dataset`)
or a metadata query (`input_query`, scoped to `input_path`). Those two are resolved to LFNs at
submission (wms/input_selection.py), and the stored job lists them in `input_data`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from catalogue.metadata_fields import KEY_PATTERN
from kernel import request_ids
from kernel.bounds import Int64, PositiveInt64
from kernel.errors import InvalidInput

LFN_PATTERN = r"^/[^\x00]*[^/]$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_JOBS_PER_SUBMISSION = 10_000
MAX_INPUTS_PER_JOB = 10_000
MAX_FORMAT_WIDTH = 100
MAX_EXPANDED_CHARS = 64 * 1024 * 1024
# What one conversion adds beyond its width and its value's text (`%f` of 1e308 writes 309 digits).
NUMBER_CHARS = 330
# `%%`, or a conversion's mapping key, flags, width (group 1) and precision (group 2).
CONVERSION = re.compile(r"%(?:%|(?:\([^()]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?)", re.ASCII)
SURROGATE = re.compile("[\ud800-\udfff]")
ParameterValue = str | Int64 | float
ParameterList = Annotated[list[ParameterValue], Field(max_length=MAX_JOBS_PER_SUBMISSION)]


class OutputFile(BaseModel):
    """A file the payload writes into its work directory, kept under `lfn` on SE `se`."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., min_length=1, description="relative path in the job's work directory")
    lfn: str = Field(..., pattern=LFN_PATTERN)
    se: str = Field(..., pattern=NAME_PATTERN)
    meta: dict[str, str | Int64 | float] = Field(
        default_factory=dict, max_length=100,
        description="metadata the output is registered with (e.g. type=dl1), checked against the declared types")

    @field_validator("meta")
    @classmethod
    def _metadata_keys(cls, value: dict[str, str | int | float]) -> dict[str, str | int | float]:
        # A key with `.` or a leading `$` is no field name the database stores (the job's record
        # was refused with a 500), nor one the catalogue registers.
        bad = sorted(key for key in value if not KEY_PATTERN.fullmatch(key))
        if bad:
            raise ValueError(f"metadata keys are identifiers (letters, digits, _; a letter first; at most 64): "
                             f"{bad[:5]}")
        return value

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        _no_nul(value)
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError("must be a relative path inside the work directory")
        return value


class Requirements(BaseModel):
    """Where and on what the job may run. Sites narrow the data-driven choice, never widen it."""

    model_config = ConfigDict(extra="forbid")

    sites: list[str] = Field(default_factory=list, max_length=1000, description="allowed sites; empty means any")
    tags: list[str] = Field(default_factory=list, max_length=1000, description="tags the pilot must offer")
    cpu: int = Field(1, ge=1, le=1024, description="cores")
    memory_mb: int = Field(1024, ge=1, le=4 * 1024 * 1024)

    @field_validator("sites", "tags")
    @classmethod
    def _sorted_unique(cls, value: list[str]) -> list[str]:
        return sorted(set(value))


class ParameterRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Int64 = 0
    stop: Int64
    step: PositiveInt64 = 1

    def count(self) -> int:
        return max(0, -(-(self.stop - self.start) // self.step))

    def values(self) -> list[int]:
        # Bounded before building the list: a huge range would exhaust memory, not just fail.
        count = self.count()
        if count > MAX_JOBS_PER_SUBMISSION:
            raise InvalidInput(f"{count} parameter values exceed the limit of {MAX_JOBS_PER_SUBMISSION}")
        return list(range(self.start, self.stop, self.step))


class JobDescription(BaseModel):
    """One job, or with `parameters` one job per parameter value."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("job", max_length=200)
    executable: str = Field(..., min_length=1)
    arguments: list[str] = Field(default_factory=list, max_length=10_000)
    input_data: list[str] = Field(default_factory=list, max_length=MAX_INPUTS_PER_JOB,
                                  description="input LFNs, placed in the work directory by file name")
    input_dataset: str | None = Field(
        None, max_length=400,
        description="a dataset or container `scope:name`; its files at submission time (a container's "
                    "recursively) are added to the inputs")
    input_query: str | None = Field(
        None, min_length=1, max_length=10_000,
        description="a metadata query in the catalogue's query language (as `cairn find`), e.g. "
                    "`run>=12 particle=proton`; the files it finds at submission time that the submitter may "
                    "read are added to the inputs")
    input_path: str = Field(
        "/", pattern=r"^/", max_length=4096,
        description="the directory `input_query` is scoped to (it must be readable); default the whole namespace")
    outputs: list[OutputFile] = Field(default_factory=list, max_length=1000)
    requirements: Requirements = Field(default_factory=Requirements)
    priority: int = Field(5, ge=0, le=10, description="0 lowest, 10 highest")
    time_limit_s: int = Field(3600, ge=1, le=14 * 86400)
    parameters: ParameterList | ParameterRange | None = None

    @field_validator("executable", "arguments")
    @classmethod
    def _handed_to_the_system(cls, value: str | list[str]) -> str | list[str]:
        for text in [value] if isinstance(value, str) else value:
            _no_nul(text)
        return value

    @model_validator(mode="after")
    def _lfns_after_substitution(self) -> JobDescription:
        if self.input_dataset is not None and self.input_query is not None:
            raise ValueError("give input_dataset or input_query, not both")
        if self.input_path != "/" and self.input_query is None:
            raise ValueError("input_path scopes input_query; it means nothing without one")
        if self.parameters is None:
            _check_lfns(self.input_data)
        return self

    def job_count(self) -> int:
        """How many jobs the description stands for, counted without building them."""
        if self.parameters is None:
            return 1
        if isinstance(self.parameters, ParameterRange):
            return self.parameters.count()
        return len(self.parameters)

    def templates(self) -> list[str]:
        """The texts parameters are substituted into."""
        texts = [self.name, *self.arguments, *self.input_data, *(o.lfn for o in self.outputs),
                 *(o.path for o in self.outputs)]
        return texts + [text for text in (self.input_dataset, self.input_query) if text is not None]

    def parameter_values(self) -> list[ParameterValue] | None:
        if self.parameters is None:
            return None
        if isinstance(self.parameters, ParameterRange):
            return list(self.parameters.values())
        return list(self.parameters)


def _no_nul(text: str) -> str:
    """A path or argument the pilot hands to the system: a NUL byte there made the pilot's exec
    (or its look for the output) raise, which left the job running unheard until it stalled, on
    every pilot that took it again."""
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    return text


def _check_lfns(lfns: list[str]) -> None:
    bad = [lfn for lfn in lfns if not re.fullmatch(LFN_PATTERN, lfn)]
    if bad:
        raise ValueError(f"input LFNs must be absolute paths not ending in '/': {bad[:5]}")
    # The pilot puts each input in the work directory under its file name.
    names = Counter(PurePosixPath(lfn).name for lfn in dict.fromkeys(lfns))
    clashes = sorted(name for name, n in names.items() if n > 1)
    if clashes:
        raise ValueError(f"inputs are placed in the work directory by file name; these names repeat: {clashes[:5]}")


def expand_all(descriptions: Sequence[JobDescription]) -> list[JobDescription]:
    """The concrete jobs of a whole submission, bounded before any is built: a few short
    descriptions with many parameter values (or wide printf fields) would otherwise fill the
    memory from a small body. At most MAX_JOBS_PER_SUBMISSION jobs in all, and at most
    MAX_EXPANDED_CHARS characters of substituted text (an upper bound, reckoned from the templates)."""
    total = sum(d.job_count() for d in descriptions)
    if total > MAX_JOBS_PER_SUBMISSION:
        raise InvalidInput(f"the submission stands for {total} jobs; the limit is {MAX_JOBS_PER_SUBMISSION} "
                           "per submission (split it)")
    chars = sum(_expanded_chars(d) for d in descriptions)
    if chars > MAX_EXPANDED_CHARS:
        raise InvalidInput(f"the parametric jobs would hold up to {chars} characters of substituted text; the "
                           f"limit is {MAX_EXPANDED_CHARS} per submission (split it, or shorten the templates)")
    return [job for d in descriptions for job in expand(d)]


def _expanded_chars(description: JobDescription) -> int:
    values = description.parameter_values()
    if not values:
        return 0
    return len(values) * substitution_bound(description.templates(), values)


def substitution_bound(texts: Sequence[str], values: Sequence[object]) -> int:
    """An upper bound of the characters `texts` hold once any of `values` is substituted into
    each of their conversions (whose widths `check_widths` bounds)."""
    conversions = sum(len(CONVERSION.findall(text)) for text in texts)
    widest = MAX_FORMAT_WIDTH + NUMBER_CHARS + max((len(ascii(v)) for v in values), default=0)
    return sum(map(len, texts)) + conversions * widest


def expand(description: JobDescription) -> list[JobDescription]:
    """The concrete jobs a description stands for (itself, or one per parameter value)."""
    values = description.parameter_values()
    if values is None:
        return [description]
    if not values:
        raise InvalidInput("parameters is empty: a parametric description must give at least one value")
    if len(values) > MAX_JOBS_PER_SUBMISSION:
        raise InvalidInput(f"{len(values)} parameter values exceed the limit of {MAX_JOBS_PER_SUBMISSION}")
    for text in description.templates():
        check_widths(text)
    template = description.model_dump(exclude={"parameters"})
    jobs = []
    for index, value in enumerate(values):
        env = {"param": value, "index": index}
        data = dict(template)
        data["name"] = _substitute(data["name"], env)
        data["arguments"] = [_substitute(a, env) for a in data["arguments"]]
        data["input_data"] = [_substitute(lfn, env) for lfn in data["input_data"]]
        for key in ("input_dataset", "input_query"):
            if data[key] is not None:
                data[key] = _substitute(data[key], env)
        data["outputs"] = [{**o, "lfn": _substitute(o["lfn"], env), "path": _substitute(o["path"], env)}
                           for o in data["outputs"]]
        try:
            jobs.append(JobDescription.model_validate(data))
        except ValueError as exc:
            raise InvalidInput(f"parameter #{index} ({value!r}) gives an invalid job: {exc}") from exc
    return jobs


def check_widths(text: str) -> None:
    """Refuse a printf width or precision that would build a huge string from a short template
    (`%(index)20000000d` is 20 MB per job), before anything is substituted."""
    for width, precision in CONVERSION.findall(text):
        if any(_beyond_bound(n) for n in (width, precision)):
            raise InvalidInput(f"cannot substitute parameters into {text[:100]!r}: a width or precision above "
                               f"{MAX_FORMAT_WIDTH} is refused")


def _beyond_bound(number: str) -> bool:
    digits = number.lstrip("0*")  # long digit strings are refused unread (int() refuses them too)
    return len(digits) > 3 or int(digits or "0") > MAX_FORMAT_WIDTH


def _substitute(text: str, env: dict[str, ParameterValue]) -> str:
    try:
        result = text % env
    except (KeyError, ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            f"cannot substitute parameters into {text!r}: {exc!r} (use %(param)s and %(index)s; write %% for %)"
        ) from exc
    # `%c` of a value in U+D800..U+DFFF makes a lone surrogate, which no UTF-8 text (nor BSON) holds.
    if SURROGATE.search(result):
        raise InvalidInput(f"substituting parameters into {text!r} gives a lone surrogate, not text")
    return result


class Submission(BaseModel):
    """The body of POST /jobs: one description or several (bulk)."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobDescription] = Field(..., min_length=1, max_length=MAX_JOBS_PER_SUBMISSION)
    request_id: str | None = Field(None, pattern=request_ids.PATTERN, description=request_ids.DESCRIPTION)
