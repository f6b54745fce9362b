"""Bulk data: every BulkDataURI that metadata emits resolves to the value, nested ones included."""

from __future__ import annotations

import io
from typing import Any, Iterator

import numpy as np
import pydicom
import pytest
from dicom_factory import make_instance
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_encoder
from pydicom.sequence import Sequence
from pydicom.uid import RLELossless, generate_uid
from wado_helpers import TEST_FILES, frames_of, media_type, multiframe, parts, path, store, with_bulk_data
from yarl import URL

from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.web.bulkdata import parse_path, with_bulkdata_uris


def uris(record: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(tag path, BulkDataURI) of every bulk attribute, sequences included."""
    for tag, elem in record.items():
        if "BulkDataURI" in elem:
            yield tag, elem["BulkDataURI"]
        for item in elem.get("Value", []) if elem.get("vr") == "SQ" else []:
            yield from uris(item)


async def metadata(client, uids) -> dict[str, Any]:
    [record] = await (await client.get(path(uids) + "/metadata")).json()
    return record


async def test_top_level_and_nested_bulk_data_resolve(client):
    data, document, words = with_bulk_data()
    uids = await store(client, data)
    record = await metadata(client, uids)
    found = dict(uris(record))
    base = f"{client.make_url(path(uids))}/bulkdata"
    assert found == {"00420011": f"{base}/00420011", "00091000": f"{base}/00081140/1/00091000"}
    assert record["00420011"] == {"vr": "OB", "BulkDataURI": f"{base}/00420011"}
    for uri, expected in ((found["00420011"], document), (found["00091000"], words)):
        resp = await client.get(URL(uri).path)
        [part] = await parts(resp)
        assert media_type(part) == "application/octet-stream" and part.body == expected
        assert part.location.endswith(uri.split("/bulkdata")[1])


async def test_big_endian_bulk_data_comes_little_endian(client):
    data, document, words = with_bulk_data(big_endian=True)
    uids = await store(client, data)
    found = dict(uris(await metadata(client, uids)))
    [part] = await parts(await client.get(URL(found["00091000"]).path))
    assert part.body == words
    [part] = await parts(await client.get(URL(found["00420011"]).path))
    assert part.body == document  # OB has no byte order


@pytest.mark.parametrize("name", ["MR_small.dcm", "examples_overlay.dcm", "examples_palette.dcm", "waveform_ecg.dcm",
                                  "examples_ybr_color.dcm", "MR_small_bigendian.dcm", "rtdose_rle.dcm", "CT_small.dcm"])
async def test_every_uri_of_real_files_resolves(client, name):
    data = TEST_FILES[name].read_bytes()
    uids = await store(client, data)
    found = list(uris(await metadata(client, uids)))
    assert found, name
    ds = pydicom.dcmread(io.BytesIO(data))
    big_endian = ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2"
    for tag, uri in found:
        resp = await client.get(URL(uri).path,
                                headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
        assert resp.status == 200, (name, tag)
        got = [part.body for part in await parts(resp)]
        if tag == "7FE00010" and ds.file_meta.TransferSyntaxUID.is_compressed:  # one part per frame
            frames = int(ds.get("NumberOfFrames") or 1)
            assert got == list(generate_frames(ds.PixelData, number_of_frames=frames)), (name, uri)
        else:
            assert got == [expected_value(ds, uri.split("/bulkdata/")[1], big_endian)], (name, uri)


_WORD_SIZE = {"OW": 2, "US or OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def expected_value(ds: pydicom.Dataset, bulk_path: str, big_endian: bool) -> bytes:
    """The value a bulk data path (``tag[/item/tag...]``, items counted from 0) names in ``ds``, read
    independently of the server: pydicom's raw value, little endian (PS3.18 8.7.3.3.2)."""
    steps = bulk_path.split("/")
    for sequence, item in zip(steps[:-1:2], steps[1::2]):
        ds = ds[int(sequence, 16)].value[int(item)]
    element = ds[int(steps[-1], 16)]
    value = bytes(element.value)
    size = _WORD_SIZE.get(element.VR, 1)
    if big_endian and size > 1:
        value = np.frombuffer(value, dtype=f">u{size}").astype(f"<u{size}").tobytes()
    return value


async def test_relative_uris_by_setting(make_client, couch_db_name):
    client = await make_client(couch_db_name, relative_bulkdata_uris=True, prefix="/dicom-web")
    data, document, _ = with_bulk_data()
    status, body = await _stow(client, data)
    uids = tuple(body.split("/studies/")[1].replace("/series/", "/").replace("/instances/", "/").split("/"))
    [record] = await (await client.get("/dicom-web" + path(uids) + "/metadata")).json()
    uri = record["00420011"]["BulkDataURI"]
    assert uri == f"/dicom-web{path(uids)}/bulkdata/00420011"
    [part] = await parts(await client.get(uri))
    assert part.body == document


async def _stow(client, data: bytes) -> tuple[int, str]:
    from dicom_factory import multipart
    body, content_type = multipart([data])
    resp = await client.post("/dicom-web/studies", data=body, headers={"Content-Type": content_type})
    answer = await resp.json(content_type=None)
    return resp.status, answer["00081199"]["Value"][0]["00081190"]["Value"][0]


@pytest.mark.parametrize("bulk, status, words", [
    ("xyz", 400, "not a tag"), ("00420011/0", 400, "not a tag"), ("0042001", 400, "not a tag"),
    ("00100010", 404, "no bulk data"), ("00280010", 404, "no bulk data"), ("00091000", 404, "no bulk data"),
    ("00081140/5/00091000", 404, "no item 5"), ("00420011/0/00091000", 404, "no item 0"),
])
async def test_bad_or_missing_bulk_data(client, bulk, status, words):
    data, _, _ = with_bulk_data()
    uids = await store(client, data)
    resp = await client.get(path(uids) + f"/bulkdata/{bulk}")
    assert resp.status == status
    assert words in (await resp.json())["message"]


async def test_unacceptable_media_type_is_406(client):
    data, _, _ = with_bulk_data()
    uids = await store(client, data)
    resp = await client.get(path(uids) + "/bulkdata/00420011", headers={"Accept": "image/jpeg"})
    assert resp.status == 406
    body = await resp.json()
    assert body["status"] == 406 and "image/jpeg" in body["message"]


def test_uris_are_added_only_where_the_value_was_left_out():
    record = {
        "00080016": {"vr": "UI", "Value": ["1.2"]},
        "00091001": {"vr": "OB", "InlineBinary": "AAE="},
        "00420011": {"vr": "OB"},
        "7FE00010": {"vr": "OW"},
        "00081140": {"vr": "SQ", "Value": [{"00091000": {"vr": "OW"}}, {"00100010": {"vr": "PN"}}]},
        "00081150": {"vr": "SQ"},
    }
    out = with_bulkdata_uris(record, "B")
    assert out["00080016"] == record["00080016"] and out["00091001"] == record["00091001"]
    assert out["00420011"] == {"vr": "OB", "BulkDataURI": "B/00420011"}
    assert out["7FE00010"] == {"vr": "OW", "BulkDataURI": "B/7FE00010"}
    assert out["00081140"]["Value"] == [{"00091000": {"vr": "OW", "BulkDataURI": "B/00081140/0/00091000"}},
                                        {"00100010": {"vr": "PN"}}]
    assert out["00081150"] == {"vr": "SQ"}


def test_bulk_data_paths():
    assert parse_path("7FE00010") == [0x7FE00010]
    assert parse_path("00081140/12/00091000") == [0x00081140, 12, 0x00091000]
    for bad in ("", "7FE0001G", "00081140/x/00091000", "00081140/1"):
        with pytest.raises(DicomwebError):
            parse_path(bad)


async def test_instance_without_bulk_data_has_no_uris(client):
    uids = await store(client, TEST_FILES["test-SR.dcm"].read_bytes())
    assert not list(uris(await metadata(client, uids)))
    uids = await store(client, make_instance(generate_uid(), generate_uid()))
    assert [tag for tag, _ in uris(await metadata(client, uids))] == ["7FE00010"]


async def test_encapsulated_icon_in_a_sequence(client):
    """An RLE image's Icon Image Sequence: its compressed pixel data resolves as a frame."""
    ds = pydicom.dcmread(io.BytesIO(multiframe(frames_of(2), layout="bot")))
    icon = Dataset()
    icon.Rows, icon.Columns, icon.SamplesPerPixel, icon.PhotometricInterpretation = 64, 64, 1, "MONOCHROME2"
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    pixels = (np.arange(64 * 64) * 37 % 251).astype(np.uint8).reshape(64, 64)
    encoded = get_encoder(RLELossless).encode(pixels, rows=64, columns=64, samples_per_pixel=1, bits_allocated=8,
                                              bits_stored=8, pixel_representation=0,
                                              photometric_interpretation="MONOCHROME2", number_of_frames=1)
    icon.PixelData = encapsulate([encoded])
    icon["PixelData"].VR = "OB"
    ds.IconImageSequence = Sequence([icon])
    out = io.BytesIO()
    ds.save_as(out)
    uids = await store(client, out.getvalue())
    found = {uri.split("/bulkdata/")[1]: uri for _, uri in uris(await metadata(client, uids))}
    assert set(found) == {"7FE00010", "00880200/0/7FE00010"}
    [part] = await parts(await client.get(URL(found["00880200/0/7FE00010"]).path))
    assert media_type(part) == "image/dicom-rle" and part.body.rstrip(b"\0") == encoded.rstrip(b"\0")
