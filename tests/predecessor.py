"""Documents written exactly as dcmjs-org/dicomweb-server writes them (see the lead's notes on its
databases, observed on Apache CouchDB 3.5): ``{_id, dataset, md5hash}`` and then, in a second write,
the Part 10 file as attachment ``object.dcm``. Its DICOM JSON comes from dcmjs: PN as
``{"Alphabetic": ...}``, binary values as ``[{}]`` (a serialized ArrayBuffer), AT values as integers,
empty DS/IS as ``[null]``, empty PN as ``[]``, other empty strings (DT...) as ``[""]``,
SpecificCharacterSet rewritten to ``ISO_IR 192``, no group 0002 and so no transfer syntax."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pydicom
from conftest import CouchServer
from pydicom.dataset import Dataset
from test_design_docs import put_attachment, put_doc

_BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


def predecessor_dataset(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for elem in ds:
        vr, value = elem.VR, elem.value
        values = list(value) if isinstance(value, (list, pydicom.multival.MultiValue)) else \
            ([] if value in (None, "", b"") else [value])
        if vr == "SQ":
            json_values: list[Any] = [predecessor_dataset(item) for item in value]
        elif vr in _BINARY or "or" in vr:
            json_values = [{}]
        elif vr == "AT":
            json_values = [int(v) for v in values]
        elif vr == "PN":
            json_values = [{"Alphabetic": str(v)} for v in values]
        elif vr in ("DS", "IS"):
            json_values = [float(v) if vr == "DS" else int(v) for v in values] or [None]
        elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
            json_values = [v for v in values]
        else:
            json_values = [str(v) for v in values] or [""]
        out[f"{elem.tag:08X}"] = {"vr": vr, "Value": json_values}
    out["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    return out


def write_predecessor_document(couch: CouchServer, db: str, part10: bytes) -> str:
    """Store ``part10`` the way the predecessor did (two writes); return the SOPInstanceUID."""
    ds = pydicom.dcmread(io.BytesIO(part10))
    sop = str(ds.SOPInstanceUID)
    doc = {"dataset": predecessor_dataset(ds), "md5hash": hashlib.md5(part10).hexdigest()}
    rev = put_doc(couch, db, sop, doc)
    put_attachment(couch, db, sop, rev, "object.dcm", part10)
    return sop
