"""dicom/legacy.py: documents dcmjs-org/dicomweb-server wrote are served as valid DICOM JSON (PS3.18 F.2)."""

from __future__ import annotations

import copy

from pydicom import Dataset

from dicomweb_couch.dicom.legacy import normalize_stored

LEGACY = {
    "00100010": {"vr": "PN", "Value": ["Legacy^Name", {"Alphabetic": "Already^Right"}]},
    "00080090": {"vr": "PN", "Value": ["Ref^Erring"]},
    "00291010": {"vr": "OB", "Value": [{}]},
    "7FE00010": {"vr": "OW", "Value": [{}]},
    "00081140": {"vr": "SQ", "Value": [{"00081150": {"vr": "UI", "Value": ["1.2.3"]},
                                         "00100010": {"vr": "PN", "Value": ["In^Item"]}}, "not an item"]},
    "00200013": {"vr": "IS", "Value": [1]},
    "00100020": {"vr": "LO"},
    "junk": "not an element",
}


def test_legacy_values_are_mended():
    before = copy.deepcopy(LEGACY)
    mended = normalize_stored(LEGACY)
    assert LEGACY == before  # a copy: the stored document is not changed
    assert mended["00100010"]["Value"] == [{"Alphabetic": "Legacy^Name"}, {"Alphabetic": "Already^Right"}]
    assert mended["00080090"]["Value"] == [{"Alphabetic": "Ref^Erring"}]
    assert mended["00291010"] == {"vr": "OB"} and mended["7FE00010"] == {"vr": "OW"}  # no fake binary values
    assert mended["00081140"]["Value"] == [{"00081150": {"vr": "UI", "Value": ["1.2.3"]},
                                            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "In^Item"}]}}]
    assert mended["00200013"] == {"vr": "IS", "Value": [1]} and mended["00100020"] == {"vr": "LO"}
    assert "junk" not in mended
    Dataset.from_json(mended)  # valid DICOM JSON for a strict reader


def test_documents_this_server_writes_pass_unchanged():
    current = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John", "Ideographic": "X"}]},
               "00081140": {"vr": "SQ", "Value": [{"00081150": {"vr": "UI", "Value": ["1.2.3"]}}]},
               "7FE00010": {"vr": "OW"}, "00280010": {"vr": "US", "Value": [16]}}
    assert normalize_stored(current) == current
