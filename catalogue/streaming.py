"""HTTP responses that stream rows: NDJSON by default, Arrow IPC or Parquet on request."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

import pyarrow as pa
from aiohttp import web

from catalogue.tabular import FORMATS, Row, check_format, encode
from kernel.web import stream_ndjson

log = logging.getLogger("cairn.api")


async def stream_rows(
    request: web.Request, items: AsyncIterable[Any], *, view: Callable[[Any], Row], schema: pa.Schema,
    fmt: str | None, filename: str,
) -> web.StreamResponse:
    """Stream `items` shaped by `view`: as NDJSON, or encoded as `fmt` (arrow or parquet)."""
    tabular = check_format(fmt)

    async def rows() -> AsyncIterator[Row]:
        async for item in items:
            yield view(item)

    if tabular is None:
        return await stream_ndjson(request, rows())
    extension = "arrows" if tabular == "arrow" else "parquet"
    response = web.StreamResponse(headers={
        "Content-Type": FORMATS[tabular], "Content-Disposition": f'attachment; filename="{filename}.{extension}"'})
    await response.prepare(request)
    try:
        async for chunk in encode(rows(), schema, tabular):
            await response.write(chunk)
    except Exception:
        # The headers are gone and a binary format has no room for an error line: cut the
        # connection before the body's end, so the client sees an incomplete body. An error
        # answer made now (the error middleware's) went nowhere, and the client waited forever.
        log.exception("%s %s: the stream stopped midway; connection cut", request.method, request.path)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response
