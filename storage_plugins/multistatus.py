"""WebDAV PROPFIND answers (207 Multi-Status), parsed as they arrive and bounded.

A server's answer is read no further than `limit` bytes in all, nor further than
`ENTRY_GAP_BYTES` without a complete entry: a server (buggy, hostile, or one a redirect chose)
may send an answer without end, and a listing of a large directory still parses in O(entry)
memory besides the entries themselves.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterable
from email.utils import parsedate_to_datetime
from urllib.parse import unquote, urlsplit, urlunsplit

from storage_plugins.base import FileInfo
from storage_plugins.errors import StorageError

# An entry is a few hundred bytes; this much without one is not a listing.
ENTRY_GAP_BYTES = 1 << 20


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def _entry(parts: tuple[str, str], response: ET.Element) -> FileInfo:
    """One <response> as a FileInfo, its href resolved against (scheme, netloc)."""
    href, size, is_dir, mtime = "", 0, False, None
    for element in response.iter():
        name = _local(element.tag)
        value = (element.text or "").strip()
        if name == "href":
            href = value
        elif name == "getcontentlength" and value:
            size = int(value)
        elif name == "collection" or (name == "iscollection" and value == "1"):
            is_dir = True
        elif name == "getlastmodified" and value:
            with contextlib.suppress(TypeError, ValueError):
                mtime = parsedate_to_datetime(value).timestamp()
    path = unquote(urlsplit(href).path).rstrip("/") or "/"
    return FileInfo(urlunsplit((*parts, path, "", "")), 0 if is_dir else size, is_dir, mtime)


async def read_multistatus(base_url: str, chunks: AsyncIterable[bytes], limit: int) -> list[FileInfo]:
    """FileInfos of the <response> children of a multistatus answer, hrefs resolved against
    base_url; StorageError when the answer is unreadable or passes its bounds (see above)."""
    split = urlsplit(base_url)
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
    entries: list[FileInfo] = []
    root: ET.Element | None = None
    depth = total = gap = 0
    try:
        async for chunk in chunks:
            total, gap = total + len(chunk), gap + len(chunk)
            if total > limit:
                raise StorageError(f"{base_url}: PROPFIND answer larger than {limit} bytes (max_propfind_bytes)")
            parser.feed(chunk)
            for item in parser.read_events():
                element = item[-1]
                if not isinstance(element, ET.Element):  # only "start"/"end" were asked for
                    continue
                if item[0] == "start":
                    depth += 1
                    root = element if root is None else root
                    continue
                depth -= 1
                if depth == 1 and root is not None and _local(element.tag) == "response":
                    entries.append(_entry((split.scheme, split.netloc), element))
                    root.remove(element)  # parsed: the tree keeps nothing of it
                    gap = 0
            if gap > ENTRY_GAP_BYTES:
                raise StorageError(f"{base_url}: PROPFIND answer has no entry in {gap} bytes")
        parser.close()
    except (ET.ParseError, ValueError) as exc:
        raise StorageError(f"{base_url}: unreadable PROPFIND answer ({exc})") from exc
    return entries
