"""WADO-RS retrieve frames (PS3.18 10.4.1.1.3 ``.../instances/{sop}/frames/{list}``) and the frame
reading that bulk data and rendering share.

A frame is read from the stored file without loading the file: the header is parsed up to the
Pixel Data element, then only that frame's bytes are read, at ``offset + n * frame length`` for
native pixel data, through the Extended or Basic Offset Table for encapsulated pixel data
(PS3.5 A.4), or, when neither table is there, through the fragment positions found by walking
the item headers once per request (one fragment per frame, or JPEG end-of-image markers).

Compressed frames go out as stored, in their own media type (``image/jpeg``, ``image/jls``,
``image/jp2``... PS3.18 Table 8.7.3-5) with the transfer syntax as a parameter; uncompressed
ones as ``application/octet-stream``, little endian (PS3.18 8.7.3.3.1). A client that asks for
``application/octet-stream`` without ``transfer-syntax=*`` gets compressed frames decoded.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from dataclasses import dataclass, field
from typing import IO, Final

import numpy as np
from aiohttp import hdrs, web
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, get_frame, parse_basic_offsets, parse_fragments
from pydicom.pixels import pack_bits, pixel_array

from dicomweb_couch.appkeys import COUCH
from dicomweb_couch.dicom import transfer_syntax
from dicomweb_couch.errors import DicomwebError, quoted
from dicomweb_couch.store.remote_file import RemoteFile
from dicomweb_couch.web import accept, instances
from dicomweb_couch.web.instances import StoredInstance
from dicomweb_couch.web.multipart import MultipartWriter
from dicomweb_couch.web.responses import study_url

OCTET_STREAM: Final = "application/octet-stream"
_DEFER: Final = 1024
_LONG_VALUE_VRS: Final = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"UC", b"UR", b"UT", b"SQ", b"SV", b"UV"}
_FRAME_LIST: Final = re.compile(r"[0-9]{1,10}(,[0-9]{1,10})*")  # NumberOfFrames is an IS: 10 digits at most
MAX_FRAME_LIST: Final = 1000
"""Most frame numbers one request may name, whatever the instance."""
REPEAT_ALLOWANCE: Final = 16
"""Frame-list length always allowed, even beyond the instance's frames (see ``check_frame_list``)."""

log = logging.getLogger(__name__)


@dataclass
class PixelData:
    """Where a file's pixel data is and how it is laid out, from its header."""

    dataset: Dataset  # everything before the pixel data
    syntax: str
    value_offset: int  # first byte of the value: the Basic Offset Table item when encapsulated
    encapsulated: bool
    frames: int
    source: IO[bytes]  # the file, or (Deflated) the inflated pixel data value
    vr: str = "OW"  # of the Pixel Data element
    _fragments: list[int] | None = field(default=None, repr=False)

    @property
    def little_endian(self) -> bool:
        return self.syntax != transfer_syntax.EXPLICIT_BE


def locate(fp: IO[bytes]) -> PixelData | None:
    """Parse the header of the Part 10 file ``fp`` up to its pixel data; None if it has none.

    ``fp`` is left at the pixel data value. Values over 1 KiB before it are skipped unread.
    """
    ds = dcmread(fp, force=True, stop_before_pixels=True, defer_size=_DEFER)
    syntax = transfer_syntax.syntax_of(ds)
    frames = _number_of_frames(ds)
    if syntax == transfer_syntax.DEFLATED:
        fp.seek(0)
        whole = dcmread(fp, force=True)  # the value sits in the inflated stream: inflate it all
        if "PixelData" not in whole:
            return None
        return PixelData(ds, syntax, 0, False, frames, io.BytesIO(whole.PixelData), whole["PixelData"].VR)
    order = "little" if syntax != transfer_syntax.EXPLICIT_BE else "big"
    start = fp.tell()
    header = fp.read(8)
    if len(header) < 8:
        return None
    # Explicit VR unless the syntax says implicit or no VR is there (files that misstate their syntax)
    explicit = syntax != transfer_syntax.IMPLICIT_LE and header[4:6].isalpha() and header[4:6].isupper()
    if not explicit:
        length, value = int.from_bytes(header[4:8], order), start + 8
    elif header[4:6] in _LONG_VALUE_VRS:
        length, value = int.from_bytes(fp.read(4), order), start + 12
    else:
        length, value = int.from_bytes(header[6:8], order), start + 8
    fp.seek(value)
    vr = header[4:6].decode() if explicit else "OB" if int(ds.get("BitsAllocated") or 16) <= 8 else "OW"
    return PixelData(ds, syntax, value, length == 0xFFFFFFFF, frames, fp, vr)


def _number_of_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def read_frame(pixels: PixelData, index: int, decode: bool) -> bytes:
    """Frame ``index`` (0-based): as stored, or decoded to native little-endian bytes.

    Big-endian native data is always decoded, as web services carry no big-endian bulk data
    (PS3.18 8.7.3). Bit-packed (1 bit) frames are cut out at their first bit and packed anew.
    """
    data = stored_frame(pixels, index)
    if decode or not pixels.little_endian:
        return decode_frame(pixels, data)
    return data


def stored_frame(pixels: PixelData, index: int) -> bytes:
    """Frame ``index`` (0-based) as the file holds it (big-endian native data too)."""
    return _encapsulated(pixels, index) if pixels.encapsulated else _native(pixels, index)


def decode_frame(pixels: PixelData, data: bytes, raw: bool | None = None) -> bytes:
    """A frame's stored bytes as native little-endian pixels (YBR colour of compressed data as RGB)."""
    arr = frame_array(pixels, data, raw=not pixels.encapsulated if raw is None else raw)
    if pixels.dataset.get("BitsAllocated") == 1:
        return pack_bits(arr)
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def frame_array(pixels: PixelData, data: bytes, raw: bool = False) -> np.ndarray:
    """Decode one frame's stored bytes with pydicom, as a one-frame data set of the same header."""
    ds = Dataset(pixels.dataset)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pixels.syntax if pixels.syntax != transfer_syntax.DEFLATED \
        else transfer_syntax.EXPLICIT_LE
    ds.NumberOfFrames = 1
    for tag in (0x7FE00001, 0x7FE00002):  # the Extended Offset Table describes the whole file
        ds.pop(tag, None)
    ds.PixelData = encapsulate([data]) if pixels.encapsulated else data
    ds["PixelData"].VR = "OB" if pixels.encapsulated else pixels.vr
    return pixel_array(ds, raw=raw)


def _native(pixels: PixelData, index: int) -> bytes:
    ds = pixels.dataset
    samples = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
    if ds.get("BitsAllocated") == 1:  # frames follow each other bit by bit (PS3.5 8.1.1)
        first, shift = divmod(index * samples, 8)
        pixels.source.seek(pixels.value_offset + first)
        packed = np.frombuffer(pixels.source.read((shift + samples + 7) // 8), dtype=np.uint8)
        bits = np.unpackbits(packed, bitorder="little")[shift:shift + samples]
        return np.packbits(bits, bitorder="little").tobytes()
    length = samples * (int(ds.BitsAllocated) // 8)
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":  # PS3.3 C.7.6.3.1.2: 2 samples a pixel
        length = length // 3 * 2
    pixels.source.seek(pixels.value_offset + index * length)
    if not pixels.little_endian and pixels.vr == "OW" and length % 2:
        length += 1  # big-endian 8-bit data in OW words: the frame's last word holds its last byte
    return pixels.source.read(length)


def _encapsulated(pixels: PixelData, index: int) -> bytes:
    """One encapsulated frame, the fragment positions walked at most once per ``pixels``."""
    source = pixels.source
    source.seek(pixels.value_offset)
    eot = pixels.dataset.get("ExtendedOffsetTable"), pixels.dataset.get("ExtendedOffsetTableLengths")
    if not all(eot) and pixels.frames > 1 and not parse_basic_offsets(source):
        if pixels._fragments is None:
            pixels._fragments = parse_fragments(source)[1]
        if len(pixels._fragments) == pixels.frames:  # one fragment per frame: straight to it
            source.seek(pixels._fragments[index] + 4)
            return source.read(int.from_bytes(source.read(4), "little"))
    source.seek(pixels.value_offset)
    return get_frame(source, index, number_of_frames=pixels.frames,
                     extended_offsets=eot if all(eot) else None)  # type: ignore[arg-type]


# -- the web resource ----------------------------------------------------------------------------


def parse_frame_list(text: str) -> list[int]:
    """The frame numbers of a ``{frames}`` path segment (PS3.18 8.3.1: 1-based, comma-separated),
    at most ``MAX_FRAME_LIST`` of them (see ``check_frame_list`` for the limit per instance)."""
    cleaned = text.replace(" ", "")
    if not _FRAME_LIST.fullmatch(cleaned) or any(int(n) < 1 for n in cleaned.split(",")):
        raise DicomwebError(400, f"frame list {quoted(text)} is not a comma-separated list of frame numbers, 1 or more")
    numbers = [int(n) for n in cleaned.split(",")]
    if len(numbers) > MAX_FRAME_LIST:
        raise DicomwebError(400, f"the frame list names {len(numbers)} frames; at most {MAX_FRAME_LIST} may be "
                                 f"asked for in one request")
    return numbers


def check_frame_list(instance: StoredInstance, numbers: list[int]) -> None:
    """400 when a frame list is longer than the instance has frames (and than ``REPEAT_ALLOWANCE``),
    404 when it names a frame beyond NumberOfFrames.

    A frame may be named twice (the standard does not forbid it, and each mention gets its part),
    but one short URL must not make an answer many times the instance: ``1,1,1,...`` with 2,001
    entries returned 2,001 copies of a frame. So a list may be as long as the instance has
    frames, or ``REPEAT_ALLOWANCE`` entries for instances with fewer: an answer is never larger
    than the whole pixel data or that many frames.
    """
    allowed = max(instance.frames, REPEAT_ALLOWANCE)
    if len(numbers) > allowed:
        raise DicomwebError(400, f"the frame list names {len(numbers)} frames but instance {instance.sop} has "
                                 f"{instance.frames}: a list may name at most {allowed} (each frame once, or "
                                 f"{REPEAT_ALLOWANCE} in all for instances with fewer frames)")
    if beyond := sorted({n for n in numbers if n > instance.frames}):  # before a multipart answer starts
        raise DicomwebError(404, f"instance {instance.sop} has {instance.frames} frame(s); "
                                 f"there is no frame {', '.join(map(str, beyond[:10]))}")


def offers(stored: str | None) -> list[accept.Offer]:
    """How this instance's frames can be sent (PS3.18 Tables 8.7.3-4 and 8.7.3-5)."""
    if transfer_syntax.is_native(stored) or stored is None:
        return [accept.Offer(OCTET_STREAM, transfer_syntax.EXPLICIT_LE, stored=True)]
    found = [accept.Offer(transfer_syntax.frame_media_type(stored), stored, stored=True)]
    if transfer_syntax.can_decode(stored):
        found.append(accept.Offer(OCTET_STREAM, transfer_syntax.EXPLICIT_LE))
    return found


def part_type(offer: accept.Offer) -> str:
    return f"{offer.media_type}; transfer-syntax={offer.transfer_syntax}"


async def open_pixels(request: web.Request, instance: StoredInstance) -> tuple[RemoteFile, PixelData]:
    """The instance's file and its pixel data; 404 if it has none. Close the file with ``aclose``."""
    remote = await RemoteFile.open(request.app[COUCH], instance.doc_id)
    if remote is None:
        raise DicomwebError(404, f"instance {instance.sop} has no stored file")
    try:
        pixels = await asyncio.to_thread(locate, remote)
    except BaseException:
        await remote.aclose()
        raise
    if pixels is None:
        await remote.aclose()
        raise DicomwebError(404, f"instance {instance.sop} has no pixel data, so no frames")
    return remote, pixels


def unreadable(instance: StoredInstance, what: str, action: str) -> str:
    """Why ``what`` of the instance cannot be ``action`` (read, decoded, rendered), in DICOM terms;
    the library's own words go to the log, not to the client."""
    syntax = transfer_syntax.name(instance.transfer_syntax)
    if action == "read":
        return f"{what} of instance {instance.sop} cannot be read: its pixel data does not match its header ({syntax})"
    hint = "ask for it as stored (transfer-syntax=*)" if action == "decoded" else "its frames can be retrieved as stored"
    return f"{what} of instance {instance.sop} (stored as {syntax}) cannot be {action} by this server; {hint}"


def check_frames(instance: StoredInstance, pixels: PixelData, numbers: list[int]) -> None:
    if beyond := [n for n in numbers if n > pixels.frames]:
        raise DicomwebError(404, f"instance {instance.sop} has {pixels.frames} frame(s); "
                                 f"there is no frame {', '.join(map(str, beyond))}")


async def retrieve_frames(request: web.Request) -> web.StreamResponse:
    numbers = parse_frame_list(request.match_info["frames"])
    [instance] = await instances.find(request)
    check_frame_list(instance, numbers)
    return await send_frames(request, instance, numbers)


async def send_frames(request: web.Request, instance: StoredInstance, numbers: list[int] | None = None) -> web.StreamResponse:
    """The frames ``numbers`` (all when None) of the instance, one part each, read one at a time."""
    ranges = accept.acceptable(request.headers.getall(hdrs.ACCEPT, []), request.query)
    offer = accept.negotiate(ranges, offers(instance.transfer_syntax),
                             f"frames of instance {instance.sop} (stored as {transfer_syntax.name(instance.transfer_syntax)})")
    remote, pixels = await open_pixels(request, instance)
    try:
        numbers = numbers or list(range(1, pixels.frames + 1))
        check_frames(instance, pixels, numbers)
        base = study_url(request, instance.study, instance.series, instance.sop)
        async with MultipartWriter(request, offer.media_type) as writer:
            for number in numbers:
                try:
                    data = await asyncio.to_thread(read_frame, pixels, number - 1, not offer.stored)
                except Exception as exc:  # pydicom's many ways of refusing broken pixel data
                    log.warning("frame %d of instance %s: %r", number, instance.sop, exc)  # the details
                    raise DicomwebError(406, unreadable(instance, f"frame {number}",
                                                        "read" if offer.stored else "decoded")) from exc
                await writer.part(part_type(offer), data, location=f"{base}/frames/{number}")
        return writer.response
    finally:
        await remote.aclose()
