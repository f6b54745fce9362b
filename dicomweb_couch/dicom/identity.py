"""Which instance a Part 10 file is, read from its first bytes (PS3.10 7.1, PS3.3 C.12.1).

WADO-URI names an instance by three UIDs (PS3.18 9.1.2.1); the stored file says which study,
series and instance it is. Reading that from the first chunk of the file, which arrives anyway,
spares a document read per request. Only values wholly inside the bytes given count, so a value
cut short by the end of the chunk can never pass for a shorter UID.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataelem import RawDataElement

STUDY, SERIES, SOP = 0x0020000D, 0x0020000E, 0x00080018


@dataclass(frozen=True)
class Identity:
    study: str
    series: str
    sop: str
    transfer_syntax: str | None


def identify(prefix: bytes) -> Identity | None:
    """The UIDs of the file that starts with ``prefix``; None when they are not all in it."""
    try:
        ds = dcmread(io.BytesIO(prefix), stop_before_pixels=True, specific_tags=[STUDY, SERIES, SOP])
        values = []
        for tag in (STUDY, SERIES, SOP):
            raw = ds.get_item(tag)
            if not isinstance(raw, RawDataElement) or raw.value_tell + raw.length > len(prefix):
                return None
            values.append(str(ds[tag].value).strip("\0 "))
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    except Exception:  # noqa: BLE001 - whatever pydicom says about a partial or odd header: not identified
        return None
    return Identity(*values, transfer_syntax=str(syntax) if syntax else None)
