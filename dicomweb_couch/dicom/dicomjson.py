"""Pure DICOM logic for STOW-RS: read one Part 10 upload and render its DICOM JSON.

The archive indexes each instance by its UIDs and stores its data set as DICOM JSON
(PS3.18 F.2) next to the original file. Bulk data never enters the JSON, nor memory:
parsing a multi-gigabyte upload costs no more than parsing its header.
"""

import base64
import io
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any, Final, cast

from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filebase import ReadableBuffer

CANNOT_UNDERSTAND: Final = 0xC000
"""FailureReason (0008,1197) "Error: Cannot understand" (PS3.18 I.2.2, Table I.2-2)."""
DATA_SET_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
"""FailureReason (0008,1197) "Error: Data Set does not match SOP Class" (PS3.18 Table I.2-2)."""
BULK_DATA_THRESHOLD: Final = 1024
"""Binary values longer than this many bytes are bulk data, left out of the JSON."""

_SOP_CLASS_UID: Final = 0x00080016
_SOP_INSTANCE_UID: Final = 0x00080018
_STUDY_INSTANCE_UID: Final = 0x0020000D
_SERIES_INSTANCE_UID: Final = 0x0020000E
_MEDIA_STORAGE_SOP_CLASS_UID: Final = 0x00020002
_TRANSFER_SYNTAX_UID: Final = 0x00020010
_PIXEL_DATA_TAGS: Final = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_UNDEFINED_LENGTH: Final = 0xFFFFFFFF
BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})  # bulk data candidates (PS3.18 F.2.6)
_INTEGER_VRS: Final = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
_PN_GROUPS: Final = ("Alphabetic", "Ideographic", "Phonetic")
_UID_PATTERN: Final = re.compile(r"[0-9]+(\.[0-9]+)*")


class InvalidInstance(ValueError):
    """The part is not a storable DICOM instance: a Failed SOP of PS3.18 10.5.3.

    `failure_reason` is its FailureReason (0008,1197): CANNOT_UNDERSTAND when the
    bytes are no readable DICOM data set (not DICOM, empty, truncated, parse error);
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS when it lacks a valid SOP Instance, SOP Class,
    Study or Series Instance UID, which every IOD requires (PS3.3 C.12.1, C.7.2.1,
    C.7.3.1). `message` names the attribute and the rule; `sop_class_uid` and
    `sop_instance_uid` are the valid ones found, if any.
    """

    def __init__(self, failure_reason: int, message: str, *,
                 sop_class_uid: str | None = None, sop_instance_uid: str | None = None) -> None:
        super().__init__(message)
        self.failure_reason = failure_reason
        self.message = message
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


@dataclass(frozen=True)
class ParsedInstance:
    """Identifiers and DICOM JSON (PS3.18 F.2, bulk data left out) of one instance."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str | None  # from the File Meta; None for a raw data set
    dataset: dict[str, dict[str, Any]]


def parse_part10(fp: IO[bytes]) -> ParsedInstance:
    """Parse the DICOM file in the seekable `fp` from its start; `fp` stays open.

    Takes Part 10 files (PS3.10 7.1) and raw data sets without preamble or File Meta.
    Values over BULK_DATA_THRESHOLD are deferred, i.e. seeked over (pydicom 3 does
    so for encapsulated Pixel Data too), so memory does not grow with the file.
    Any failure raises InvalidInstance.
    """
    try:
        return _parse(fp)
    except InvalidInstance:
        raise
    except Exception as exc:  # pydicom signals broken input with many exception types
        raise InvalidInstance(CANNOT_UNDERSTAND, f"the DICOM data cannot be parsed: {exc}") from exc


def _parse(fp: IO[bytes]) -> ParsedInstance:
    if fp.seek(0, io.SEEK_END) == 0:
        raise InvalidInstance(CANNOT_UNDERSTAND, "the part is empty")
    fp.seek(0)
    ds = dcmread(fp, defer_size=BULK_DATA_THRESHOLD, force=True)
    if ds.buffer is None:  # else pydicom re-opens an io.BufferedReader by its name for deferred reads
        ds.buffer = fp
    if ds.preamble is None and not ds.file_meta and _SOP_INSTANCE_UID not in ds:
        # force=True reads any bytes as some data set; without any DICOM marker it is none.
        raise InvalidInstance(CANNOT_UNDERSTAND, "not DICOM: no 'DICM' preamble, no File Meta Information "
                                                 "and no SOPInstanceUID (0008,0018)")
    _check_complete(ds, ds.buffer)  # `fp`, or its inflated copy if Deflated Explicit VR (PS3.5 A.5)
    uids = _required_uids(ds)
    return ParsedInstance(
        study_uid=uids[_STUDY_INSTANCE_UID],
        series_uid=uids[_SERIES_INSTANCE_UID],
        sop_instance_uid=uids[_SOP_INSTANCE_UID],
        sop_class_uid=uids[_SOP_CLASS_UID],
        transfer_syntax_uid=_uid_value(ds.file_meta, _TRANSFER_SYNTAX_UID),
        dataset=dataset_to_json(ds),
    )


def _check_complete(ds: Dataset, stream: ReadableBuffer) -> None:
    """Reject a cut-off file, which pydicom reads with at most a warning.

    pydicom seeks past EOF over a cut-off deferred value, reads a cut-off small one
    short and stops early in a cut-off undefined-length one; so a complete parse is
    one that ends exactly at EOF, with no declared length reaching beyond it.
    """
    elems = [_stored_element(ds, tag) for tag in ds.keys()]
    ends = [e.value_tell + e.length for e in elems if isinstance(e, RawDataElement) and e.length != _UNDEFINED_LENGTH]
    end = max([stream.tell(), *ends])
    if end != (size := stream.seek(0, io.SEEK_END)):
        raise InvalidInstance(CANNOT_UNDERSTAND, f"truncated or corrupt: the data set ends at byte {end} of {size}")


def _required_uids(ds: Dataset) -> dict[int, str]:
    """The four UIDs every stored instance needs, by tag; SOP Class may come from the File Meta."""
    uids = {
        _SOP_INSTANCE_UID: _uid_value(ds, _SOP_INSTANCE_UID),
        _SOP_CLASS_UID: _uid_value(ds, _SOP_CLASS_UID) or _uid_value(ds.file_meta, _MEDIA_STORAGE_SOP_CLASS_UID),
        _STUDY_INSTANCE_UID: _uid_value(ds, _STUDY_INSTANCE_UID),
        _SERIES_INSTANCE_UID: _uid_value(ds, _SERIES_INSTANCE_UID),
    }
    valid = {tag: uid for tag, uid in uids.items() if uid is not None and is_valid_uid(uid)}
    for tag, uid in uids.items():
        if problem := _uid_problem(tag, uid):
            if tag == _SOP_CLASS_UID and uid is None:
                problem += " (nor is MediaStorageSOPClassUID (0002,0002) in the File Meta Information)"
            raise InvalidInstance(DATA_SET_DOES_NOT_MATCH_SOP_CLASS, problem, sop_class_uid=valid.get(_SOP_CLASS_UID),
                                  sop_instance_uid=valid.get(_SOP_INSTANCE_UID))
    return valid


def _uid_value(ds: Dataset, tag: int) -> str | None:
    """The UI value as one string (pydicom strips the trailing NUL/space), None if absent or empty."""
    if tag not in ds or (value := ds[tag].value) in (None, ""):
        return None
    return value if isinstance(value, str) else "\\".join(map(str, value))


def element(vr: str, *values: Any) -> dict[str, Any]:
    """A DICOM JSON element (PS3.18 F.2.2); no values means an empty (zero-length) attribute."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def is_valid_uid(uid: str) -> bool:
    """Whether `uid` is a UID per PS3.5 9.1: digits and dots, at most 64 characters.

    Components with a leading zero are tolerated: real files have them.
    """
    return len(uid) <= 64 and _UID_PATTERN.fullmatch(uid) is not None


def _uid_problem(tag: int, uid: str | None) -> str | None:
    """Why the value of UI element `tag` is missing or no UID (PS3.5 9.1), or None."""
    name = f"{keyword_for_tag(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"
    if uid is None:
        return f"{name} is missing"
    if not is_valid_uid(uid):
        return f"{name} is not a UID of digits and dots of at most 64 characters (PS3.5 9.1): {uid!r}"
    return None


def dataset_to_json(ds: Dataset) -> dict[str, dict[str, Any]]:
    """The DICOM JSON Model object (PS3.18 F.2.2) of `ds`, ordered by tag, bulk data left out.

    Group lengths (gggg,0000), Command (0000) and File Meta (0002) elements are not
    part of a data set and are skipped; private elements are kept. Never raises.
    """
    return {
        f"{tag:08X}": _element_json(ds, tag)
        for tag in sorted(ds.keys())
        if tag & 0xFFFF and tag >> 16 not in (0x0000, 0x0002)
    }


def _element_json(ds: Dataset, tag: int) -> dict[str, Any]:
    """One attribute object (F.2.2); bulk data is `{"vr": VR}`, for a BulkDataURI to be added later."""
    elem = _stored_element(ds, tag)
    deferred = isinstance(elem, RawDataElement) and elem.value is None and elem.length != 0
    vr = _stored_vr(tag, elem)
    if tag in _PIXEL_DATA_TAGS or (deferred and vr in BINARY_VRS):
        return {"vr": vr}  # decided from the header alone: the value is not read
    try:
        return _value_json(ds[tag])
    except Exception:  # unreadable value, e.g. a deferred one once the file is closed
        return {"vr": vr}


def _stored_element(ds: Dataset, tag: int) -> DataElement | RawDataElement:
    """The element as read: raw until first accessed, and a deferred value stays unread."""
    return cast(DataElement | RawDataElement, ds.get_item(tag, keep_deferred=True))


def _stored_vr(tag: int, elem: DataElement | RawDataElement) -> str:
    """A concrete VR without reading the value: the explicit VR, else the dictionary's, else UN.

    Ambiguous dictionary VRs resolve as PS3.5 A.1 (binary data in Implicit VR is OW)
    and A.4 (encapsulated, i.e. undefined-length, Pixel Data is OB) say.
    """
    try:
        vr = elem.VR or dictionary_VR(tag)
    except KeyError:
        return "UN"
    if " or " not in vr:
        return vr
    undefined = elem.length == _UNDEFINED_LENGTH if isinstance(elem, RawDataElement) else elem.is_undefined_length
    return "OB" if undefined else "OW"


def _value_json(elem: DataElement) -> dict[str, Any]:
    """The attribute object of a decoded element, per the VR mapping of PS3.18 F.2.3."""
    vr, value = elem.VR, elem.value
    if vr == "SQ":
        return {"vr": vr, "Value": [dataset_to_json(item) for item in value]} if value else {"vr": vr}
    if isinstance(value, (bytes, bytearray)):
        # pydicom keeps the bytes of a VR it could not disambiguate, e.g. "US or SS".
        vr = vr if vr in BINARY_VRS else "OW" if "OW" in vr else "UN"
        if not value or len(value) > BULK_DATA_THRESHOLD:
            return {"vr": vr}
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
    vr = vr.split(" or ")[0]
    if elem.is_empty:
        return {"vr": vr}
    values = value if elem.VM > 1 else [value]
    return {"vr": vr, "Value": [_json_value(vr, v) for v in values]}


def _json_value(vr: str, value: Any) -> Any:
    """One value as its JSON type (PS3.18 F.2.3); an empty one is null (F.2.5)."""
    if value is None or value == "":
        return None
    if vr == "PN":  # only the non-empty component groups (F.2.2)
        return {group: text for group, text in zip(_PN_GROUPS, value.components) if text} or None
    if vr == "AT":
        return f"{int(value):08X}"
    if isinstance(value, (int, float, Decimal)):
        return int(value) if vr in _INTEGER_VRS else _json_float(float(value))
    # Text, and IS/DS strings pydicom could not read as numbers: F.2.3 allows strings for those.
    return str(value)


def _json_float(value: float) -> float | str:
    """JSON (RFC 8259) has no NaN or Infinity: spell them as strings rather than emit invalid JSON."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
