"""Stored DICOM JSON as clients must see it, also when dcmjs-org/dicomweb-server wrote it.

That server's documents (which we serve as they are, with no migration) may hold PN values as
plain strings rather than ``{"Alphabetic": ...}`` objects, and binary values as ``{}``; both are
invalid DICOM JSON (PS3.18 F.2.2) that breaks strict clients, so they are mended on the way out.
Documents this server writes pass through unchanged.
"""

from __future__ import annotations

from typing import Any

from dicomweb_couch.dicom.dicomjson import BINARY_VRS


def normalize_stored(dataset: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``dataset`` with legacy PN strings and placeholder binary values mended."""
    out: dict[str, Any] = {}
    for tag, elem in dataset.items():
        if not isinstance(elem, dict):
            continue
        values = elem.get("Value")
        if isinstance(values, list):
            vr = elem.get("vr")
            if vr == "PN" and any(isinstance(v, str) for v in values):
                elem = dict(elem, Value=[{"Alphabetic": v} if isinstance(v, str) else v for v in values])
            elif vr == "SQ":
                elem = dict(elem, Value=[normalize_stored(item) for item in values if isinstance(item, dict)])
            elif vr in BINARY_VRS:
                elem = {"vr": vr}
        out[tag] = elem
    return out
