"""Throughput of the STOW-RS body reader (web/multipart_reader.py) against aiohttp's MultipartReader.

Both read the same in-memory multipart/related body (PARTS parts of SIZE MiB each), fed in
64 KiB chunks as a socket delivers them, and hash every byte as STOW-RS does; no network, no
store. The figure that matters is the ratio measured in one run (the machine is shared).

    .venv/bin/python bench/multipart_read.py [--parts 8] [--size 64]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import time

from aiohttp import MultipartReader, StreamReader
from aiohttp.base_protocol import BaseProtocol

from dicomweb_couch.web.multipart_reader import RelatedReader

BOUNDARY = "b" * 40
FEED = 64 * 1024


def body_of(parts: int, size: int) -> bytes:
    data = os.urandom(size)
    return b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
                    for _ in range(parts)) + f"--{BOUNDARY}--\r\n".encode()


def stream_of(body: bytes) -> StreamReader:
    """A stream fed 64 KiB at a time by a task that yields after each feed, like a socket."""
    loop = asyncio.get_running_loop()
    stream = StreamReader(_Connected(loop), len(body), loop=loop)  # never paused

    async def feed() -> None:
        view = memoryview(body)
        for start in range(0, len(body), FEED):
            stream.feed_data(bytes(view[start:start + FEED]))
            await asyncio.sleep(0)
        stream.feed_eof()

    _feeders.add(asyncio.ensure_future(feed()))
    return stream


_feeders: set[asyncio.Future] = set()


class _Connected(BaseProtocol):
    """A protocol that counts as connected, so the stream waits for data instead of failing."""

    connected = True


async def ours(body: bytes) -> float:
    reader = RelatedReader(stream_of(body).readany, BOUNDARY, timeout=60)
    start = time.perf_counter()
    while await reader.next_part() is not None:
        md5 = hashlib.md5()
        while chunk := await reader.read_chunk():
            md5.update(chunk)
    return time.perf_counter() - start


async def aiohttps(body: bytes) -> float:
    headers = {"Content-Type": f"multipart/related; boundary={BOUNDARY}"}
    reader = MultipartReader(headers, stream_of(body))
    start = time.perf_counter()
    while (part := await reader.next()) is not None:
        md5 = hashlib.md5()
        while chunk := await part.read_chunk(256 * 1024):
            md5.update(chunk)
    return time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="MiB per part")
    args = parser.parse_args()
    body = body_of(args.parts, args.size * 1024 * 1024)
    mib = len(body) / 2 ** 20
    for _ in range(2):  # the second round is the one reported
        ours_s, theirs_s = await ours(body), await aiohttps(body)
    print(f"body {mib:.0f} MiB in {args.parts} parts")
    print(f"multipart_reader.RelatedReader: {mib / ours_s:.0f} MiB/s")
    print(f"aiohttp MultipartReader:        {mib / theirs_s:.0f} MiB/s")
    print(f"ratio ours/aiohttp: {theirs_s / ours_s:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
