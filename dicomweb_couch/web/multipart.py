"""Streaming ``multipart/related`` responses (PS3.18 8.6.1.2, RFC 2387), written part by part.

Each part goes out as soon as it is ready, so a response of any size costs the memory of one
part (or of one chunk, for parts written from a stream). If something fails after the first
byte, the closing delimiter is never written and the connection is dropped: a client can tell
the response is cut short, rather than mistake a partial study for a whole one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable
from types import TracebackType

from aiohttp import web

log = logging.getLogger(__name__)


class MultipartWriter:
    """One multipart/related response whose parts are of ``part_type``; use it as ``async with``.

    An error before the first part goes to the client as usual (a 4xx or 503 body); after it,
    the connection is closed (see the module doc) and the error only logged.
    """

    def __init__(self, request: web.Request, part_type: str, headers: dict[str, str] | None = None) -> None:
        self._request = request
        self._boundary = uuid.uuid4().hex
        content_type = f'multipart/related; type="{part_type}"; boundary={self._boundary}'
        self.response = web.StreamResponse(headers={**(headers or {}), "Content-Type": content_type})

    async def part(self, content_type: str, body: bytes | AsyncIterable[bytes], *,
                   length: int | None = None, location: str | None = None) -> None:
        """Write one part; ``length`` (Content-Length) is known for bytes and optional for a stream."""
        if not self.response.prepared:
            await self.response.prepare(self._request)
        if self._request.method == "HEAD":  # headers only: a body would be read as the next response
            return
        head = f"--{self._boundary}\r\nContent-Type: {content_type}\r\n"
        if isinstance(body, (bytes, bytearray)):
            length = len(body)
        if length is not None:
            head += f"Content-Length: {length}\r\n"
        if location:
            head += f"Content-Location: {location}\r\n"
        await self.response.write((head + "\r\n").encode())
        if isinstance(body, (bytes, bytearray)):
            await self.response.write(bytes(body))
        else:
            async for chunk in body:
                await self.response.write(chunk)
        await self.response.write(b"\r\n")

    async def __aenter__(self) -> MultipartWriter:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> bool:
        if error is None:
            if not self.response.prepared:
                await self.response.prepare(self._request)
            if self._request.method != "HEAD":
                await self.response.write(f"--{self._boundary}--\r\n".encode())
            await self.response.write_eof()
            return False
        if not self.response.prepared or not isinstance(error, Exception):
            return False
        log.error("%s %s failed after the response began; closing the connection: %s",
                  self._request.method, self._request.path, getattr(error, "message", None) or repr(error))
        if self._request.transport is not None:
            self._request.transport.close()
        return True
