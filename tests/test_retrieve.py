"""WADO-RS retrieve study, series, instance: byte-exact as stored, or converted as the Accept list asks."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import numpy as np
import pydicom
import pytest
from dicom_factory import make_instance, stow
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid
from wado_helpers import TEST_FILES, corrupt_rle, media_type, parts, path, store, transfer_syntax

EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"
JPEG_BASELINE, JPEG_LS, RLE = "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5"
ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def accept(syntax: str | None = None) -> dict[str, str]:
    value = 'multipart/related; type="application/dicom"'
    return {"Accept": value + (f"; transfer-syntax={syntax}" if syntax else "")}


def read(body: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(body))


async def test_study_series_instance_come_back_byte_exact(client):
    study, series = generate_uid(), [generate_uid(), generate_uid()]
    files = {}
    for i, s in enumerate([series[0], series[0], series[1]]):
        sop = generate_uid()
        files[sop] = make_instance(study, s, sop, instance_number=i + 1)
    assert (await stow(client, files.values()))[0] == 200
    got = await parts(await client.get(f"/studies/{study}", headers={"Accept": ANY}))
    assert sorted(p.body for p in got) == sorted(files.values())
    assert all(media_type(p) == "application/dicom" and transfer_syntax(p) == EXPLICIT_LE for p in got)
    assert {p.location.rsplit("/", 1)[1] for p in got} == set(files)
    got = await parts(await client.get(f"/studies/{study}/series/{series[0]}", headers={"Accept": ANY}))
    assert len(got) == 2
    sop = next(iter(files))
    [one] = await parts(await client.get(f"/studies/{study}/series/{series[0]}/instances/{sop}", headers={"Accept": ANY}))
    assert one.body == files[sop]


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "examples_ybr_color.dcm", "MR_small_RLE.dcm",
                                  "MR_small_bigendian.dcm", "JPEG2000.dcm", "rtdose.dcm", "image_dfl.dcm"])
async def test_stored_syntax_is_byte_exact(client, name):
    data = TEST_FILES[name].read_bytes()
    uids = await store(client, data)
    stored = str(read(data).file_meta.TransferSyntaxUID)
    for headers in ({"Accept": ANY}, accept(stored)):
        [part] = await parts(await client.get(path(uids), headers=headers))
        assert part.body == data and transfer_syntax(part) == stored


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
@pytest.mark.parametrize("target", [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE])
async def test_converted_to_each_uncompressed_syntax(client, name, target):
    reference = pydicom.dcmread(TEST_FILES["MR_small.dcm"])
    uids = await store(client, TEST_FILES[name].read_bytes())
    [part] = await parts(await client.get(path(uids), headers=accept(target)))
    ds = read(part.body)
    assert transfer_syntax(part) == target and ds.file_meta.TransferSyntaxUID == target
    assert np.array_equal(ds.pixel_array, reference.pixel_array)
    assert ds.SOPInstanceUID == uids[2] and ds.PatientName == reference.PatientName


async def test_default_is_explicit_little_endian_for_lossless_data(client):
    uids = await store(client, TEST_FILES["MR_small_RLE.dcm"].read_bytes())
    [part] = await parts(await client.get(path(uids), headers=accept()))
    assert transfer_syntax(part) == EXPLICIT_LE and read(part.body).file_meta.TransferSyntaxUID == EXPLICIT_LE
    uids = await store(client, TEST_FILES["MR_small_bigendian.dcm"].read_bytes())
    for headers in (accept(), {"Accept": "application/dicom"}, {}):
        [part] = await parts(await client.get(path(uids), headers=headers))
        assert transfer_syntax(part) == EXPLICIT_LE


async def test_lossy_data_goes_as_stored_unless_a_syntax_is_named(client):
    data = TEST_FILES["examples_ybr_color.dcm"].read_bytes()  # JPEG Baseline, 30 frames
    uids = await store(client, data)
    [part] = await parts(await client.get(path(uids), headers=accept()))
    assert part.body == data and transfer_syntax(part) == JPEG_BASELINE
    [part] = await parts(await client.get(path(uids), headers=accept(EXPLICIT_LE)))
    ds = read(part.body)
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE and ds.PhotometricInterpretation == "RGB"
    assert ds.pixel_array.shape == (30, 240, 320, 3)


async def test_quality_values_choose_among_syntaxes(client):
    uids = await store(client, TEST_FILES["MR_small_RLE.dcm"].read_bytes())
    header = (f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_BE}; q=0.5, '
              f'multipart/related; type="application/dicom"; transfer-syntax={IMPLICIT_LE}; q=0.9, '
              f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_LS}')
    [part] = await parts(await client.get(path(uids), headers={"Accept": header}))
    assert transfer_syntax(part) == IMPLICIT_LE  # JPEG-LS is preferred but cannot be made
    header = f'multipart/related; type="application/dicom"; transfer-syntax={RLE}; q=0.1, ' + accept(EXPLICIT_BE)["Accept"]
    [part] = await parts(await client.get(path(uids), headers={"Accept": header}))
    assert transfer_syntax(part) == EXPLICIT_BE
    [part] = await parts(await client.get(path(uids) + f"?accept=multipart/related%3B%20type%3D%22application/dicom%22%3B%20transfer-syntax%3D{RLE}",
                                          headers=accept(EXPLICIT_BE)))
    assert transfer_syntax(part) == RLE  # the accept query parameter wins over the header


async def test_unavailable_syntax_or_media_type_is_406(client):
    uids = await store(client, TEST_FILES["MR_small.dcm"].read_bytes())
    resp = await client.get(path(uids), headers=accept(JPEG_LS))
    assert resp.status == 406
    message = (await resp.json())["message"]
    assert uids[2] in message and JPEG_LS in message and EXPLICIT_LE in message
    for value in ("image/png", "application/dicom; q=0", "text/html"):
        assert (await client.get(path(uids), headers={"Accept": value})).status == 406


async def test_a_study_that_cannot_be_sent_whole_is_406_before_any_byte(client):
    study = generate_uid()
    plain = make_instance(study, generate_uid())
    lossy = pydicom.dcmread(TEST_FILES["SC_rgb_jpeg_dcmtk.dcm"])
    lossy.StudyInstanceUID = study
    out = io.BytesIO()
    lossy.save_as(out)
    assert (await stow(client, [plain, out.getvalue()]))[0] == 200
    resp = await client.get(f"/studies/{study}", headers=accept(JPEG_BASELINE))
    assert resp.status == 406  # the JPEG one could go, the uncompressed one cannot: nothing goes
    assert "stored as Explicit VR Little Endian" in (await resp.json())["message"]


@pytest.mark.parametrize("url", [
    "/studies/1.2.3.4",
    "/studies/1.2.3.4/series/1.2.3.5",
    "/studies/{study}/series/1.2.3.5",
    "/studies/1.2.3.4/series/{series}/instances/{sop}",
    "/studies/{study}/series/{series}/instances/1.2.3.6",
    "/studies/{study}/series/{series}/instances/1.2.3.6/frames/1",
    "/studies/1.2.3.4/series/{series}/instances/{sop}/bulkdata/7FE00010",
    "/studies/{study}/series/1.2.3.5/instances/{sop}/rendered",
    "/studies/1.2.3.4/thumbnail",
    "/studies/{study}/series/1.2.3.5/rendered",
])
async def test_unknown_or_mismatched_uids_are_404(client, url):
    study, series, sop = await store(client, make_instance(generate_uid(), generate_uid()))
    resp = await client.get(url.format(study=study, series=series, sop=sop))
    assert resp.status == 404
    assert (await resp.json())["message"].startswith("no ")


# -- dicomweb_client ------------------------------------------------------------------------------


def dwc(client) -> DICOMwebClient:
    return DICOMwebClient(url=str(client.make_url("")).rstrip("/"), headers=dict(client.session.headers))


async def test_dicomweb_client_retrieve_study_series_instance(client):
    study = generate_uid()
    names = ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm"]
    stored = {}
    for name in names:
        ds = pydicom.dcmread(TEST_FILES[name])
        ds.StudyInstanceUID = study
        ds.SOPInstanceUID = generate_uid()
        out = io.BytesIO()
        ds.save_as(out)
        stored[ds.SOPInstanceUID] = (ds, out.getvalue())
    assert (await stow(client, [data for _, data in stored.values()]))[0] == 200
    web = dwc(client)
    got = await asyncio.to_thread(web.retrieve_study, study)
    assert {ds.SOPInstanceUID for ds in got} == set(stored)
    for ds in got:
        original = stored[ds.SOPInstanceUID][0]
        lossy = original.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91"
        assert ds.file_meta.TransferSyntaxUID == (original.file_meta.TransferSyntaxUID if lossy else EXPLICIT_LE)
        assert np.array_equal(ds.pixel_array, original.pixel_array)
    sop, (original, data) = next(iter(stored.items()))
    series = await asyncio.to_thread(web.retrieve_series, study, original.SeriesInstanceUID,
                                     media_types=(("application/dicom", "*"),))
    assert sorted(ds.SOPInstanceUID for ds in series) == sorted(
        s for s, (o, _) in stored.items() if o.SeriesInstanceUID == original.SeriesInstanceUID)
    sop, (original, _) = next((s, v) for s, v in stored.items() if v[0].file_meta.TransferSyntaxUID == RLE)
    one = await asyncio.to_thread(web.retrieve_instance, study, original.SeriesInstanceUID, sop,
                                  media_types=(("application/dicom", EXPLICIT_LE),))
    assert one.file_meta.TransferSyntaxUID == EXPLICIT_LE and one.SOPInstanceUID == sop
    assert np.array_equal(one.pixel_array, original.pixel_array)


async def test_a_failure_after_the_first_byte_cuts_the_response(client):
    study = generate_uid()
    good = make_instance(study, generate_uid(), "2.25.1")
    assert (await stow(client, [good, corrupt_rle(study, "2.25.2")]))[0] == 200
    resp = await client.get(f"/studies/{study}", headers=accept(EXPLICIT_LE))
    assert resp.status == 200  # the first instance was on its way when the second failed
    boundary = resp.headers["Content-Type"].split("boundary=")[1].encode()
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):  # but the connection is dropped mid-body
        async for chunk in resp.content.iter_any():
            received += chunk
    assert received.startswith(b"--" + boundary + b"\r\n")
    assert b"--" + boundary + b"--" not in received  # no closing delimiter: the client can tell
    series = pydicom.dcmread(TEST_FILES["MR_small_RLE.dcm"]).SeriesInstanceUID
    resp = await client.get(f"/studies/{study}/series/{series}/instances/2.25.2", headers=accept(EXPLICIT_LE))
    assert resp.status == 406 and "cannot be converted" in (await resp.json())["message"]
