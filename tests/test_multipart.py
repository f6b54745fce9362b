"""web/multipart.py: multipart/related responses written part by part (PS3.18 8.6.1.2, RFC 2387);
a failure before the first part is an ordinary error answer, after it a dropped connection."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from wado_helpers import parts

from dicomweb_couch.errors import DicomwebError, error_middleware
from dicomweb_couch.web.multipart import MultipartWriter

BIG = bytes(range(256)) * 4000


async def chunks(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def two_parts(request: web.Request) -> web.StreamResponse:
    async with MultipartWriter(request, "application/dicom", headers={"X-Extra": "1"}) as writer:
        await writer.part("application/dicom", b"first part", location="http://h/1")
        await writer.part("application/octet-stream", chunks(BIG), length=len(BIG))
        await writer.part("text/plain", chunks(b"no length known"))
    return writer.response


async def nothing(request: web.Request) -> web.StreamResponse:
    async with MultipartWriter(request, "application/dicom") as writer:
        pass
    return writer.response


async def fails_before(request: web.Request) -> web.StreamResponse:
    async with MultipartWriter(request, "application/dicom") as writer:
        raise DicomwebError(406, "nothing acceptable")
    return writer.response


async def fails_after(request: web.Request) -> web.StreamResponse:
    async with MultipartWriter(request, "application/dicom") as writer:
        await writer.part("application/dicom", b"a whole first part")
        raise DicomwebError(406, "the second cannot be converted")
    return writer.response


@pytest.fixture
async def served(aiohttp_client) -> TestClient:
    app = web.Application(middlewares=[error_middleware])
    for path, handler in (("/two", two_parts), ("/none", nothing), ("/before", fails_before),
                          ("/after", fails_after)):
        app.router.add_get(path, handler)
    return await aiohttp_client(app)


async def test_parts_with_their_headers_and_the_closing_delimiter(served):
    resp = await served.get("/two")
    assert resp.status == 200 and resp.headers["X-Extra"] == "1"
    assert resp.headers["Content-Type"].startswith('multipart/related; type="application/dicom"; boundary=')
    got = await parts(resp)  # parsed by the standard library: well formed, closed
    assert [(p.content_type, p.location, p.body) for p in got] == [
        ("application/dicom", "http://h/1", b"first part"), ("application/octet-stream", None, BIG),
        ("text/plain", None, b"no length known")]
    boundary = resp.headers["Content-Type"].split("boundary=")[1]
    raw = await resp.read()
    assert raw.endswith(f"\r\n--{boundary}--\r\n".encode())
    assert f"Content-Length: {len(BIG)}\r\n".encode() in raw and raw.count(b"Content-Length:") == 2


async def test_no_parts_is_the_closing_delimiter_alone(served):
    """(The services never get here: an empty result is a 404 before the writer starts.)"""
    resp = await served.get("/none")
    boundary = resp.headers["Content-Type"].split("boundary=")[1]
    assert resp.status == 200 and await resp.read() == f"--{boundary}--\r\n".encode()


async def test_a_failure_before_the_first_part_is_an_error_answer(served):
    resp = await served.get("/before")
    assert resp.status == 406
    assert await resp.json() == {"status": 406, "error": "Not Acceptable", "message": "nothing acceptable"}


async def test_a_failure_after_the_first_part_drops_the_connection(served, caplog):
    resp = await served.get("/after")
    assert resp.status == 200
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in resp.content.iter_any():
            received += chunk
    assert b"a whole first part" in received and not received.rstrip().endswith(b"--")
    assert "the second cannot be converted" in caplog.text  # logged, as the client cannot be told
