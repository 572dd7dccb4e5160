"""What a caller gives to register files (`FileIn`, `ReplicaIn`, checked in a batch by
`parse_files`) and what `files` stores (`FileRecord` with its `ReplicaRecord`s)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from catalogue.lfn import check_lfn
from catalogue.metadata_fields import MAX_KEYS_PER_ENTRY
from catalogue.provenance import MAX_ANCESTORS
from kernel.bounds import Size
from kernel.errors import InvalidInput

ReplicaStatus = Literal["available", "copying", "unavailable", "bad", "lost"]
REPLICA_STATUSES: tuple[str, ...] = ("available", "copying", "unavailable", "bad", "lost")
Outcome = dict[str, dict[str, Any]]


class ReplicaRecord(TypedDict):
    """A copy of a file on one SE, embedded in the file record's `replicas`."""

    se: str
    url: str  # derived from the SE's lfn2pfn rule (catalogue.replica_urls), maybe with `!tag`
    status: str  # one of REPLICA_STATUSES
    created: dt.datetime
    modified: dt.datetime
    writer: NotRequired[str]  # a `copying` replica's upload (`catalogue.upload_leases`)
    writer_at: NotRequired[dt.datetime]  # when that upload last took or renewed it
    founding: NotRequired[bool]  # registered with its file by that upload (`writer_tokens.FOUNDING`)


class FileRecord(TypedDict):
    """A document of `files`: the LFN is its `_id`; metadata keys sit in `meta` (and the
    inherited maps of `catalogue.metadata.metadata_fields_for`); `version` bumps on every
    replica change so guarded writes can detect races."""

    _id: str
    parent: str
    name: str
    size: int
    adler32: str | None
    md5: str | None
    guid: str
    status: str
    owner: str
    group: str
    mode: int
    created: dt.datetime
    modified: dt.datetime
    replicas: list[ReplicaRecord]
    version: int
    meta: dict[str, Any]
    meta_effective: dict[str, Any]
    meta_origin: dict[str, str]
    ancestors: NotRequired[list[str]]
    registered_in: NotRequired[str]

def _lfn(value: str) -> str:
    try:
        return check_lfn(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from exc


class ReplicaIn(BaseModel):
    """A replica as a caller gives it: the SE, and the URL unless the SE's rule should build it."""

    model_config = ConfigDict(extra="forbid")

    se: str = Field(..., min_length=1, max_length=64)
    url: str | None = Field(None, min_length=1, max_length=4096)
    status: ReplicaStatus = "available"
    writer: str | None = Field(None, min_length=16, max_length=64,
                               description="a `copying` replica's upload token: the upload holds its lease from "
                                           "the registration on (`catalogue.upload_leases`)")

    @model_validator(mode="after")
    def _writer_of_copying(self) -> ReplicaIn:
        if self.writer is not None and self.status != "copying":
            raise ValueError("only a copying replica has a writer")
        return self


class FileIn(BaseModel):
    """A file to register."""

    model_config = ConfigDict(extra="forbid")

    lfn: str
    size: Size
    adler32: str = Field(..., pattern=r"^[0-9a-fA-F]{8}$")
    md5: str | None = Field(None, pattern=r"^[0-9a-fA-F]{32}$")
    guid: str | None = Field(None, min_length=1, max_length=64)
    mode: int | None = Field(None, ge=0, le=0o777)
    replicas: list[ReplicaIn] = Field(default_factory=list, max_length=100)
    meta: dict[str, Any] = Field(default_factory=dict, max_length=MAX_KEYS_PER_ENTRY,
                                 description="own metadata (validated against declared types)")
    ancestors: list[str] = Field(default_factory=list, max_length=MAX_ANCESTORS,
                                 description="LFNs this file was made from (provenance)")

    @field_validator("lfn")
    @classmethod
    def _valid_lfn(cls, value: str) -> str:
        return _lfn(value)

    @field_validator("ancestors")
    @classmethod
    def _valid_ancestors(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(_lfn(v) for v in value))

    @field_validator("replicas")
    @classmethod
    def _one_per_se(cls, value: list[ReplicaIn]) -> list[ReplicaIn]:
        # A file has one replica per SE (as `push_replicas` keeps it): two would be stored and
        # counted on the SE's usage twice.
        seen: set[str] = set()
        for replica in value:
            if replica.se in seen:
                raise ValueError(f"SE {replica.se} is named twice: a file has one replica per SE")
            seen.add(replica.se)
        return value

    @model_validator(mode="after")
    def _not_its_own_ancestor(self) -> FileIn:
        if self.lfn in self.ancestors:
            raise ValueError(f"{self.lfn} cannot be its own ancestor")
        return self

    @field_validator("adler32", "md5")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value


def parse_files(items: Sequence[Any]) -> list[FileIn]:
    """Validate a batch up front: one bad item rejects the batch (400), so nothing is written."""
    out = []
    for index, item in enumerate(items):
        try:
            out.append(item if isinstance(item, FileIn) else FileIn.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
            raise InvalidInput(f"file #{index}: {problems}", details={"index": index}) from exc
    return out
