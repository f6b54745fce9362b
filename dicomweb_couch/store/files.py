"""Where the instances' Part 10 files are kept: the interface, and the default (CouchDB attachments).

Every stored instance is a CouchDB document holding its DICOM JSON; its Part 10 file is kept
byte-exact either as the document's attachment (:class:`AttachmentStore`, the default: the file
replicates with the document) or in a directory (:class:`dicomweb_couch.store.file_store.FileStore`,
the ``file_store`` setting). Both implement :class:`Part10Store`; the web handlers, the ingest path
and the commands use only that interface.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from dicomweb_couch.store.couch import Couch
from dicomweb_couch.store.remote_file import RemoteFile


@dataclass(frozen=True)
class Part10File:
    """An instance's stored file, opened to be sent: a local ``path`` (sent with sendfile, Range
    honoured) or a stream of ``chunks`` from CouchDB."""

    status: int  # 200, or 304 when the client's ETag still matches
    size: int | None
    etag: str | None
    path: Path | None = None
    chunks: AsyncIterator[bytes] | None = None
    doc: dict[str, Any] | None = None  # the instance document, when the store had to read it


class Reader(Protocol):
    """A stored file readable like a local file (seek, read) in a worker thread; ``aclose`` on the loop."""

    size: int

    def read(self, n: int = -1) -> bytes: ...
    def seek(self, offset: int, whence: int = 0) -> int: ...
    def tell(self) -> int: ...
    async def aclose(self) -> None: ...


class Part10Store(Protocol):
    """The files of the instance documents."""

    async def store(self, doc: dict[str, Any], fp: IO[bytes], size: int) -> bool:
        """Write the document with its file; False when that very file was already stored."""

    def open(self, doc_id: str, doc: dict[str, Any] | None = None,
             if_none_match: str | None = None) -> AbstractAsyncContextManager[Part10File | None]:
        """The file of document ``doc_id`` (whose body the caller may already have) to send; None if missing."""

    async def reader(self, doc_id: str) -> Reader | None:
        """The file for random access (frames, bulk data, rendering); None if missing."""

    async def delete(self, instances: Mapping[str, str]) -> int:
        """Delete instance documents (id -> StudyInstanceUID) and what only they used; how many were deleted."""


class AttachmentStore:
    """Part 10 files as the documents' ``object.dcm`` attachments (dcmjs-org/dicomweb-server's layout)."""

    def __init__(self, couch: Couch) -> None:
        self.couch = couch

    async def store(self, doc: dict[str, Any], fp: IO[bytes], size: int) -> bool:
        return await self.couch.store_instance(doc, fp, size)

    @asynccontextmanager
    async def open(self, doc_id: str, doc: dict[str, Any] | None = None,
                   if_none_match: str | None = None) -> AsyncIterator[Part10File | None]:
        async with self.couch.attachment(doc_id, if_none_match=if_none_match) as attachment:
            if attachment is None:
                yield None
                return
            yield Part10File(attachment.status, attachment.length, attachment.etag, chunks=attachment.chunks)

    async def reader(self, doc_id: str) -> Reader | None:
        return await RemoteFile.open(self.couch, doc_id)

    async def delete(self, instances: Mapping[str, str]) -> int:
        """The attachments go with the documents' deleted revisions."""
        return await self.couch.delete_instances(instances)


class LocalReader(io.FileIO):
    """A local file with the :class:`Reader` interface."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "rb")
        self.size = path.stat().st_size

    async def aclose(self) -> None:
        self.close()


CHUNK = 1024 * 1024


async def chunks(found: Part10File) -> AsyncIterator[bytes]:
    """The file's bytes in chunks of up to ``CHUNK``: from CouchDB's stream, or read from the local file
    in a worker thread (where no sendfile fits, e.g. inside a multipart response)."""
    if found.chunks is not None:
        async for chunk in found.chunks:
            yield chunk
        return
    assert found.path is not None
    with await asyncio.to_thread(open, found.path, "rb") as fp:
        while chunk := await asyncio.to_thread(fp.read, CHUNK):
            yield chunk
