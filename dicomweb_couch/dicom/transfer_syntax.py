"""Transfer syntaxes: what each is (PS3.5 Annex A, PS3.18 8.7.3), and converting an instance between them.

Pure pydicom. The archive sends every file as stored whenever the client accepts that; it
converts only when it must: between the uncompressed syntaxes (Explicit and Implicit VR Little
Endian, Explicit VR Big Endian) and from a compressed syntax to an uncompressed one where one of
pydicom's decoders (with the pylibjpeg plugins) can decode it. It never compresses.
"""

from __future__ import annotations

from typing import IO, Final

import numpy as np
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import correct_ambiguous_vr
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

EXPLICIT_LE: Final = str(ExplicitVRLittleEndian)
IMPLICIT_LE: Final = str(ImplicitVRLittleEndian)
EXPLICIT_BE: Final = str(ExplicitVRBigEndian)
DEFLATED: Final = str(DeflatedExplicitVRLittleEndian)
UNCOMPRESSED: Final = (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE)
"""The uncompressed (native) syntaxes this server converts between; Explicit VR Little Endian first,
as the default of PS3.18 Table 8.7.3-2."""

_JPEG = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")
_MEDIA_TYPES: Final = {  # PS3.18 Table 8.7.3-5: compressed bulk data (frames)
    **{uid: "image/jpeg" for uid in _JPEG},
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl", "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    **{uid: "video/mpeg" for uid in ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.100.1",
                                     "1.2.840.10008.1.2.4.101", "1.2.840.10008.1.2.4.101.1")},
    **{f"1.2.840.10008.1.2.4.{n}{f}": "video/mp4" for n in range(102, 107) for f in ("", ".1")},
    "1.2.840.10008.1.2.4.107": "video/H265", "1.2.840.10008.1.2.4.108": "video/H265",
}
LOSSY: Final = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.4.111",
    *(uid for uid, kind in _MEDIA_TYPES.items() if kind.startswith("video/")),
})
"""Syntaxes whose pixel data may have lost information: PS3.18 8.7.3 lets such an instance go out as
stored when the client names no transfer syntax, rather than inflated to a misleadingly exact form."""

WORD_SIZES: Final = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
"""Bytes per word of the binary VRs whose byte order follows the syntax (PS3.5 7.3)."""
_PIXEL_TAGS: Final = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def name(uid: str | None) -> str:
    """The syntax's name and UID, for messages."""
    if not uid:
        return "no transfer syntax (a data set without File Meta Information)"
    known = UID(uid).name
    return f"{known} ({uid})" if known != uid else uid


def frame_media_type(uid: str) -> str:
    """The media type of a frame in this syntax (PS3.18 Tables 8.7.3-4, 8.7.3-5)."""
    return _MEDIA_TYPES.get(uid, "application/octet-stream")


def is_native(uid: str | None) -> bool:
    """Pixel data not encapsulated: the uncompressed syntaxes, Deflated (PS3.5 A.5) and unknown-but-raw."""
    return uid in (*UNCOMPRESSED, DEFLATED)


def can_decode(uid: str | None) -> bool:
    """Whether this server can turn pixel data in ``uid`` into native pixels."""
    if is_native(uid):
        return True
    try:
        return bool(uid) and get_decoder(UID(uid)).is_available
    except NotImplementedError:
        return False


def syntax_of(ds: Dataset) -> str:
    """The syntax a read data set is in: its File Meta, else the encoding pydicom found."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return str(meta.TransferSyntaxUID)
    implicit, little = ds.original_encoding
    return IMPLICIT_LE if implicit else EXPLICIT_LE if little else EXPLICIT_BE


def transcode(source: IO[bytes], target: str, out: IO[bytes]) -> None:
    """Write the instance in ``source`` to ``out`` as a Part 10 file in ``target`` (an uncompressed syntax).

    Compressed pixel data is decoded (YBR colour becomes RGB, per PS3.5 8.2 for native data);
    the SOP Instance UID is kept, since decoding adds no loss (PS3.3 C.7.6.1.1.5). Words of OW,
    OL, OF, OD and OV values are byte-swapped when the byte order changes, which pydicom's writer
    leaves to the caller (PS3.5 7.3).
    """
    ds = dcmread(source, force=True)
    stored = syntax_of(ds)
    if not is_native(stored) and any(tag in ds for tag in _PIXEL_TAGS):
        ds.decompress(generate_instance_uid=False)
    correct_ambiguous_vr(ds, ds.original_encoding[1])
    target_little = target != EXPLICIT_BE
    swap_words(ds, (stored != EXPLICIT_BE) != target_little)
    if not isinstance(getattr(ds, "file_meta", None), FileMetaDataset):
        ds.file_meta = FileMetaDataset()
    meta = ds.file_meta
    meta.TransferSyntaxUID = target
    meta.MediaStorageSOPClassUID = meta.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID")
    meta.MediaStorageSOPInstanceUID = meta.get("MediaStorageSOPInstanceUID") or ds.get("SOPInstanceUID")
    dcmwrite(out, ds, implicit_vr=target == IMPLICIT_LE, little_endian=target_little, enforce_file_format=True)


def swap_words(ds: Dataset, swap: bool = True) -> None:
    """Decode every element of ``ds`` and its sequences and, if ``swap``, reverse the byte order of
    each word of their binary values, in place.

    Decoding them all matters even without a swap: an element pydicom kept raw would be written
    with the bytes and VR it was read with, wrong when the encoding changes or the file
    misstated its own (pydicom then reads implicit VR under an explicit-VR syntax).
    """
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                swap_words(item, swap)
            continue
        size = word_size(ds, elem.tag, elem.VR)
        if swap and size and isinstance(elem.value, (bytes, bytearray)) and len(elem.value) % size == 0:
            elem.value = swapped(elem.value, size)


def word_size(ds: Dataset, tag: int, vr: str) -> int | None:
    """Bytes per word of a binary value whose byte order follows the syntax (PS3.5 7.3): by its VR,
    but native Pixel Data of more than 8 bits by Bits Allocated (32-bit pixels in OW are 4-byte words)."""
    if tag in _PIXEL_TAGS and vr in WORD_SIZES and int(ds.get("BitsAllocated") or 0) > 8:
        return int(ds.BitsAllocated) // 8
    return WORD_SIZES.get(vr)


def swapped(data: bytes, size: int) -> bytes:
    """``data`` with each ``size``-byte word's byte order reversed."""
    return np.frombuffer(data, dtype=f"<u{size}").byteswap().tobytes()
