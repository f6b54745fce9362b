"""dicom/transfer_syntax.py: converting a Part 10 file between syntaxes keeps every value (pure).

The WADO-RS tests convert through the server; here each conversion of pydicom's own files is
compared value by value with what pydicom reads from the original, independently of this module.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomweb_couch.dicom import transfer_syntax
from dicomweb_couch.dicom.transfer_syntax import EXPLICIT_BE, EXPLICIT_LE, IMPLICIT_LE, name, swapped, transcode

RLE, JPEG_BASELINE = "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50"


def converted(file: str, target: str) -> pydicom.Dataset:
    out = io.BytesIO()
    with open(get_testdata_file(file), "rb") as source:
        transcode(source, target, out)
    out.seek(0)
    return pydicom.dcmread(out)


@pytest.mark.parametrize("file", ["CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
                                  "examples_overlay.dcm", "SC_rgb_rle_16bit.dcm"])
@pytest.mark.parametrize("target", [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE])
def test_conversion_keeps_pixels_and_values(file, target):
    original = pydicom.dcmread(get_testdata_file(file))
    result = converted(file, target)
    assert result.file_meta.TransferSyntaxUID == target
    assert result.SOPInstanceUID == original.SOPInstanceUID  # lossless: the same instance
    assert np.array_equal(result.pixel_array, original.pixel_array)
    for elem in original:
        if elem.tag != 0x7FE00010 and elem.VR not in ("SQ", "OB", "OW", "UN"):
            assert result[elem.tag].value == elem.value, elem.keyword


def test_overlay_words_follow_the_byte_order():
    """OW values other than pixel data are swapped word by word when the byte order changes
    (pydicom gives raw values in the file's byte order), and swapped back on the way home."""
    original = pydicom.dcmread(get_testdata_file("examples_overlay.dcm"))
    assert original[0x60003000].VR == "OW"
    big = converted("examples_overlay.dcm", EXPLICIT_BE)
    assert big[0x60003000].value == swapped(original[0x60003000].value, 2)
    back = io.BytesIO()
    big_file = io.BytesIO()
    big.save_as(big_file, enforce_file_format=True)
    big_file.seek(0)
    transcode(big_file, EXPLICIT_LE, back)
    back.seek(0)
    assert pydicom.dcmread(back)[0x60003000].value == original[0x60003000].value


def test_swapped_and_names():
    assert swapped(b"\x01\x02\x03\x04", 2) == b"\x02\x01\x04\x03"
    assert swapped(b"\x01\x02\x03\x04", 4) == b"\x04\x03\x02\x01"
    assert name(EXPLICIT_LE) == "Explicit VR Little Endian (1.2.840.10008.1.2.1)"
    assert name("1.2.3.4") == "1.2.3.4" and "no transfer syntax" in name(None)
    assert transfer_syntax.is_native(EXPLICIT_BE) and not transfer_syntax.is_native(RLE)
    assert transfer_syntax.can_decode(RLE) and transfer_syntax.can_decode(JPEG_BASELINE)
    assert not transfer_syntax.can_decode("1.2.3.4")
