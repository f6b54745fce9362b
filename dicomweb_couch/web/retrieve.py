"""WADO-RS retrieve study, series and instance (PS3.18 10.4.1.1.1): Part 10 files, multipart/related.

Every instance goes out as stored, byte-exact and streamed from its CouchDB attachment (or the
file store), when the client accepts its transfer syntax (``transfer-syntax=*`` or that very UID):
memory does not grow with the study. While one file is sent the next is already being fetched
(``ReadAhead``, a few chunks at most), so the response has no gap waiting for the store. Otherwise it is converted (``transfer_syntax.transcode``) in a worker thread, one
instance at a time, into a temporary file that is then streamed. Before the first byte goes out
every instance's syntax is checked against the Accept list, so a study that cannot be delivered
whole is a 406 naming the instance, never a response silently missing some instances.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator
from typing import IO, Any

from aiohttp import hdrs, web

from dicomweb_couch.appkeys import FILES
from dicomweb_couch.dicom import transfer_syntax
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.store.files import Part10Store, chunks
from dicomweb_couch.web import accept, instances
from dicomweb_couch.web.instances import StoredInstance
from dicomweb_couch.web.multipart import MultipartWriter
from dicomweb_couch.web.responses import study_url

log = logging.getLogger(__name__)

DICOM = "application/dicom"
_SPOOL_IN_MEMORY = 8 * 1024 * 1024
_CHUNK = 256 * 1024
_AHEAD = 4


def offers(stored: str | None) -> list[accept.Offer]:
    """What an instance stored in ``stored`` can be sent as (PS3.18 Table 8.7.3-2).

    Without a transfer-syntax parameter the client gets Explicit VR Little Endian, except for
    lossy-compressed or undecodable pixel data, which goes as stored (PS3.18 8.7.3 allows that
    for lossy data; inflating it would only hide the loss and multiply the size).
    """
    convertible = transfer_syntax.can_decode(stored) if stored else True
    keep = stored is not None and (stored in transfer_syntax.LOSSY or not convertible)
    found = [accept.Offer(DICOM, stored, stored=True, default=keep or stored == transfer_syntax.EXPLICIT_LE)] \
        if stored else []
    if convertible:
        found += [accept.Offer(DICOM, uid, default=uid == transfer_syntax.EXPLICIT_LE and not keep)
                  for uid in transfer_syntax.UNCOMPRESSED if uid != stored]
    return found


async def retrieve(request: web.Request) -> web.StreamResponse:
    found = await instances.find(request)
    ranges = accept.acceptable(request.headers.getall(hdrs.ACCEPT, []), request.query)
    plan = [(instance, accept.negotiate(ranges, offers(instance.transfer_syntax),
                                        f"instance {instance.sop} (stored as {transfer_syntax.name(instance.transfer_syntax)})"))
            for instance in found]
    files = request.app[FILES]
    live: list[ReadAhead] = []  # the file being sent and the next one, at most
    try:
        async with MultipartWriter(request, DICOM) as writer:
            for index, (instance, offer) in enumerate(plan):
                media_type = f"{DICOM}; transfer-syntax={offer.transfer_syntax}" if offer.transfer_syntax else DICOM
                location = study_url(request, instance.study, instance.series, instance.sop)
                if offer.stored:
                    reuse = live[-1] if live and live[-1].doc_id == instance.doc_id else None
                    for done in live:
                        if done is not reuse:  # finished, or left unread (HEAD): its task must not linger
                            await done.cancel()
                    read = reuse or ReadAhead(files, instance.doc_id)
                    live = [read]
                    size = await read.start()
                    if size is False:
                        raise DicomwebError(404, f"instance {instance.sop} has no stored file")
                    following = plan[index + 1] if index + 1 < len(plan) else None
                    if following is not None and following[1].stored:
                        live.append(ReadAhead(files, following[0].doc_id))
                        live[-1].begin()  # the next file is fetched while this one is sent: no gap between parts
                    await writer.part(media_type, read.chunks(), length=size, location=location)
                else:
                    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
                        size = await convert(files, instance, offer.transfer_syntax or transfer_syntax.EXPLICIT_LE, spool)
                        await writer.part(media_type, _read(spool), length=size, location=location)
        return writer.response
    finally:
        for read in live:
            await read.cancel()


class ReadAhead:
    """One instance's stored file, read by a task of its own into a small queue, so the next file's
    request is under way while the current one is being sent. At most ``_AHEAD`` chunks wait."""

    def __init__(self, files: Part10Store, doc_id: str) -> None:
        self._files, self.doc_id = files, doc_id
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=_AHEAD)
        self._task: asyncio.Task[None] | None = None

    def begin(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async with self._files.open(self.doc_id) as found:
                if found is None:
                    await self._queue.put(False)
                    return
                await self._queue.put(found.size)
                async for chunk in chunks(found):
                    await self._queue.put(chunk)
            await self._queue.put(b"")
        except Exception as exc:  # handed to the reader, which raises it in the request's task
            await self._queue.put(exc)

    async def _get(self) -> Any:
        item = await self._queue.get()
        if isinstance(item, Exception):
            raise item
        return item

    async def start(self) -> int | None | bool:
        """The file's size (None when unknown), False when the instance has no file."""
        self.begin()
        return await self._get()

    async def chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self._get():
            yield chunk

    async def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def convert(files: Part10Store, instance: StoredInstance, target: str, out: IO[bytes]) -> int:
    """Write the instance in ``target`` syntax to ``out``; return its size."""
    remote = await files.reader(instance.doc_id)
    if remote is None:
        raise DicomwebError(404, f"instance {instance.sop} has no stored file")
    try:
        await asyncio.to_thread(transfer_syntax.transcode, remote, target, out)
    except DicomwebError:
        raise
    except Exception as exc:  # pydicom's many ways of saying the data cannot be decoded
        log.warning("converting %s to %s failed: %r", instance.sop, target, exc)
        raise DicomwebError(406, f"instance {instance.sop} cannot be converted from "
                                 f"{transfer_syntax.name(instance.transfer_syntax)} to "
                                 f"{transfer_syntax.name(target)}: {exc}") from exc
    finally:
        await remote.aclose()
    return out.seek(0, 2)


async def _read(fp: IO[bytes]) -> AsyncIterator[bytes]:
    fp.seek(0)
    while chunk := fp.read(_CHUNK):
        yield chunk
