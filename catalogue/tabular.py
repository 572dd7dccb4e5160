"""Query results, dataset contents and SE dumps as Apache Arrow IPC streams or Parquet files.

Rows are turned into record batches of BATCH rows and encoded as they come, so a response of
any size streams in constant memory: each batch is one Arrow IPC message or one Parquet row
group, and the encoded bytes are handed on as soon as the batch is written.

File columns: lfn, size, adler32, md5, guid, owner, group, mode, status, created, modified,
ses (list of SE names), ancestors, meta (the effective metadata as JSON text) and one typed
column `meta_<key>` per declared field.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from kernel import jsonio
from kernel.errors import InvalidInput

Format = Literal["arrow", "parquet"]
FORMATS: dict[str, str] = {"arrow": "application/vnd.apache.arrow.stream", "parquet": "application/vnd.apache.parquet"}
# Rows per record batch (Parquet row group): the server holds one batch as Python rows and once
# encoded, so this bounds a stream's memory (10,000 took a 200k-entry stream to 1.7x idle RSS).
BATCH = 2_000
Row = dict[str, Any]

TIMESTAMP = pa.timestamp("ms", tz="UTC")
ARROW_TYPES: dict[str, pa.DataType] = {"int": pa.int64(), "float": pa.float64(), "string": pa.string(),
                                       "datetime": TIMESTAMP, "strings": pa.list_(pa.string())}


def load_converters() -> None:
    """Make pyarrow load now what its first conversion of Python values loads: it looks for pandas
    objects in every conversion, and importing pandas (where it is installed) took the first
    Parquet or Arrow answer of a server 0.6 s; the API server calls this as it starts."""
    pa.array([0])


def check_format(value: str | None) -> Format | None:
    """None for JSON, else the tabular format asked for; InvalidInput for anything else."""
    if value in (None, "", "json", "ndjson"):
        return None
    if value not in FORMATS:
        raise InvalidInput(f"format must be json, arrow or parquet, not {value!r}")
    return value  # type: ignore[return-value]


def file_schema(declared: Mapping[str, str]) -> pa.Schema:
    """The schema of file rows, with a typed column per declared metadata field."""
    fields = [
        pa.field("lfn", pa.string(), nullable=False), pa.field("size", pa.int64()), pa.field("adler32", pa.string()),
        pa.field("md5", pa.string()), pa.field("guid", pa.string()), pa.field("owner", pa.string()),
        pa.field("group", pa.string()), pa.field("mode", pa.int32()), pa.field("status", pa.string()),
        pa.field("created", TIMESTAMP), pa.field("modified", TIMESTAMP), pa.field("ses", pa.list_(pa.string())),
        pa.field("ancestors", pa.list_(pa.string())), pa.field("meta", pa.string()),
    ]
    fields += [pa.field(f"meta_{key}", ARROW_TYPES[kind]) for key, kind in sorted(declared.items())]
    return pa.schema(fields)


def file_row(view: Mapping[str, Any], declared: Mapping[str, str]) -> Row:
    """One file (as `catalogue.find.file_view` shapes it) as a row of `file_schema`."""
    meta = view.get("meta") or {}
    row = {k: view.get(k) for k in ("lfn", "size", "adler32", "md5", "guid", "owner", "group", "mode", "status",
                                     "created", "modified", "ses", "ancestors")}
    row["meta"] = json.dumps(json.loads(jsonio.dumps(meta)), sort_keys=True) if meta else "{}"
    for key, kind in declared.items():
        value = meta.get(key)
        row[f"meta_{key}"] = value if _fits(value, kind) else None
    return row


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "datetime": lambda v: isinstance(v, dt.datetime),
    "strings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}


def _fits(value: Any, kind: str) -> bool:
    """Values stored before a field was declared may have another type: those become null."""
    return value is not None and _CHECKS[kind](value)


DATASET_SCHEMA = pa.schema([pa.field("lfn", pa.string(), nullable=False), pa.field("size", pa.int64())])
REPLICA_SCHEMA = pa.schema([
    pa.field("lfn", pa.string(), nullable=False), pa.field("se", pa.string()), pa.field("url", pa.string()),
    pa.field("status", pa.string()), pa.field("size", pa.int64()), pa.field("adler32", pa.string()),
    pa.field("created", TIMESTAMP),
])


class _Chunks(io.RawIOBase):
    """A write-only file that keeps what is written until it is drained (the encoders' sink)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


async def encode(rows: AsyncIterable[Row], schema: pa.Schema, fmt: Format) -> AsyncIterator[bytes]:
    """Encode rows as an Arrow IPC stream or a Parquet file, yielding bytes batch by batch."""
    sink = _Chunks()
    writer: Any = pq.ParquetWriter(sink, schema) if fmt == "parquet" else pa.ipc.new_stream(sink, schema)
    batch: list[Row] = []
    try:
        async for row in rows:
            batch.append(row)
            if len(batch) >= BATCH:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                batch = []
                chunk = sink.drain()
                if chunk:
                    yield chunk
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
    finally:
        writer.close()
    yield sink.drain()
