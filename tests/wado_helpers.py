"""Helpers for the WADO-RS tests: multipart responses taken apart, pydicom's files by name, generated
multi-frame and bulk-data instances."""

from __future__ import annotations

import io
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import numpy as np
import pydicom.data
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from dicom_factory import stow
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.pixels import get_encoder
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

TEST_FILES = {Path(p).name: Path(p) for p in pydicom.data.get_testdata_files() if Path(p).is_file()}


@dataclass(frozen=True)
class Part:
    content_type: str
    location: str | None
    body: bytes


async def parts(resp: ClientResponse) -> list[Part]:
    """The parts of a multipart/related response, checked to be well formed and complete."""
    body = await resp.read()
    content_type = resp.headers["Content-Type"]
    assert content_type.startswith("multipart/related"), content_type
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    assert message.is_multipart() and not message.defects, message.defects
    return [Part(p["Content-Type"], p["Content-Location"], p.get_payload(decode=True)) for p in message.iter_parts()]


def media_type(part: Part) -> str:
    return part.content_type.split(";")[0].strip()


def transfer_syntax(part: Part) -> str | None:
    for param in part.content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key == "transfer-syntax":
            return value.strip('"')
    return None


async def store(client: TestClient, data: bytes) -> tuple[str, str, str]:
    """STOW one file; return its (study, series, instance) UIDs."""
    status, body = await stow(client, [data])
    assert status == 200, body
    url = body["00081199"]["Value"][0]["00081190"]["Value"][0]
    study, rest = url.split("/studies/")[1].split("/series/")
    series, sop = rest.split("/instances/")
    return study, series, sop


def storable(name: str) -> bytes:
    """pydicom's test file ``name``, given Study and Series Instance UIDs if it lacks them."""
    data = TEST_FILES[name].read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    if "StudyInstanceUID" in ds and "SeriesInstanceUID" in ds:
        return data
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def path(uids: tuple[str, str, str]) -> str:
    return "/studies/{}/series/{}/instances/{}".format(*uids)


def frames_of(count: int, rows: int = 32, columns: int = 24) -> np.ndarray:
    """``count`` distinct 16-bit frames."""
    base = np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns)
    return np.stack([(base * (7 * i + 3) + i * 101) % 4096 for i in range(count)]).astype(np.uint16)


def multiframe(pixels: np.ndarray, *, layout: str = "native", study: str | None = None) -> bytes:
    """A multi-frame CT image of ``pixels`` (frames, rows, columns): native, or RLE with a Basic
    Offset Table ("bot"), without one ("nobot"), or with an Extended Offset Table ("eot")."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID = CTImageStorage
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.InstanceNumber = "CT", "MF-1", 1
    ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if layout == "native":
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = pixels.tobytes()
    else:
        encoder = get_encoder(RLELossless)
        encoded = [encoder.encode(frame, **_encoding(ds)) for frame in pixels]
        ds.file_meta.TransferSyntaxUID = RLELossless
        if layout == "eot":
            ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(encoded)
        else:
            ds.PixelData = encapsulate(encoded, has_bot=layout == "bot")
        ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _encoding(ds: Dataset) -> dict:
    return dict(rows=ds.Rows, columns=ds.Columns, samples_per_pixel=1, bits_allocated=16, bits_stored=12,
                pixel_representation=0, photometric_interpretation="MONOCHROME2", number_of_frames=1)


def with_bulk_data(*, big_endian: bool = False) -> tuple[bytes, bytes, bytes]:
    """An instance with a 5000-byte OB at the top level and a 3000-word OW inside a sequence
    item; returns (file, the OB value, the OW value as little-endian bytes)."""
    document = (bytes(range(256)) * 20)[:5000]
    words = np.arange(3000, dtype=np.uint16) * 7
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.2" if big_endian else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "DOC"
    item = Dataset()
    item.add_new(0x00090010, "LO", "dicomweb_couch")  # private creator of block 10
    item.add_new(0x00091000, "OW", words.astype(">u2" if big_endian else "<u2").tobytes())
    ds.add_new(0x00081140, "SQ", Sequence([Dataset(), item]))
    ds.add_new(0x00420011, "OB", document)
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=not big_endian, enforce_file_format=True)
    return out.getvalue(), document, words.astype("<u2").tobytes()


def corrupt_rle(study: str, sop: str) -> bytes:
    """An RLE instance whose first segment offset points past its data: stored fine, undecodable."""
    ds = pydicom.dcmread(TEST_FILES["MR_small_RLE.dcm"])
    ds.StudyInstanceUID, ds.SOPInstanceUID = study, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    data = bytearray(ds.PixelData)
    header = data.index(b"\x02\x00\x00\x00\x40\x00\x00\x00")  # RLE header: 2 segments, the first at 64
    data[header + 8:header + 12] = (10 ** 6).to_bytes(4, "little")  # the second far past the end
    ds.PixelData = bytes(data)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()
