"""Tests of dicomweb_couch.dicom.dicomjson against pydicom's own test files and generated edge cases."""

import base64
import io
import json
import math
import os
import re
import struct
import tempfile
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate_buffer
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from dicomweb_couch.dicom.dicomjson import (
    BULK_DATA_THRESHOLD,
    CANNOT_UNDERSTAND,
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    InvalidInstance,
    ParsedInstance,
    dataset_to_json,
    is_valid_uid,
    parse_part10,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")  # pydicom warns about the odd files

DATA_ROOT = Path(pydicom.data.__file__).parent
# Only the files bundled with pydicom: the optional pydicom-data download differs between machines.
ALL_FILES = sorted(
    path.relative_to(DATA_ROOT).as_posix()
    for path in map(Path, get_testdata_files() + get_charset_files())
    if path.is_file() and DATA_ROOT in path.parents
)
VRS = set("AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV"
          .split())

NOT_DICOM = "not DICOM: no 'DICM' preamble"
SOP_INSTANCE_MISSING = "SOPInstanceUID (0008,0018) is missing"
STUDY_MISSING = "StudyInstanceUID (0020,000D) is missing"
# Every bundled file that is rejected, with why: all are legitimate (see test_rejections_are_legitimate).
REJECTED = {
    # Not DICOM at all (text, JSON, ICC profile, gzip) or, for no_meta.dcm, a raw data set behind a stray byte.
    "charset_files/FileInfo.txt": (CANNOT_UNDERSTAND, NOT_DICOM),
    "test_files/README.txt": (CANNOT_UNDERSTAND, NOT_DICOM),
    "test_files/crayons.icc": (CANNOT_UNDERSTAND, NOT_DICOM),
    "test_files/dicomdirtests/README.txt": (CANNOT_UNDERSTAND, NOT_DICOM),
    "test_files/dicomdirtests/TINY_ALPHA/README": (CANNOT_UNDERSTAND, NOT_DICOM),
    "test_files/no_meta.dcm": (CANNOT_UNDERSTAND, NOT_DICOM),
    "test_files/rtplan.dump": (CANNOT_UNDERSTAND, NOT_DICOM),
    "test_files/rtstruct.dump": (CANNOT_UNDERSTAND, NOT_DICOM),
    "test_files/test1.json": (CANNOT_UNDERSTAND, NOT_DICOM),
    "test_files/test_PN.json": (CANNOT_UNDERSTAND, NOT_DICOM),
    "test_files/zipMR.gz": (CANNOT_UNDERSTAND, NOT_DICOM),
    # Cut off inside a value.
    "test_files/MR_truncated.dcm": (CANNOT_UNDERSTAND, "truncated"),
    "test_files/rtplan_truncated.dcm": (CANNOT_UNDERSTAND, "truncated"),
    # DICOMDIRs and fragments made to test one feature: no SOP Instance UID in the data set.
    "charset_files/chrSQEncoding.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, SOP_INSTANCE_MISSING),
    "charset_files/chrSQEncoding1.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, SOP_INSTANCE_MISSING),
    "test_files/UN_sequence.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, SOP_INSTANCE_MISSING),
    "test_files/empty_charset_LEI.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, SOP_INSTANCE_MISSING),
    "test_files/meta_missing_tsyntax.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, SOP_INSTANCE_MISSING),
    "test_files/nested_priv_SQ.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, SOP_INSTANCE_MISSING),
    "test_files/no_meta_group_length.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, SOP_INSTANCE_MISSING),
    "test_files/priv_SQ.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, SOP_INSTANCE_MISSING),
    **{
        f"test_files/dicomdirtests/{name}": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, SOP_INSTANCE_MISSING)
        for name in ("DICOMDIR", "DICOMDIR-bigEnd", "DICOMDIR-empty.dcm", "DICOMDIR-implicit", "DICOMDIR-nooffset",
                     "DICOMDIR-nopatient", "DICOMDIR-reordered", "TINY_ALPHA/DICOMDIR")
    },
    # Minimal JPEG-LS test images without Study/Series Instance UIDs.
    "test_files/JPEGLSNearLossless_08.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, STUDY_MISSING),
    "test_files/JPEGLSNearLossless_16.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, STUDY_MISSING),
    "test_files/SC_rgb_jls_lossy_line.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, STUDY_MISSING),
    "test_files/SC_rgb_jls_lossy_sample.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, STUDY_MISSING),
}


def parse_path(path: str | Path) -> ParsedInstance:
    with open(DATA_ROOT / path, "rb") as fp:
        return parse_part10(fp)


def parse_bytes(data: bytes) -> ParsedInstance:
    return parse_part10(io.BytesIO(data))


def bundled(name: str) -> str:
    path = get_testdata_file(name, download=False) or get_charset_files(name)[0]
    return Path(path).relative_to(DATA_ROOT).as_posix()


def check_json_model(dataset: dict[str, dict]) -> None:
    """Structural rules of PS3.18 F.2 that hold for every element, recursively."""
    assert list(dataset) == sorted(dataset)
    for key, attr in dataset.items():
        assert re.fullmatch(r"[0-9A-F]{8}", key) and not key.endswith("0000") and not key.startswith("0002")
        assert attr["vr"] in VRS and set(attr) <= {"vr", "Value", "InlineBinary"}
        if attr["vr"] == "SQ":
            for item in attr.get("Value", []):
                check_json_model(item)


def minimal_dataset(**attrs: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def part10(ds: Dataset, transfer_syntax: UID = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", SecondaryCaptureImageStorage)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", generate_uid())
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def raw_data_set(ds: Dataset) -> bytes:
    """The data set alone, Explicit VR Little Endian, without preamble or File Meta."""
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def element(tag: int, vr: str, value: bytes) -> bytes:
    """One Explicit VR Little Endian element (PS3.5 7.1.2), for values pydicom would refuse to write."""
    head = struct.pack("<HH2s", tag >> 16, tag & 0xFFFF, vr.encode())
    if vr in {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}:
        return head + struct.pack("<HI", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


# --- pydicom's test files -------------------------------------------------------------------------


def test_the_bundled_test_files_are_found() -> None:
    assert len(ALL_FILES) > 150
    assert set(REJECTED) <= set(ALL_FILES)


@pytest.mark.parametrize("path", ALL_FILES)
def test_every_file_parses_or_is_rejected_as_expected(path: str) -> None:
    with open(DATA_ROOT / path, "rb") as fp:
        try:
            parsed = parse_part10(fp)
        except InvalidInstance as exc:
            assert path in REJECTED, exc.message
            reason, message = REJECTED[path]
            assert exc.failure_reason == reason and message in exc.message
            assert not fp.closed
            return
        assert not fp.closed
    assert path not in REJECTED
    for uid in (parsed.study_uid, parsed.series_uid, parsed.sop_instance_uid, parsed.sop_class_uid):
        assert is_valid_uid(uid)
    assert parsed.dataset["00080018"] == {"vr": "UI", "Value": [parsed.sop_instance_uid]}
    check_json_model(parsed.dataset)
    json.dumps(parsed.dataset, allow_nan=False)


@pytest.mark.parametrize("path", sorted(p for p, (_, message) in REJECTED.items() if message.endswith("missing")))
def test_rejections_for_missing_uids_are_legitimate(path: str) -> None:
    ds = pydicom.dcmread(DATA_ROOT / path, force=True)
    keyword = REJECTED[path][1].split()[0]
    assert keyword not in ds


@pytest.mark.parametrize("path", sorted(p for p, (_, message) in REJECTED.items() if message == NOT_DICOM))
def test_rejections_as_not_dicom_are_legitimate(path: str) -> None:
    data = (DATA_ROOT / path).read_bytes()
    assert data[128:132] != b"DICM"
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(io.BytesIO(data))  # pydicom itself refuses it without force=True


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_truncated_files_are_rejected_though_pydicom_reads_them(name: str) -> None:
    path = DATA_ROOT / bundled(name)
    pydicom.dcmread(path)
    with pytest.raises(InvalidInstance) as caught:
        parse_path(path)
    assert f"of {path.stat().st_size}" in caught.value.message


# --- bulk data ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "vr"),
    [
        ("CT_small.dcm", "OW"),  # native, explicit VR
        ("MR_small_implicit.dcm", "OW"),  # native, implicit VR: dictionary "OB or OW" -> OW (PS3.5 A.1)
        ("MR_small_bigendian.dcm", "OW"),
        ("rtdose.dcm", "OW"),  # multi-frame, implicit VR
        ("SC_rgb_small_odd.dcm", "OW"),  # smaller than the threshold, still bulk
        ("JPEG2000.dcm", "OB"),  # encapsulated
        ("SC_rgb_rle.dcm", "OB"),
        ("SC_rgb_rle_2frame.dcm", "OB"),
        ("JPEG2000-embedded-sequence-delimiter.dcm", "OB"),
        ("image_dfl.dcm", "OB"),  # Deflated Explicit VR Little Endian
    ],
)
def test_pixel_data_is_bulk(name: str, vr: str) -> None:
    assert parse_path(bundled(name)).dataset["7FE00010"] == {"vr": vr}


@pytest.mark.parametrize(("keyword", "tag", "vr"), [("FloatPixelData", "7FE00008", "OF"),
                                                    ("DoubleFloatPixelData", "7FE00009", "OD")])
def test_float_pixel_data_is_bulk(keyword: str, tag: str, vr: str) -> None:
    ds = minimal_dataset(Rows=2, Columns=2, **{keyword: bytes(32)})
    assert parse_bytes(part10(ds)).dataset[tag] == {"vr": vr}


def test_small_binary_values_are_inline_and_large_ones_bulk() -> None:
    dataset = parse_path(bundled("CT_small.dcm")).dataset
    raw = pydicom.dcmread(DATA_ROOT / bundled("CT_small.dcm"))
    inline = dataset["00431028"]  # private OB of 86 bytes
    assert inline["vr"] == "OB" and base64.b64decode(inline["InlineBinary"]) == raw[0x00431028].value
    assert len(raw[0x00431029].value) > BULK_DATA_THRESHOLD
    assert dataset["00431029"] == {"vr": "OB"}


def test_bulk_data_in_sequences_and_after_pixel_data() -> None:
    item = Dataset()
    item.add_new(0x00091010, "OB", bytes(BULK_DATA_THRESHOLD + 2))
    item.add_new(0x00091011, "OB", b"\x01\x02")
    ds = minimal_dataset(ReferencedImageSequence=[item], PixelData=bytes(8), Rows=2, Columns=2, BitsAllocated=16)
    ds.DataSetTrailingPadding = bytes(4)
    dataset = parse_bytes(part10(ds)).dataset
    assert dataset["00081140"]["Value"][0] == {"00091010": {"vr": "OB"},
                                              "00091011": {"vr": "OB", "InlineBinary": "AQI="}}
    assert dataset["FFFCFFFC"] == {"vr": "OB", "InlineBinary": "AAAAAA=="}


def write_big_file(path: Path, tmp_path: Path, encapsulated: bool) -> None:
    """About 200 MB of pixel data, written from sparse files so that the test itself stays small."""
    ds = minimal_dataset(Rows=10000, Columns=10000, BitsAllocated=16, BitsStored=16, HighBit=15,
                         PixelRepresentation=0, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless if encapsulated else ExplicitVRLittleEndian
    frames = [tmp_path / f"frame{i}" for i in range(4 if encapsulated else 1)]
    for frame in frames:
        with open(frame, "wb") as fp:
            fp.truncate(200_000_000 // len(frames))
    buffers: list[io.BufferedIOBase] = [open(frame, "rb") for frame in frames]
    try:
        if encapsulated:
            ds.NumberOfFrames = len(frames)
            ds.PixelData = encapsulate_buffer(buffers)
            ds["PixelData"].is_undefined_length = True
        else:
            ds.PixelData = buffers[0]
        ds.save_as(path, enforce_file_format=True)
    finally:
        for buffer in buffers:
            buffer.close()
        for frame in frames:
            frame.unlink()


@pytest.mark.parametrize(("encapsulated", "vr"), [(False, "OW"), (True, "OB")])
def test_parsing_a_large_file_does_not_load_its_pixel_data(tmp_path: Path, encapsulated: bool, vr: str) -> None:
    path = tmp_path / "big.dcm"
    write_big_file(path, tmp_path, encapsulated)
    assert path.stat().st_size > 200_000_000
    try:
        with open(path, "rb") as fp:
            tracemalloc.start()
            parsed = parse_part10(fp)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    finally:
        path.unlink()
    assert parsed.dataset["7FE00010"] == {"vr": vr}
    assert peak < 20_000_000


# --- value encoding -------------------------------------------------------------------------------


def test_person_names_numbers_and_attribute_tags() -> None:
    ct = parse_path(bundled("CT_small.dcm")).dataset
    assert ct["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "CompressedSamples^CT1"}]}
    assert ct["00200013"] == {"vr": "IS", "Value": [1]}  # InstanceNumber
    assert ct["00280030"] == {"vr": "DS", "Value": [0.661468, 0.661468]}  # PixelSpacing
    assert ct["00280010"] == {"vr": "US", "Value": [128]}
    rtdose = parse_path(bundled("rtdose.dcm")).dataset
    assert rtdose["00280009"] == {"vr": "AT", "Value": ["3004000C"]}  # FrameIncrementPointer
    assert rtdose["3004000C"]["Value"][:3] == [0.0, 5.0, 10.0]


@pytest.mark.parametrize(
    ("name", "charset", "name_groups"),
    [
        ("chrX1.dcm", ["ISO_IR 192"], {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}),
        ("chrX2.dcm", ["GB18030"], {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小东"}),
        ("chrH31.dcm", [None, "ISO 2022 IR 87"],
         {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}),
        ("chrH32.dcm", ["ISO 2022 IR 13", "ISO 2022 IR 87"],
         {"Alphabetic": "ﾔﾏﾀﾞ^ﾀﾛｳ", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}),
        ("chrKoreanMulti.dcm", [None, "ISO 2022 IR 149"], {"Alphabetic": "김희중"}),
        ("chrGerm.dcm", ["ISO_IR 100"], {"Alphabetic": "Äneas^Rüdiger"}),
        ("chrRuss.dcm", ["ISO_IR 144"], {"Alphabetic": "Люкceмбypг"}),
    ],
)
def test_character_sets_are_decoded(name: str, charset: list[str | None], name_groups: dict[str, str]) -> None:
    dataset = parse_path(bundled(name)).dataset
    assert dataset["00080005"] == {"vr": "CS", "Value": charset}  # the empty first value is null (F.2.5)
    assert dataset["00100010"] == {"vr": "PN", "Value": [name_groups]}


def test_utf8_values_of_a_generated_file() -> None:
    ds = minimal_dataset(SpecificCharacterSet="ISO_IR 192", PatientName="Gürbüz^Jöns=김^희중",
                         StudyDescription="Ünïcödé ✓")
    dataset = parse_bytes(part10(ds)).dataset
    assert dataset["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Gürbüz^Jöns", "Ideographic": "김^희중"}]}
    assert dataset["00081030"] == {"vr": "LO", "Value": ["Ünïcödé ✓"]}


def test_sequences_nest_and_decode_with_the_outer_character_set() -> None:
    sr = parse_path(bundled("test-SR.dcm")).dataset
    content = sr["0040A730"]["Value"]
    assert len(content) > 1 and all(item["0040A010"]["vr"] == "CS" for item in content)
    nested = [item for item in content if "0040A730" in item][0]["0040A730"]["Value"]
    assert nested and all(re.fullmatch(r"[0-9A-F]{8}", key) for item in nested for key in item)
    # chrSQEncoding.dcm has no SOP Instance UID, so use dataset_to_json directly.
    ds = pydicom.dcmread(DATA_ROOT / bundled("chrSQEncoding.dcm"))
    dataset = dataset_to_json(ds)
    assert dataset["00321032"] == {"vr": "PN", "Value": [{"Alphabetic": "Doctor^Who^^MD"}]}  # ISO_IR 192
    item = dataset["00321064"]["Value"][0]  # RequestedProcedureCodeSequence, with its own ISO 2022 character set
    name = {"Alphabetic": "ﾔﾏﾀﾞ^ﾀﾛｳ", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    assert item["00100010"] == {"vr": "PN", "Value": [name]}


def test_data_set_json_leaves_out_group_lengths_and_file_meta_but_keeps_private_elements() -> None:
    ds = minimal_dataset()
    ds.add_new(0x00080000, "UL", 0)
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "LO", "private value")
    dataset = parse_bytes(part10(ds)).dataset
    assert "00080000" not in dataset and not any(key.startswith("0002") for key in dataset)
    assert dataset["00091001"] == {"vr": "LO", "Value": ["private value"]}


def test_odd_values_are_represented_not_raised() -> None:
    base = part10(minimal_dataset())
    odd = b"".join([
        element(0x00180050, "DS", b"1,5 "),  # SliceThickness with a decimal comma
        element(0x00200013, "IS", b"1A"),  # InstanceNumber, not a number
        element(0x00280010, "US", b"\x01\x00\x02"),  # Rows of 3 bytes
        element(0x00189087, "FD", struct.pack("<d", math.nan)),  # DiffusionBValue
        element(0x00181318, "FD", struct.pack("<2d", math.inf, -math.inf)),
        element(0x00100020, "LO", b"\xff\xfe"),  # PatientID, not ISO_IR 6
    ])
    dataset = parse_bytes(base + odd).dataset
    json.dumps(dataset, allow_nan=False)
    assert dataset["00180050"] == {"vr": "DS", "Value": ["1,5"]}  # PS3.18 F.2.3 allows strings for DS/IS
    assert dataset["00200013"] == {"vr": "IS", "Value": ["1A"]}
    assert dataset["00280010"]["vr"] == "US"
    assert dataset["00189087"] == {"vr": "FD", "Value": ["NaN"]}
    assert dataset["00181318"] == {"vr": "FD", "Value": ["Infinity", "-Infinity"]}
    assert dataset["00100020"]["vr"] == "LO" and isinstance(dataset["00100020"]["Value"][0], str)


def test_deferred_values_stay_readable_from_every_kind_of_spooled_file(tmp_path: Path) -> None:
    text = "long text " * 300  # above the threshold, so read only on demand
    data = part10(minimal_dataset(ImageComments=text, PixelData=bytes(4000), Rows=1, Columns=2000, BitsAllocated=16))
    path = tmp_path / "instance.dcm"
    path.write_bytes(data)
    in_memory = tempfile.SpooledTemporaryFile(max_size=len(data) + 1)
    on_disk = tempfile.SpooledTemporaryFile(max_size=10)
    # pydicom re-opens an io.BufferedReader by its name for deferred reads, and that name may be a descriptor.
    by_descriptor = open(os.open(path, os.O_RDONLY), "rb")
    for fp in (in_memory, on_disk, tempfile.TemporaryFile(), open(path, "rb"), by_descriptor, io.BytesIO(data)):
        with fp:
            if fp.writable():
                fp.write(data)  # left at the end, as the spooling server leaves it
            parsed = parse_part10(fp)
            assert not fp.closed
        assert parsed.dataset["00204000"] == {"vr": "LT", "Value": [text.rstrip()]}
        assert parsed.dataset["7FE00010"] == {"vr": "OW"}


def test_a_deferred_value_of_a_closed_file_is_kept_as_its_vr() -> None:
    fp = io.BytesIO(part10(minimal_dataset(ImageComments="x" * 2000)))
    ds = pydicom.dcmread(fp, defer_size=BULK_DATA_THRESHOLD)
    fp.close()
    assert dataset_to_json(ds)["00204000"] == {"vr": "LT"}


def test_sop_class_from_the_file_meta_and_transfer_syntax() -> None:
    ds = minimal_dataset()
    del ds.SOPClassUID
    parsed = parse_bytes(part10(ds, ImplicitVRLittleEndian))
    assert parsed.sop_class_uid == SecondaryCaptureImageStorage
    assert parsed.transfer_syntax_uid == ImplicitVRLittleEndian
    assert parsed.study_uid == ds.StudyInstanceUID and parsed.series_uid == ds.SeriesInstanceUID


def test_a_raw_data_set_without_file_meta_is_accepted() -> None:
    parsed = parse_path(bundled("ExplVR_LitEndNoMeta.dcm"))
    assert parsed.transfer_syntax_uid is None
    assert parsed.dataset["00080060"] == {"vr": "CS", "Value": ["RTPLAN"]}


# --- rejections -----------------------------------------------------------------------------------


def rejection(data: bytes) -> InvalidInstance:
    with pytest.raises(InvalidInstance) as caught:
        parse_bytes(data)
    return caught.value


def test_non_dicom_bytes_are_not_understood() -> None:
    exc = rejection(b"%PDF-1.7 this is not DICOM at all" * 10)
    assert exc.failure_reason == CANNOT_UNDERSTAND and "SOPInstanceUID (0008,0018)" in exc.message


def test_an_empty_part_is_not_understood() -> None:
    exc = rejection(b"")
    assert (exc.failure_reason, exc.message) == (CANNOT_UNDERSTAND, "the part is empty")


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9, 0.999])
def test_truncated_files_are_not_understood(keep: float) -> None:
    data = (DATA_ROOT / bundled("test-SR.dcm")).read_bytes()
    cut = int(len(data) * keep)
    exc = rejection(data[:cut])
    assert exc.failure_reason == CANNOT_UNDERSTAND and "truncated" in exc.message


def test_a_truncated_pixel_data_value_is_not_understood() -> None:
    data = (DATA_ROOT / bundled("CT_small.dcm")).read_bytes()
    exc = rejection(data[:-100])
    assert (exc.failure_reason, exc.message) == (
        CANNOT_UNDERSTAND, f"truncated or corrupt: the data set ends at byte {len(data)} of {len(data) - 100}")


@pytest.mark.parametrize(
    ("keyword", "message"),
    [
        ("SOPInstanceUID", "SOPInstanceUID (0008,0018) is missing"),
        ("StudyInstanceUID", "StudyInstanceUID (0020,000D) is missing"),
        ("SeriesInstanceUID", "SeriesInstanceUID (0020,000E) is missing"),
        ("SOPClassUID", "SOPClassUID (0008,0016) is missing (nor is MediaStorageSOPClassUID (0002,0002)"),
    ],
)
def test_a_missing_uid_does_not_match_the_sop_class(keyword: str, message: str) -> None:
    ds = minimal_dataset()
    delattr(ds, keyword)
    # A Part 10 file would name the SOP Class in its File Meta, so leave that out.
    exc = rejection(raw_data_set(ds) if keyword == "SOPClassUID" else part10(ds))
    assert exc.failure_reason == DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert exc.message.startswith(message)
    assert exc.sop_instance_uid == ds.get("SOPInstanceUID")
    assert exc.sop_class_uid == ds.get("SOPClassUID")


@pytest.mark.parametrize("uid", ["1.2.abc", "1..2", "1.2.", "1" * 65, "1.2\\1.3"])
def test_an_invalid_uid_does_not_match_the_sop_class(uid: str) -> None:
    ds = minimal_dataset()
    ds.add_new(0x0020000E, "UI", uid)
    exc = rejection(part10(ds))
    assert exc.failure_reason == DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert exc.message.startswith("SeriesInstanceUID (0020,000E) is not a UID")
    assert (exc.sop_class_uid, exc.sop_instance_uid) == (ds.SOPClassUID, ds.SOPInstanceUID)


def test_uid_padding_is_tolerated() -> None:
    ds = minimal_dataset()
    data = part10(ds).replace(ds.StudyInstanceUID.encode() + b"\0", ds.StudyInstanceUID.encode() + b" ")
    assert parse_bytes(data).study_uid == ds.StudyInstanceUID


@pytest.mark.parametrize(
    ("uid", "valid"),
    [("1.2.840.10008.1.2", True), ("0", True), ("1.2.0123", True), ("", False), ("1.2.", False), ("a.1", False),
     ("1." * 32 + "1", False)],
)
def test_is_valid_uid(uid: str, valid: bool) -> None:
    assert is_valid_uid(uid) is valid
