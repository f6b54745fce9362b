"""Bulk data (PS3.18 8.6.1.2.2, 10.4.1.1.5): the BulkDataURIs metadata carries, and what they resolve to.

The stored DICOM JSON leaves out binary values over 1 KiB and all pixel data, keeping only the VR
(see ``dicomjson``); metadata gives each such attribute, in sequences too, a BulkDataURI:
``{instance}/bulkdata/{tag}``, and for an attribute inside a sequence item
``{instance}/bulkdata/{sequence tag}/{item index, from 0}/{tag}``, nesting as deep as needed.
The URIs are absolute, or, with the ``relative_bulkdata_uris`` setting, absolute paths
(``/studies/...``) that survive a proxy rewriting the host.

Retrieving one answers ``multipart/related`` (PS3.18 8.7.3.3): the value as
``application/octet-stream``, little endian; encapsulated pixel data one frame a part, in the
frames' own media type. Pixel Data itself (7FE0,0010) answers as ``/frames/1,...,N`` does,
streamed frame by frame.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final

from aiohttp import hdrs, web
from pydicom import Dataset, dcmread
from pydicom.encaps import generate_frames
from pydicom.tag import Tag

from dicomweb_couch.appkeys import COUCH, SETTINGS
from dicomweb_couch.dicom import transfer_syntax
from dicomweb_couch.dicom.dicomjson import BINARY_VRS
from dicomweb_couch.errors import DicomwebError, quoted
from dicomweb_couch.store.remote_file import RemoteFile
from dicomweb_couch.web import accept, frames, instances
from dicomweb_couch.web.multipart import MultipartWriter
from dicomweb_couch.web.responses import dicomweb_root

_PIXEL_DATA: Final = ("7FE00010", "7FE00008", "7FE00009")
_TAG: Final = re.compile(r"[0-9A-Fa-f]{8}")
_DEFER: Final = 1024


def bulkdata_base(request: web.Request, study: str, series: str, sop: str) -> str:
    """Where the BulkDataURIs of an instance's metadata start, absolute or relative per settings."""
    settings = request.app[SETTINGS]
    root = settings.prefix if settings.relative_bulkdata_uris else dicomweb_root(request)
    return f"{root}/studies/{study}/series/{series}/instances/{sop}/bulkdata"


def with_bulkdata_uris(dataset: dict[str, Any], base: str) -> dict[str, Any]:
    """``dataset`` with a BulkDataURI (PS3.18 F.2.6) on every binary attribute whose value was left out."""
    out: dict[str, Any] = {}
    for tag, elem in dataset.items():
        vr = elem.get("vr")
        if vr == "SQ" and elem.get("Value"):
            elem = dict(elem, Value=[with_bulkdata_uris(item, f"{base}/{tag}/{i}")
                                     for i, item in enumerate(elem["Value"])])
        elif (vr in BINARY_VRS or tag in _PIXEL_DATA) and not {"Value", "InlineBinary", "BulkDataURI"} & elem.keys():
            elem = {"vr": vr, "BulkDataURI": f"{base}/{tag}"}
        out[tag] = elem
    return out


def parse_path(text: str) -> list[int]:
    """The tags and item indexes of a bulk data path: tag, or tag/index/tag/..., tags in hex."""
    parts = text.strip("/").split("/")
    valid = len(parts) % 2 == 1 and all(
        _TAG.fullmatch(p) if i % 2 == 0 else p.isascii() and p.isdigit() and len(p) <= 9 for i, p in enumerate(parts))
    if not valid:
        raise DicomwebError(400, f"bulk data path {quoted(text)} is not a tag (8 hex digits) or "
                                 "sequence tag/item index/tag...")
    return [int(p, 16) if i % 2 == 0 else int(p) for i, p in enumerate(parts)]


def read_value(fp: Any, path: list[int]) -> tuple[Dataset, bytes, str]:
    """The header, the bytes of the value at ``path`` in the file ``fp`` and the element's VR.

    404 when the path leads nowhere. The file is parsed only as far as needed: up to the pixel
    data for anything before it, values over 1 KiB skipped until the wanted one is read.
    """
    ds = dcmread(fp, force=True, defer_size=_DEFER, stop_before_pixels=path[0] < 0x7FE00008)
    current: Dataset = ds
    for depth in range(0, len(path) - 1, 2):
        sequence = current.get(path[depth])
        index = path[depth + 1]
        if sequence is None or sequence.VR != "SQ" or index >= len(sequence.value):
            raise DicomwebError(404, f"no item {index} in sequence {Tag(path[depth])} of this instance")
        current = sequence.value[index]
    elem = current.get(path[-1])
    if elem is None or not isinstance(elem.value, (bytes, bytearray)):
        raise DicomwebError(404, f"this instance has no bulk data at {Tag(path[-1])}")
    size = transfer_syntax.word_size(current, path[-1], elem.VR)
    if transfer_syntax.syntax_of(ds) == transfer_syntax.EXPLICIT_BE and size and len(elem.value) % size == 0:
        return ds, transfer_syntax.swapped(elem.value, size), elem.VR
    return ds, bytes(elem.value), elem.VR


async def retrieve_bulkdata(request: web.Request) -> web.StreamResponse:
    path = parse_path(request.match_info["path"])
    [instance] = await instances.find(request)
    if path in ([0x7FE00010], [0x7FE00008], [0x7FE00009]):
        return await frames.send_frames(request, instance)
    ranges = accept.acceptable(request.headers.getall(hdrs.ACCEPT, []), request.query)
    remote = await RemoteFile.open(request.app[COUCH], instance.doc_id)
    if remote is None:
        raise DicomwebError(404, f"instance {instance.sop} has no stored file")
    try:
        header, value, vr = await asyncio.to_thread(read_value, remote, path)
    finally:
        await remote.aclose()
    location = str(request.url)
    if vr == "OB" and value[:4] == b"\xfe\xff\x00\xe0":  # an encapsulated value, e.g. an icon's pixel data
        syntax = transfer_syntax.syntax_of(header)
        offer = accept.negotiate(ranges, [accept.Offer(transfer_syntax.frame_media_type(syntax), syntax, stored=True)],
                                 f"bulk data {request.match_info['path']} of instance {instance.sop}")
        async with MultipartWriter(request, offer.media_type) as writer:
            for frame in generate_frames(value, number_of_frames=1):
                await writer.part(frames.part_type(offer), frame, location=location)
        return writer.response
    offer = accept.negotiate(ranges, [accept.Offer(frames.OCTET_STREAM, stored=True)],
                             f"bulk data {request.match_info['path']} of instance {instance.sop}")
    async with MultipartWriter(request, offer.media_type) as writer:
        await writer.part(frames.OCTET_STREAM, value, location=location)
    return writer.response
