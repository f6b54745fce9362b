"""Rendered and thumbnail resources: JPEG, PNG and GIF images with window, viewport and quality."""

from __future__ import annotations

import io
import math

import numpy as np
import pydicom
import pytest
from dicom_factory import make_instance, stow
from PIL import Image
from pydicom.uid import generate_uid
from wado_helpers import TEST_FILES, corrupt_rle, frames_of, media_type, multiframe, parts, path, store

from dicomweb_couch.dicom.rendering import Window, apply_window, parse_parameters
from dicomweb_couch.errors import DicomwebError


def image(body: bytes) -> Image.Image:
    return Image.open(io.BytesIO(body))


def voi(x: float, center: float, width: float, function: str = "LINEAR") -> float:
    """PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT), C.11.2.1.3.1 (SIGMOID), written
    here from the standard's formulas, one value at a time, with output range 0..255."""
    if function == "SIGMOID":
        return 255 / (1 + math.exp(-4 * (x - center) / width))
    if function == "LINEAR_EXACT":
        if x <= center - width / 2:
            return 0
        if x > center + width / 2:
            return 255
        return ((x - center) / width + 0.5) * 255
    if x <= center - 0.5 - (width - 1) / 2:
        return 0
    if x > center - 0.5 + (width - 1) / 2:
        return 255
    return ((x - (center - 0.5)) / (width - 1) + 0.5) * 255


def expected_gray(ds: pydicom.Dataset, center: float | None = None, width: float | None = None,
                  function: str = "LINEAR") -> np.ndarray:
    """What a monochrome image should look like: stored values through the Modality LUT (rescale),
    the VOI window (the stored one unless given), MONOCHROME1 inverted (PS3.4 N.2.1)."""
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    if center is None:
        center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    out = np.empty((ds.Rows, ds.Columns), dtype=np.uint8)
    for (r, c), stored in np.ndenumerate(ds.pixel_array):
        gray = round(voi(int(stored) * slope + intercept, center, width, function))
        out[r, c] = 255 - gray if ds.PhotometricInterpretation == "MONOCHROME1" else gray
    return out


@pytest.mark.parametrize("name, mode", [
    ("CT_small.dcm", "L"), ("MR_small_bigendian.dcm", "L"), ("examples_ybr_color.dcm", "RGB"),
    ("examples_palette.dcm", "RGB"), ("SC_rgb_rle_16bit.dcm", "RGB"), ("JPEG2000.dcm", "L"),
    ("MR_small_jpeg_ls_lossless.dcm", "L"), ("6278", "L"), ("SC_rgb_jpeg.dcm", "RGB"), ("liver_1frame.dcm", "L"),
])
async def test_instance_rendered_as_jpeg_png_gif(client, name, mode):
    ds = pydicom.dcmread(TEST_FILES[name])
    uids = await store(client, TEST_FILES[name].read_bytes())
    for accept, kind, fmt in (("image/jpeg", "image/jpeg", "JPEG"), ("image/png", "image/png", "PNG"),
                              ("image/gif", "image/gif", "GIF"), ("*/*", "image/jpeg", "JPEG"),
                              ("text/html, image/*;q=0.5", "image/jpeg", "JPEG"),
                              ('multipart/related; type="image/png"', "image/png", "PNG")):
        resp = await client.get(path(uids) + "/rendered", headers={"Accept": accept})
        assert resp.status == 200 and resp.headers["Content-Type"] == kind, accept
        img = image(await resp.read())
        assert img.format == fmt and img.size == (ds.Columns, ds.Rows)
        if fmt != "GIF":
            assert img.mode == mode


async def test_monochrome_pipeline_uses_the_stored_window(client):
    data = make_instance(generate_uid(), generate_uid(), rows=16, columns=16)  # window 40/400, rescale -1024
    ds = pydicom.dcmread(io.BytesIO(data))
    uids = await store(client, data)
    png = np.asarray(image(await (await client.get(path(uids) + "/rendered", headers={"Accept": "image/png"})).read()))
    expected = expected_gray(ds)
    assert len(np.unique(expected)) > 50  # a window that shows many gray levels, not a black-and-white picture
    assert np.array_equal(png, expected)


async def test_window_parameter_overrides_and_monochrome1_inverts(client):
    data = make_instance(generate_uid(), generate_uid(), rows=16, columns=16)
    ds = pydicom.dcmread(io.BytesIO(data))
    uids = await store(client, data)
    for query, window in (("window=0,8000", (0, 8000, "LINEAR")),
                          ("window=-300,600,linear_exact", (-300, 600, "LINEAR_EXACT")),
                          ("window=-300,600,SIGMOID", (-300, 600, "SIGMOID"))):
        shown = await (await client.get(path(uids) + "/rendered?" + query, headers={"Accept": "image/png"})).read()
        assert np.array_equal(np.asarray(image(shown)), expected_gray(ds, *window)), query
    ds = pydicom.dcmread(TEST_FILES["6278"])  # MONOCHROME1, window 1600/2800, rescale 0.684/200
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    uids = await store(client, TEST_FILES["6278"].read_bytes())
    shown = np.asarray(image(await (await client.get(path(uids) + "/rendered", headers={"Accept": "image/png"})).read()))
    assert np.array_equal(shown, expected_gray(ds))


async def test_viewport_scales_crops_and_flips(client):
    pixels = frames_of(1, rows=64, columns=128)
    uids = await store(client, multiframe(pixels))
    resp = await client.get(path(uids) + "/rendered?viewport=64,64", headers={"Accept": "image/png"})
    assert image(await resp.read()).size == (64, 32)  # aspect kept
    resp = await client.get(path(uids) + "/rendered?viewport=32,32,0,0,32,32", headers={"Accept": "image/png"})
    region = np.asarray(image(await resp.read()))
    full = np.asarray(image(await (await client.get(path(uids) + "/rendered", headers={"Accept": "image/png"})).read()))
    assert np.array_equal(region, full[:32, :32])
    resp = await client.get(path(uids) + "/rendered?viewport=32,32,32,0,-32,32", headers={"Accept": "image/png"})
    assert np.array_equal(np.asarray(image(await resp.read())), full[:32, :32][:, ::-1])


async def test_quality_changes_jpeg_size(client):
    uids = await store(client, TEST_FILES["CT_small.dcm"].read_bytes())
    low = await (await client.get(path(uids) + "/rendered?quality=5", headers={"Accept": "image/jpeg"})).read()
    high = await (await client.get(path(uids) + "/rendered?quality=100", headers={"Accept": "image/jpeg"})).read()
    assert len(low) < len(high)


async def test_frames_rendered_one_or_several(client):
    pixels = frames_of(5)
    uids = await store(client, multiframe(pixels, layout="bot"))
    resp = await client.get(path(uids) + "/frames/3/rendered", headers={"Accept": "image/png"})
    assert resp.headers["Content-Type"] == "image/png"
    third = np.asarray(image(await resp.read()))
    got = await parts(await client.get(path(uids) + "/frames/3,1/rendered", headers={"Accept": "image/png"}))
    assert [media_type(p) for p in got] == ["image/png", "image/png"]
    assert np.array_equal(np.asarray(image(got[0].body)), third)
    assert not np.array_equal(np.asarray(image(got[1].body)), third)
    resp = await client.get(path(uids) + "/frames/6/rendered")
    assert resp.status == 404


async def test_study_and_series_rendered_and_thumbnails(client):
    """A series' thumbnail is its middle image by InstanceNumber; a study's, that of its first series
    (in UID order). The instances differ in width, so an image's size tells which one it shows."""
    study = generate_uid(prefix=None)
    ct, mr = study + ".1", study + ".2"
    sops = {n: generate_uid() for n in (3, 1, 2)}
    files = [make_instance(study, ct, sops[n], instance_number=n, rows=40, columns=columns)
             for n, columns in ((3, 64), (1, 62), (2, 60))]
    files.append(make_instance(study, mr, modality="MR", rows=40, columns=80))
    assert (await stow(client, files))[0] == 200
    got = await parts(await client.get(f"/studies/{study}/rendered", headers={"Accept": "image/jpeg"}))
    assert len(got) == 4 and all(media_type(p) == "image/jpeg" for p in got)
    assert sorted(image(p.body).size for p in got) == [(60, 40), (62, 40), (64, 40), (80, 40)]
    got = await parts(await client.get(f"/studies/{study}/series/{mr}/rendered"))
    assert [image(p.body).size for p in got] == [(80, 40)]
    middle = await client.get(path((study, ct, sops[2])) + "/thumbnail", headers={"Accept": "image/png"})
    middle_pixels = np.asarray(image(await middle.read()))
    for url in (f"/studies/{study}/thumbnail", f"/studies/{study}/series/{ct}/thumbnail"):
        resp = await client.get(url, headers={"Accept": "image/png"})
        assert resp.status == 200
        shown = image(await resp.read())
        assert shown.size == (128, 85)  # 60 x 40 scaled to 128 wide: instance number 2
        assert np.array_equal(np.asarray(shown), middle_pixels)
    resp = await client.get(f"/studies/{study}/series/{mr}/thumbnail", headers={"Accept": "image/png"})
    assert image(await resp.read()).size == (128, 64)
    resp = await client.get(f"/studies/{study}/series/{ct}/thumbnail?viewport=30,30")
    assert image(await resp.read()).size == (30, 20)


async def test_instance_thumbnail_is_the_middle_frame(client):
    pixels = frames_of(5)
    uids = await store(client, multiframe(pixels))
    thumb = await (await client.get(path(uids) + "/thumbnail?viewport=24,32", headers={"Accept": "image/png"})).read()
    middle = await (await client.get(path(uids) + "/frames/3/rendered", headers={"Accept": "image/png"})).read()
    assert np.array_equal(np.asarray(image(thumb)), np.asarray(image(middle)))


@pytest.mark.parametrize("query, words", [
    ("window=40", "window"), ("window=a,b", "window"), ("window=40,0", "width"), ("window=40,400,cubic", "function"),
    ("viewport=0,10", "viewport"), ("viewport=10", "viewport"), ("viewport=10,10,0,0,0,5", "cannot be 0"),
    ("viewport=99999,10", "viewport"), ("quality=0", "quality"), ("quality=high", "quality"), ("window=1,inf", "window"),
])
async def test_bad_rendering_parameters_are_400(client, query, words):
    uids = await store(client, make_instance(generate_uid(), generate_uid()))
    resp = await client.get(path(uids) + "/rendered?" + query)
    assert resp.status == 400
    assert words in (await resp.json())["message"]


async def test_not_renderable(client):
    uids = await store(client, TEST_FILES["test-SR.dcm"].read_bytes())
    for suffix in ("/rendered", "/thumbnail"):
        resp = await client.get(path(uids) + suffix)
        assert resp.status == 404 and "no " in (await resp.json())["message"]
    resp = await client.get(f"/studies/{uids[0]}/rendered")
    assert resp.status == 404
    uids = await store(client, make_instance(generate_uid(), generate_uid()))
    resp = await client.get(path(uids) + "/rendered", headers={"Accept": "application/dicom"})
    assert resp.status == 406 and "image/jpeg" in (await resp.json())["message"]
    uids = await store(client, corrupt_rle(generate_uid(), generate_uid()))
    resp = await client.get(path(uids) + "/rendered")
    assert resp.status == 406 and "cannot be rendered" in (await resp.json())["message"]


def test_parameters_and_windows():
    assert parse_parameters({}).viewport is None
    assert parse_parameters({}, thumbnail=True).viewport.width == 128
    params = parse_parameters({"window": "40,400,SIGMOID", "viewport": "100,50,,,,", "quality": "70"})
    assert params.window == Window(40, 400, "SIGMOID") and params.viewport.sw is None and params.quality == 70
    values = np.array([-1000.0, 39.5, 40.0, 1000.0])
    assert apply_window(values, Window(40, 400)).tolist()[0] == 0 and apply_window(values, Window(40, 400)).tolist()[-1] == 1
    assert apply_window(values, Window(40, 400, "LINEAR_EXACT"))[2] == 0.5
    assert apply_window(values, Window(40, 400, "SIGMOID"))[2] == 0.5
    with pytest.raises(DicomwebError):
        parse_parameters({"window": "1,2,3,4"})
