"""A synthetic archive in dicomweb_couch's document layout, loaded straight into CouchDB in bulk.

Documents are what STOW-RS would write for small generated CT/MR/PT/CR images (DICOM JSON of a
real pydicom data set, varied per study/series/instance), with a tiny stand-in attachment: enough
for QIDO and WADO-URI look-ups, fast to load (``_bulk_docs``) at 100,000 instances.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import random
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pydicom
from pydicom.uid import generate_uid

from dicomweb_couch.dicom.dicomjson import dataset_to_json

FAMILY = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Martinez",
          "Müller", "Schmidt", "Dubois", "Rossi", "Nakamura", "Kowalski", "Nguyen", "Andersson", "O'Brien"]
GIVEN = ["James", "Mary", "Anna", "Jürgen", "Hélène", "Wei", "Olga", "Pedro", "Fatima", "John", "Yuki", "Lars"]
MODALITIES = ["CT", "MR", "PT", "CR"]
SOP_CLASSES = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
               "PT": "1.2.840.10008.5.1.4.1.1.128", "CR": "1.2.840.10008.5.1.4.1.1.1"}
_STUB = base64.b64encode(b"DICM stand-in").decode()


@dataclass(frozen=True)
class Shape:
    studies: int
    series_per_study: int
    instances_per_series: int

    @property
    def instances(self) -> int:
        return self.studies * self.series_per_study * self.instances_per_series


def _template() -> dict:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    return dataset_to_json(ds)


def _pn(name: str) -> dict:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]}


def documents(shape: Shape, seed: int = 7) -> Iterator[dict]:
    """Instance documents, study after study; deterministic for a seed."""
    rng = random.Random(seed)
    template = _template()
    for s in range(shape.studies):
        study = generate_uid(entropy_srcs=[str(seed), "study", str(s)])
        patient = s % max(1, shape.studies // 3)  # about three studies per patient
        name = f"{FAMILY[patient % len(FAMILY)]}^{GIVEN[patient // len(FAMILY) % len(GIVEN)]}^{patient:05d}"
        date = f"{2010 + rng.randrange(15)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
        for n in range(shape.series_per_study):
            series = generate_uid(entropy_srcs=[str(seed), study, str(n)])
            modality = MODALITIES[(s + n) % len(MODALITIES)]
            for i in range(shape.instances_per_series):
                sop = generate_uid(entropy_srcs=[str(seed), series, str(i)])
                d = copy.deepcopy(template)
                d.update({
                    "0020000D": {"vr": "UI", "Value": [study]}, "0020000E": {"vr": "UI", "Value": [series]},
                    "00080018": {"vr": "UI", "Value": [sop]}, "00080016": {"vr": "UI", "Value": [SOP_CLASSES[modality]]},
                    "00100010": _pn(name), "00100020": {"vr": "LO", "Value": [f"PID{patient:06d}"]},
                    "00080020": {"vr": "DA", "Value": [date]}, "00080050": {"vr": "SH", "Value": [f"ACC{s:07d}"]},
                    "00081030": {"vr": "LO", "Value": [f"{modality} study {s}"]},
                    "00080060": {"vr": "CS", "Value": [modality]}, "00200011": {"vr": "IS", "Value": [n + 1]},
                    "0008103E": {"vr": "LO", "Value": [f"{modality} series {n + 1}"]},
                    "00200013": {"vr": "IS", "Value": [i + 1]},
                })
                d["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
                yield {"_id": sop, "dataset": d, "md5hash": hashlib.md5(sop.encode()).hexdigest(),
                       "transferSyntaxUID": "1.2.840.10008.1.2.1",
                       "_attachments": {"object.dcm": {"content_type": "application/dicom", "data": _STUB}}}


def load(couch_url: str, database: str, shape: Shape, batch: int = 1000) -> None:
    """Create the database and bulk-load the archive (Apache CouchDB or pouchdb-server)."""
    _request("PUT", f"{couch_url}/{database}")
    docs: list[dict] = []
    for doc in documents(shape):
        docs.append(doc)
        if len(docs) == batch:
            _request("POST", f"{couch_url}/{database}/_bulk_docs", {"docs": docs})
            docs = []
    if docs:
        _request("POST", f"{couch_url}/{database}/_bulk_docs", {"docs": docs})


def _request(method: str, url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Accept": "application/json", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())
