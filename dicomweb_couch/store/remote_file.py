"""A stored Part 10 file as a seekable, read-only file object, for pydicom in a worker thread.

Frames, bulk data and rendering need random access into the file (the header, then one frame or
one value), but must not load or copy whole files: a multi-frame instance can be gigabytes. This
file fetches what is read in blocks of ``BLOCK`` bytes from the CouchDB attachment, keeps the last
few blocks (pydicom seeks back a little and re-reads the header), and reuses one sequential read
of the attachment while reads move forward. A jump far ahead, or back, starts a new read at that
offset: a ranged one on Apache CouchDB; on pouchdb-server, which ignores Range, it is cheaper to
keep reading forward, so there only a backward jump re-reads from the start (see
``Couch.attachment_from``).

The object lives in a worker thread (``asyncio.to_thread``); each block it lacks is fetched by a
coroutine on the event loop. Open it with :meth:`open` and close it with :meth:`aclose`, both on
the loop.
"""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict
from contextlib import AsyncExitStack
from typing import Any

from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.store.couch import AttachmentStream, Couch

BLOCK = 256 * 1024
CACHED_BLOCKS = 8
MAX_SKIP = 4 * 1024 * 1024
"""Bytes worth reading and dropping to reach a later offset rather than starting a ranged read."""


class RemoteFile(io.RawIOBase):
    """The attachment of one instance document, readable like a local file (see the module doc)."""

    def __init__(self, couch: Couch, doc_id: str, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.doc_id = doc_id
        self._couch, self._loop = couch, loop
        self._pos = 0
        self.size = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._exits = AsyncExitStack()
        self._stream: AttachmentStream | None = None
        self._stream_pos = 0

    @classmethod
    async def open(cls, couch: Couch, doc_id: str) -> RemoteFile | None:
        """The instance's file, or None when the document has no attachment."""
        remote = cls(couch, doc_id, asyncio.get_running_loop())
        if not await remote._start(0):
            return None
        remote.size = remote._stream.size if remote._stream else 0
        return remote

    async def aclose(self) -> None:
        await self._exits.aclose()
        self._stream = None
        self.close()

    # -- io.RawIOBase ----------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self.size:
            index, start = divmod(self._pos, BLOCK)
            block = self._block(index)
            piece = block[start:start + len(view) - done]
            if not piece:
                break
            view[done:done + len(piece)] = piece
            done += len(piece)
            self._pos += len(piece)
        return done

    def read(self, size: int = -1) -> bytes:
        """Exactly ``size`` bytes unless the file ends first (pydicom relies on full reads)."""
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        buffer = bytearray(size)
        return bytes(buffer[:self.readinto(buffer)])

    # -- blocks ----------------------------------------------------------------------------

    def _block(self, index: int) -> bytes:
        if index in self._blocks:
            self._blocks.move_to_end(index)
            return self._blocks[index]
        data = asyncio.run_coroutine_threadsafe(self._fetch(index * BLOCK), self._loop).result()
        self._blocks[index] = data
        if len(self._blocks) > CACHED_BLOCKS:
            self._blocks.popitem(last=False)
        return data

    async def _fetch(self, offset: int) -> bytes:
        """The block at ``offset``, from the current read if it is near ahead, else a new read."""
        ahead = offset - self._stream_pos
        far = ahead > MAX_SKIP and self._couch.ranges_honoured is not False
        if (self._stream is None or ahead < 0 or far) and not await self._start(offset):
            raise DicomwebError(404, f"the file of instance {self.doc_id} was deleted while being read")
        while self._stream_pos < offset:
            if not (dropped := await self._stream.read(min(offset - self._stream_pos, BLOCK))):
                break
            self._stream_pos += len(dropped)
        data = bytearray()
        while len(data) < BLOCK and (chunk := await self._stream.read(BLOCK - len(data))):
            data += chunk
        self._stream_pos += len(data)
        return bytes(data)

    async def _start(self, offset: int) -> bool:
        await self._exits.aclose()
        self._exits = AsyncExitStack()
        self._stream = await self._exits.enter_async_context(self._couch.attachment_from(self.doc_id, offset))
        self._stream_pos = offset
        return self._stream is not None
