"""WADO-RS retrieve study, series and instance (PS3.18 10.4.1.1.1): Part 10 files, multipart/related.

Every instance goes out as stored, byte-exact and streamed from its CouchDB attachment, when the
client accepts its transfer syntax (``transfer-syntax=*`` or that very UID): memory does not grow
with the study. Otherwise it is converted (``transfer_syntax.transcode``) in a worker thread, one
instance at a time, into a temporary file that is then streamed. Before the first byte goes out
every instance's syntax is checked against the Accept list, so a study that cannot be delivered
whole is a 406 naming the instance, never a response silently missing some instances.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator
from typing import IO

from aiohttp import hdrs, web

from dicomweb_couch.appkeys import COUCH
from dicomweb_couch.dicom import transfer_syntax
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.store.couch import Couch
from dicomweb_couch.store.remote_file import RemoteFile
from dicomweb_couch.web import accept, instances
from dicomweb_couch.web.instances import StoredInstance
from dicomweb_couch.web.multipart import MultipartWriter
from dicomweb_couch.web.responses import study_url

log = logging.getLogger(__name__)

DICOM = "application/dicom"
_SPOOL_IN_MEMORY = 8 * 1024 * 1024
_CHUNK = 256 * 1024


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
    couch = request.app[COUCH]
    async with MultipartWriter(request, DICOM) as writer:
        for instance, offer in plan:
            media_type = f"{DICOM}; transfer-syntax={offer.transfer_syntax}" if offer.transfer_syntax else DICOM
            location = study_url(request, instance.study, instance.series, instance.sop)
            if offer.stored:
                async with couch.attachment(instance.doc_id) as attachment:
                    if attachment is None:
                        raise DicomwebError(404, f"instance {instance.sop} has no stored file")
                    await writer.part(media_type, attachment.chunks, length=attachment.length, location=location)
            else:
                with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
                    size = await convert(couch, instance, offer.transfer_syntax or transfer_syntax.EXPLICIT_LE, spool)
                    await writer.part(media_type, _read(spool), length=size, location=location)
    return writer.response


async def convert(couch: Couch, instance: StoredInstance, target: str, out: IO[bytes]) -> int:
    """Write the instance in ``target`` syntax to ``out``; return its size."""
    remote = await RemoteFile.open(couch, instance.doc_id)
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
