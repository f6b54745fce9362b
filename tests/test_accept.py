"""Accept parsing and negotiation (PS3.18 8.7), and the transfer syntax conversions, without a server."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from wado_helpers import TEST_FILES

from dicomweb_couch.dicom import transfer_syntax
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.web.accept import Offer, acceptable, negotiate, parse_accept
from dicomweb_couch.web.frames import offers as frame_offers
from dicomweb_couch.web.retrieve import offers as instance_offers

JPEG = "1.2.840.10008.1.2.4.50"


def test_parse_accept_orders_by_quality_and_keeps_parameters():
    ranges = parse_accept(['multipart/related; type="application/dicom"; transfer-syntax=*; q=0.5, image/png;q=0.8',
                           'Image/JPEG, text/plain; q=0, bogus, */*;q=nonsense'])
    assert [str(r) for r in ranges] == ["image/jpeg", "*/*", "image/png",
                                        "multipart/related; type=application/dicom; transfer-syntax=*"]
    assert ranges[-1].part_type == "application/dicom" and ranges[-1].transfer_syntax == "*" and ranges[-1].q == 0.5
    assert parse_accept(['multipart/related; type="a/b,c"'])[0].part_type == "a/b,c"  # commas inside quotes


def test_acceptable_prefers_the_query_parameter_and_defaults_to_anything():
    assert [str(r) for r in acceptable(["image/png"], {"accept": "image/gif"})] == ["image/gif"]
    assert [str(r) for r in acceptable([], {})] == ["*/*"]
    assert [str(r) for r in acceptable([" "], {})] == ["*/*"]


def test_negotiate_instances():
    stored_rle = instance_offers("1.2.840.10008.1.2.5")
    assert negotiate(parse_accept(["application/dicom"]), stored_rle, "x").transfer_syntax == transfer_syntax.EXPLICIT_LE
    assert negotiate(parse_accept(["*/*"]), stored_rle, "x").transfer_syntax == transfer_syntax.EXPLICIT_LE
    assert negotiate(parse_accept(['multipart/related; type="application/dicom"; transfer-syntax=*']),
                     stored_rle, "x").stored
    lossy = instance_offers(JPEG)
    assert negotiate(parse_accept(["application/dicom"]), lossy, "x").transfer_syntax == JPEG
    video = instance_offers("1.2.840.10008.1.2.4.102")  # cannot be decoded: only as stored
    assert [o.transfer_syntax for o in video] == ["1.2.840.10008.1.2.4.102"]
    with pytest.raises(DicomwebError) as error:
        negotiate(parse_accept([f"application/dicom; transfer-syntax={transfer_syntax.EXPLICIT_LE}"]), video, "the video")
    assert error.value.status == 406 and "the video" in error.value.message


def test_negotiate_frames():
    jpeg = frame_offers(JPEG)
    assert negotiate(parse_accept(['multipart/related; type="application/octet-stream"; transfer-syntax=*']),
                     jpeg, "x") == Offer("image/jpeg", JPEG, stored=True)
    assert negotiate(parse_accept(['multipart/related; type="application/octet-stream"']), jpeg, "x").stored is False
    assert negotiate(parse_accept(["image/*"]), jpeg, "x").media_type == "image/jpeg"
    assert negotiate(parse_accept(["image/jpeg; q=0.2, application/octet-stream"]), jpeg, "x").media_type == \
        "application/octet-stream"
    native = frame_offers(transfer_syntax.EXPLICIT_BE)
    assert negotiate(parse_accept(["*/*"]), native, "x") == Offer("application/octet-stream", transfer_syntax.EXPLICIT_LE,
                                                                  stored=True)


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_RLE.dcm", "rtdose_expb.dcm", "image_dfl.dcm",
                                  "SC_rgb_small_odd_big_endian.dcm", "ExplVR_BigEnd.dcm"])
@pytest.mark.parametrize("target", transfer_syntax.UNCOMPRESSED)
def test_transcode_keeps_every_pixel(name, target):
    original = pydicom.dcmread(TEST_FILES[name])
    out = io.BytesIO()
    with TEST_FILES[name].open("rb") as source:
        transfer_syntax.transcode(source, target, out)
    out.seek(0)
    converted = pydicom.dcmread(out)
    assert converted.file_meta.TransferSyntaxUID == target
    assert np.array_equal(converted.pixel_array, original.pixel_array)
    assert converted.SOPInstanceUID == original.SOPInstanceUID


def test_big_endian_words_are_swapped():
    original = pydicom.dcmread(TEST_FILES["examples_palette.dcm"])  # OW lookup tables
    out = io.BytesIO()
    with TEST_FILES["examples_palette.dcm"].open("rb") as source:
        transfer_syntax.transcode(source, transfer_syntax.EXPLICIT_BE, out)
    converted = pydicom.dcmread(io.BytesIO(out.getvalue()))
    red = original.RedPaletteColorLookupTableData
    assert converted.RedPaletteColorLookupTableData == np.frombuffer(red, "<u2").astype(">u2").tobytes()


def test_syntax_facts():
    assert transfer_syntax.frame_media_type("1.2.840.10008.1.2.4.80") == "image/jls"
    assert transfer_syntax.frame_media_type(transfer_syntax.EXPLICIT_LE) == "application/octet-stream"
    assert transfer_syntax.can_decode(JPEG) and transfer_syntax.can_decode("1.2.840.10008.1.2.4.90")
    assert not transfer_syntax.can_decode("1.2.840.10008.1.2.4.100")
    assert "JPEG Baseline" in transfer_syntax.name(JPEG) and "File Meta" in transfer_syntax.name(None)
