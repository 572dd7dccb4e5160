"""HTTP responses that stream rows: NDJSON by default, Arrow IPC or Parquet on request."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

import pyarrow as pa
from aiohttp import web

from catalogue.tabular import FORMATS, Row, check_format, encode
from kernel.web import stream_ndjson


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
    async for chunk in encode(rows(), schema, tabular):
        await response.write(chunk)
    await response.write_eof()
    return response
