"""WADO-RS frames: single and multi-frame, native and encapsulated (with and without offset tables),
as stored in their own media type or decoded to octet-stream; errors for bad or missing frames."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pydicom
import pytest
from dicom_factory import make_instance
from dicomweb_client import DICOMwebClient
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid
from wado_helpers import (
    TEST_FILES,
    corrupt_rle,
    frames_of,
    media_type,
    multiframe,
    parts,
    path,
    storable,
    store,
    transfer_syntax,
)

STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'  # as OHIF asks
OCTETS = 'multipart/related; type="application/octet-stream"'


def native(ds: pydicom.Dataset, index: int) -> bytes:
    """Frame ``index`` of ``ds`` as native little-endian bytes, from pydicom's decoding."""
    arr = ds.pixel_array
    frame = arr[index] if int(ds.get("NumberOfFrames") or 1) > 1 else arr
    return frame.astype(frame.dtype.newbyteorder("<")).tobytes()


def encoded(data: bytes, ds: pydicom.Dataset) -> list[bytes]:
    start = data.index(b"\xe0\x7f\x10\x00")  # the top-level Pixel Data element
    return list(generate_frames(data[start + 12:], number_of_frames=int(ds.get("NumberOfFrames") or 1)))


@pytest.mark.parametrize("name, kind", [
    ("examples_ybr_color.dcm", "image/jpeg"),  # JPEG Baseline, 30 frames, with a Basic Offset Table
    ("JPEG-lossy.dcm", "image/jpeg"),
    ("MR_small_jpeg_ls_lossless.dcm", "image/jls"),
    ("SC_rgb_jls_lossy_sample.dcm", "image/jls"),
    ("MR_small_jp2klossless.dcm", "image/jp2"),
    ("JPEG2000.dcm", "image/jp2"),
    ("rtdose_rle.dcm", "image/dicom-rle"),  # 15 frames
    ("SC_rgb_rle_2frame.dcm", "image/dicom-rle"),
])
async def test_compressed_frames_as_stored_in_their_media_type(client, name, kind):
    data = storable(name)
    ds = pydicom.dcmread(io.BytesIO(data))
    syntax = str(ds.file_meta.TransferSyntaxUID)
    uids = await store(client, data)
    count = int(ds.get("NumberOfFrames") or 1)
    wanted = sorted({1, count, (count + 1) // 2}, reverse=True)
    resp = await client.get(path(uids) + "/frames/" + ",".join(map(str, wanted)), headers={"Accept": STORED})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith(f'multipart/related; type="{kind}"')
    got = await parts(resp)
    frames = encoded(data, ds)
    assert [p.body for p in got] == [frames[n - 1] for n in wanted]
    assert all(media_type(p) == kind and transfer_syntax(p) == syntax for p in got)
    assert [p.location.rsplit("/", 1)[1] for p in got] == [str(n) for n in wanted]
    resp = await client.get(path(uids) + "/frames/1", headers={"Accept": f'multipart/related; type="{kind}"'})
    assert (await parts(resp))[0].body == frames[0]


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "rtdose_rle.dcm", "MR_small_jp2klossless.dcm",
                                  "SC_rgb_rle_2frame.dcm"])
async def test_compressed_frames_decoded_on_request(client, name):
    ds = pydicom.dcmread(TEST_FILES[name])
    uids = await store(client, TEST_FILES[name].read_bytes())
    count = int(ds.get("NumberOfFrames") or 1)
    for header in (OCTETS, OCTETS + "; transfer-syntax=1.2.840.10008.1.2.1"):
        got = await parts(await client.get(path(uids) + f"/frames/{count}", headers={"Accept": header}))
        assert [media_type(p) for p in got] == ["application/octet-stream"]
        assert transfer_syntax(got[0]) == "1.2.840.10008.1.2.1"
        assert got[0].body == native(ds, count - 1)


@pytest.mark.parametrize("name", ["MR_small.dcm", "rtdose.dcm", "MR_small_bigendian.dcm", "rtdose_expb.dcm",
                                  "MR_small_implicit.dcm", "liver_1frame.dcm", "liver_expb_1frame.dcm",
                                  "image_dfl.dcm", "SC_rgb_small_odd_big_endian.dcm", "examples_palette.dcm"])
async def test_uncompressed_frames_are_little_endian_octets(client, name):
    ds = pydicom.dcmread(TEST_FILES[name])
    uids = await store(client, TEST_FILES[name].read_bytes())
    count = int(ds.get("NumberOfFrames") or 1)
    for header in (STORED, OCTETS, "*/*"):
        got = await parts(await client.get(path(uids) + f"/frames/{count},1", headers={"Accept": header}))
        assert [media_type(p) for p in got] == ["application/octet-stream"] * 2
        if ds.BitsAllocated == 1:
            assert got[1].body == pydicom.pixels.pack_bits(ds.pixel_array)
        else:
            assert [p.body for p in got] == [native(ds, count - 1), native(ds, 0)]


@pytest.mark.parametrize("layout", ["native", "bot", "nobot", "eot"])
async def test_generated_multiframe_in_every_layout(client, layout):
    pixels = frames_of(12)
    uids = await store(client, multiframe(pixels, layout=layout))
    got = await parts(await client.get(path(uids) + "/frames/12,1,7,7", headers={"Accept": OCTETS}))
    assert [np.frombuffer(p.body, "<u2").reshape(32, 24).tolist() for p in got] == \
        [pixels[i].tolist() for i in (11, 0, 6, 6)]


async def test_frames_of_a_large_multiframe_read_out_of_order(client):
    """Frames from both ends of a 6 MB file: the reader seeks back and far ahead in the attachment."""
    pixels = frames_of(8, rows=512, columns=768)
    uids = await store(client, multiframe(pixels))
    got = await parts(await client.get(path(uids) + "/frames/8,1,5", headers={"Accept": STORED}))
    assert [p.body for p in got] == [pixels[i].tobytes() for i in (7, 0, 4)]


async def test_pixel_data_bulkdata_is_every_frame(client):
    data = TEST_FILES["examples_ybr_color.dcm"].read_bytes()
    ds = pydicom.dcmread(TEST_FILES["examples_ybr_color.dcm"])
    uids = await store(client, data)
    got = await parts(await client.get(path(uids) + "/bulkdata/7FE00010", headers={"Accept": STORED}))
    assert [p.body for p in got] == encoded(data, ds)


@pytest.mark.parametrize("frames, status, words", [
    ("0", 400, "frame list"), ("1,x", 400, "frame list"), ("-1", 400, "frame list"), (",", 400, "frame list"),
    ("2", 404, "has 1 frame"), ("1,3", 404, "no frame 3"),
])
async def test_bad_or_missing_frames(client, frames, status, words):
    uids = await store(client, make_instance(generate_uid(), generate_uid()))
    resp = await client.get(path(uids) + f"/frames/{frames}", headers={"Accept": STORED})
    assert resp.status == status
    assert words in (await resp.json())["message"]


async def test_undecodable_frame_is_406(client):
    uids = await store(client, corrupt_rle(generate_uid(), generate_uid()))
    [part] = await parts(await client.get(path(uids) + "/frames/1", headers={"Accept": STORED}))  # as stored: fine
    resp = await client.get(path(uids) + "/frames/1", headers={"Accept": OCTETS})
    assert resp.status == 406 and "cannot be decoded" in (await resp.json())["message"]


async def test_no_pixel_data_no_frames(client):
    uids = await store(client, TEST_FILES["test-SR.dcm"].read_bytes())
    resp = await client.get(path(uids) + "/frames/1")
    assert resp.status == 404 and "no pixel data" in (await resp.json())["message"]


async def test_unacceptable_frame_media_type_is_406(client):
    uids = await store(client, TEST_FILES["examples_ybr_color.dcm"].read_bytes())
    for header in ('multipart/related; type="image/jp2"', 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.70',
                   "application/dicom"):
        resp = await client.get(path(uids) + "/frames/1", headers={"Accept": header})
        assert resp.status == 406, header
        assert "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50" in (await resp.json())["message"]


async def test_dicomweb_client_retrieve_instance_frames(client):
    web = DICOMwebClient(url=str(client.make_url("")).rstrip("/"), headers=dict(client.session.headers))
    data = TEST_FILES["examples_ybr_color.dcm"].read_bytes()
    ds = pydicom.dcmread(TEST_FILES["examples_ybr_color.dcm"])
    study, series, sop = await store(client, data)
    got = await asyncio.to_thread(web.retrieve_instance_frames, study, series, sop, [2, 30])
    frames = encoded(data, ds)
    assert got == [frames[1], frames[29]]
    got = await asyncio.to_thread(web.retrieve_instance_frames, study, series, sop, [3],
                                  media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),))
    assert got == [frames[2]]
    got = await asyncio.to_thread(web.retrieve_instance_frames, study, series, sop, [1],
                                  media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),))
    assert got == [native(ds, 0)]
