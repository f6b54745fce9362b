"""Stored DICOM JSON as clients must see it, also when dcmjs-org/dicomweb-server wrote it.

That server's documents may hold PN values as plain strings rather than ``{"Alphabetic": ...}``
objects, binary values as ``{}`` and AT values as integers (``5505040`` where PS3.18 F.2.3 wants
the tag as the string ``"00540010"``); all are invalid DICOM JSON that breaks strict clients
(pydicom's ``Dataset.from_json`` refuses integer ATs). :func:`normalize_stored` mends them on the
way out; :func:`upgrade_stored` mends what can be mended in the stored document itself without
making it unreadable to the predecessor (its views call ``Value.map`` on DS/IS, so ``[null]``
values and the ``[{}]`` binary placeholders stay). Documents this server writes pass unchanged.
"""

from __future__ import annotations

from typing import Any

from dicomweb_couch.dicom.dicomjson import BINARY_VRS


def normalize_stored(dataset: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``dataset`` with legacy PN strings, AT integers and placeholder binary values mended."""
    return _mended(dataset, drop_binaries=True, changes=set())


def upgrade_stored(dataset: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """``dataset`` with PN strings and AT integers mended for storing, and the VRs that changed."""
    changes: set[str] = set()
    return _mended(dataset, drop_binaries=False, changes=changes), changes


def at_string(value: Any) -> Any:
    """An AT value as PS3.18 F.2.3 writes it: the tag as 8 upper-case hex digits (integers mended)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFFFFFF:
        return f"{value:08X}"
    return value


def _mended(dataset: dict[str, Any], drop_binaries: bool, changes: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag, elem in dataset.items():
        if not isinstance(elem, dict):
            continue
        values = elem.get("Value")
        if isinstance(values, list):
            vr = elem.get("vr")
            if vr == "PN" and any(isinstance(v, str) for v in values):
                elem = dict(elem, Value=[{"Alphabetic": v} if isinstance(v, str) else v for v in values])
                changes.add("PN")
            elif vr == "AT" and any(at_string(v) is not v for v in values):
                elem = dict(elem, Value=[at_string(v) for v in values])
                changes.add("AT")
            elif vr == "SQ":
                elem = dict(elem, Value=[_mended(item, drop_binaries, changes) for item in values
                                         if isinstance(item, dict)])
            elif vr in BINARY_VRS and drop_binaries:
                elem = {"vr": vr}
        out[tag] = elem
    return out
