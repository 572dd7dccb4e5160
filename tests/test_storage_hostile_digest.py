"""A storage server's malformed checksum answer (`Digest: adler32=<not hex>`) is the storage's
error (StorageError), not a ValueError: raised from the transfer worker's look at a source after a
checksum mismatch, it broke the settling of the whole cycle, so the request never ended (claimed
again and again, its attempts growing past their limit) and the other copies settled with it were
dropped and done again."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files
from catalogue.storage_elements import Protocol, StorageElement
from kernel.db import Document
from kernel.settings import Settings
from storage_plugins.errors import StorageError
from storage_plugins.webdav import WebDavPlugin
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.http_servers import StartServer
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files, run_until_drained
from transfers import queueing
from transfers import requests as rq
from transfers.worker import TransferWorker

RIGHT, WRONG = b"R" * 100, b"W" * 100


async def hostile(request: web.Request) -> web.StreamResponse:
    """Serves WRONG's bytes, and a Digest that is not a checksum."""
    return web.Response(body=WRONG, headers={"Digest": "adler32=not-hex"})


@pytest.mark.parametrize("digest", ["adler32=not-hex", "adler32=-1", "adler32=1234567890abcdef0123"])
async def test_a_malformed_digest_is_a_storage_error(http_server: StartServer, digest: str) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(headers={"Digest": digest, "Content-Length": "7"})

    url = f"{await http_server(answer)}/se/f"
    async with WebDavPlugin() as plugin:
        for ask in (plugin.checksum, plugin.size_and_checksum):
            with pytest.raises(StorageError, match="adler32"):
                await ask(url)


async def test_a_source_answering_a_malformed_digest_fails_its_request_alone(
    http_server: StartServer, database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    port = int((await http_server(hostile)).rsplit(":", 1)[1])
    bad = StorageElement(name="HOSTILE", site="S", protocols=[Protocol(scheme="http", host="127.0.0.1", port=port,
                                                                       prefix="/se")])
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, bad, src, dst)
    await put_files(database, [src], ["/vo/good"], size=100)
    result = await register_files(database, ADMIN, [{"lfn": "/vo/f", "size": len(RIGHT),
                                                     "adler32": f"{zlib.adler32(RIGHT):08x}",
                                                     "replicas": [{"se": "HOSTILE"}]}])
    assert not result["failed"], result
    await queueing.submit_transfers(database, [{"lfn": "/vo/f", "dest_se": "DST"},
                                               {"lfn": "/vo/good", "dest_se": "DST"}], requester="t")
    await run_until_drained(database, TransferWorker(fast_settings(settings, copy_timeout_s=10), database),
                            timeout_s=30)
    ended = {r["lfn"]: r async for r in database[rq.REQUESTS].find({})}
    assert ended["/vo/good"]["state"] == "done", ended["/vo/good"]
    assert ended["/vo/f"]["state"] == "failed" and ended["/vo/f"]["attempts"] <= rq.DEFAULT_MAX_ATTEMPTS, ended["/vo/f"]
