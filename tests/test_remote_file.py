"""store/remote_file.py: a stored file read like a local one, in blocks, from the real store.

The reads go through ``couch_front.CouchFront``, which records every request: once answering ranged
reads with 206 as Apache CouchDB does (the path production takes there), once passing them to
pouchdb-server, which ignores Range.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator

import pytest
from conftest import CouchServer
from couch_front import CouchFront

from dicomweb_couch.store import remote_file
from dicomweb_couch.store.couch import ATTACHMENT, Couch
from dicomweb_couch.store.remote_file import BLOCK, RemoteFile

DATA = os.urandom(12 * BLOCK + 1234)


@pytest.fixture(params=[True, False], ids=["ranges-honoured", "ranges-ignored"])
async def fronted(request, aiohttp_server, couch_server: CouchServer,
                  couch_db_name: str, monkeypatch) -> AsyncIterator[tuple[Couch, CouchFront]]:
    """A Couch reaching the store through a front; the file DATA stored as document 2.25.1."""
    monkeypatch.setattr(remote_file, "MAX_SKIP", 3 * BLOCK)  # "far" at test sizes
    front = CouchFront(couch_server.url, ranges=request.param)
    server = await aiohttp_server(front.app())
    couch = Couch(str(server.make_url("")), couch_db_name, couch_server.user, couch_server.password)
    await couch.open(wait_seconds=10)
    doc = {"_id": "2.25.1", "md5hash": hashlib.md5(DATA).hexdigest()}
    assert await couch.store_instance(doc, io.BytesIO(DATA), len(DATA))
    yield couch, front
    await couch.close()


def reads(front: CouchFront) -> list[str | None]:
    """The Range header of each read of the attachment so far (None: a read from the start)."""
    return [rng for method, path, rng in front.requests if method == "GET" and path.endswith("/" + ATTACHMENT)]


async def at(remote: RemoteFile, offset: int, size: int) -> bytes:
    """Seek and read in a worker thread, as pydicom does (the file fetches on the event loop)."""
    def work() -> bytes:
        remote.seek(offset)
        return remote.read(size)
    return await asyncio.to_thread(work)


async def test_reads_are_byte_exact_at_any_offset(fronted):
    couch, _ = fronted
    remote = await RemoteFile.open(couch, "2.25.1")
    try:
        assert remote.size == len(DATA)
        for offset, size in ((0, 132), (100, BLOCK), (BLOCK - 5, 10), (len(DATA) - 10, 100), (len(DATA), 5),
                             (7 * BLOCK + 3, 2 * BLOCK), (5, 3)):
            assert await at(remote, offset, size) == DATA[offset:offset + size], (offset, size)
        assert await at(remote, 0, -1) == DATA
    finally:
        await remote.aclose()


async def test_jumps_start_new_reads_only_where_they_pay(fronted):
    """Forward within MAX_SKIP: the current read goes on. Far forward: a ranged read where the
    server honours ranges, else the current read goes on. Backward past the cached blocks: a new
    read from there (the server may send everything from the start)."""
    couch, front = fronted
    remote = await RemoteFile.open(couch, "2.25.1")
    try:
        assert await at(remote, 0, 10) == DATA[:10]
        assert reads(front) == [None]
        assert await at(remote, 2 * BLOCK, 10) == DATA[2 * BLOCK:2 * BLOCK + 10]  # near: same read
        assert reads(front) == [None]
        assert await at(remote, 9 * BLOCK + 7, 10) == DATA[9 * BLOCK + 7:9 * BLOCK + 17]  # far ahead
        if front.ranges:
            assert reads(front) == [None, f"bytes={9 * BLOCK}-"] and couch.ranges_honoured is True
        else:  # the ranged read was tried once, found ignored, and read on from the start
            assert reads(front) == [None, f"bytes={9 * BLOCK}-"] and couch.ranges_honoured is False
            assert await at(remote, 11 * BLOCK, 10) == DATA[11 * BLOCK:11 * BLOCK + 10]
            assert len(reads(front)) == 2  # now it is known: far jumps read on
        assert await at(remote, BLOCK + 1, 10) == DATA[BLOCK + 1:BLOCK + 11]  # back, not cached
        assert reads(front)[-1] == f"bytes={BLOCK}-"
    finally:
        await remote.aclose()


async def test_missing_attachment_is_none(fronted):
    couch, _ = fronted
    assert await RemoteFile.open(couch, "2.25.404") is None
