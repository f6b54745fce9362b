"""The design documents: loading from design_docs/, installing them, and their maps on odd documents.

The maps run inside CouchDB over every document of the database, including those that
dcmjs-org/dicomweb-server wrote and anything else someone put there; a map that throws loses the
document from the index silently, so they must skip what they cannot read and index the rest.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pydicom
import pytest
from conftest import REPO_ROOT, CouchServer
from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid

from dicomweb_couch.dicom.levels import view_constants
from dicomweb_couch.store import design_docs

DDOC_ID = "_design/qido"
VIEWS_DIR = REPO_ROOT / "dicomweb_couch" / "design_docs" / "qido" / "views"
REDUCE_VIEWS = ("series", "studies")


# -- helpers ----------------------------------------------------------------------------------


def stored_ddoc(couch: CouchServer, db: str) -> dict[str, Any]:
    status, doc = couch.request("GET", f"{db}/{DDOC_ID}")
    assert status == 200, doc
    return doc


def views_on_disk() -> dict[str, Any]:
    return design_docs.load()[DDOC_ID]["views"]


def put_doc(couch: CouchServer, db: str, doc_id: str, doc: dict[str, Any]) -> str:
    status, body = couch.request("PUT", f"{db}/{doc_id}", doc)
    assert status in (201, 202), body
    return body["rev"]


def put_attachment(couch: CouchServer, db: str, doc_id: str, rev: str, name: str, data: bytes,
                   content_type: str = "application/dicom") -> None:
    """PUT one attachment as its raw bytes (CouchDB's standalone attachment API)."""
    headers = dict(couch.headers(), **{"Content-Type": content_type})
    request = urllib.request.Request(f"{couch.url}/{db}/{doc_id}/{name}?rev={rev}", data=data, method="PUT",
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (201, 202)


def view_rows(couch: CouchServer, db: str, view: str, query: str = "") -> list[dict[str, Any]]:
    status, body = couch.request("GET", f"{db}/_design/qido/_view/{view}{query}")
    assert status == 200, (view, query, body)
    return body["rows"]


def element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)}


def dataset(study: str | None, series: str | None, sop: str, **extra: dict[str, Any]) -> dict[str, Any]:
    """A small stored data set; ``None`` leaves the UID out, extra elements are keyed by tag."""
    d = {"00080016": element("UI", "1.2.840.10008.5.1.4.1.1.2"), "00080018": element("UI", sop),
         "00080060": element("CS", "CT"), "00100020": element("LO", "PAT-ODD")}
    if study is not None:
        d["0020000D"] = element("UI", study)
    if series is not None:
        d["0020000E"] = element("UI", series)
    d.update(extra)
    return d


def legacy_dataset(study: str, series: str, sop: str) -> dict[str, Any]:
    """A data set as dcmjs-org/dicomweb-server stored it: PN as plain strings, binary values as ``{}``."""
    return {
        "00080005": element("CS", "ISO_IR 100"),
        "00080016": element("UI", "1.2.840.10008.5.1.4.1.1.2"),
        "00080018": element("UI", sop),
        "00080020": element("DA", "20190101"),
        "00080060": element("CS", "CT"),
        "00080090": element("PN", "Legacy^Referrer"),
        "00100010": element("PN", "Legacy^Name"),
        "00100020": element("LO", "LEGACY-1"),
        "0020000D": element("UI", study),
        "0020000E": element("UI", series),
        "00200013": element("IS", 1),
        "00280010": element("US", 16),
        "00280011": element("US", 16),
        "00280030": element("DS", 0.5, 0.5),
        "00291010": element("OB", {}),
        "7FE00010": element("OW", {}),
    }


# -- loading ----------------------------------------------------------------------------------


def test_load_finds_every_view_on_disk():
    docs = design_docs.load()
    assert list(docs) == [DDOC_ID]
    assert docs[DDOC_ID]["language"] == "javascript"
    assert "_rev" not in docs[DDOC_ID] and "_id" not in docs[DDOC_ID]
    views = docs[DDOC_ID]["views"]
    assert set(views) == {p.name for p in VIEWS_DIR.iterdir() if p.is_dir()} == \
        {"instances", "membership", "series", "studies"}
    for name, view in views.items():
        source = (VIEWS_DIR / name / "map.js").read_text().strip()
        assert view["map"] == re.sub(r"LEVEL_TAGS_\w+", lambda m: json.dumps(list(view_constants()[m.group(0)])), source)
        assert "LEVEL_TAGS" not in view["map"]
        assert view["map"].startswith("function (doc) {") and view["map"].endswith("}"), name
        assert view.get("reduce") == ("_count" if name in REDUCE_VIEWS else None), name


def test_load_reads_any_folder_of_the_couchapp_layout(tmp_path: Path):
    (tmp_path / "a" / "views" / "v1").mkdir(parents=True)
    (tmp_path / "a" / "views" / "v1" / "map.js").write_text("function (doc) { emit(doc._id, 1); }\n")
    (tmp_path / "a" / "views" / "v1" / "reduce.js").write_text("_sum\n")
    (tmp_path / "b" / "views" / "v2").mkdir(parents=True)
    (tmp_path / "b" / "views" / "v2" / "map.js").write_text("function (doc) {}")
    (tmp_path / "not-a-ddoc.txt").write_text("ignored")
    assert design_docs.load(tmp_path) == {
        "_design/a": {"language": "javascript", "views": {"v1": {"map": "function (doc) { emit(doc._id, 1); }",
                                                                  "reduce": "_sum"}}},
        "_design/b": {"language": "javascript", "views": {"v2": {"map": "function (doc) {}"}}},
    }


# -- the maps themselves, in JavaScript -----------------------------------------------------------------

# Runs every map of the design document over every document, as CouchDB does, and reports per
# view and document the keys emitted or the exception thrown.
NODE_HARNESS = r"""
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = {};
for (const [view, def] of Object.entries(input.views)) {
  let emitted;
  const map = new Function('emit', 'return (' + def.map + ');')((k, v) => emitted.push(k));
  if (typeof map !== 'function') { throw new Error(view + ': the map is not a function'); }
  out[view] = {};
  for (const doc of input.docs) {
    emitted = [];
    try { map(JSON.parse(JSON.stringify(doc))); out[view][doc._id] = {keys: emitted}; }
    catch (e) { out[view][doc._id] = {error: String(e)}; }
  }
}
process.stdout.write(JSON.stringify(out));
"""


def run_maps(docs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the maps cannot be run outside CouchDB")
    payload = json.dumps({"views": views_on_disk(), "docs": docs})
    result = subprocess.run([node, "-e", NODE_HARNESS], input=payload, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class OddDocuments:
    """Documents that must not break the maps, and which views each may appear in."""

    def __init__(self) -> None:
        s = generate_uid()
        self.study = s
        self.series = generate_uid()
        nothing: dict[str, dict[str, Any]] = {  # indexed nowhere
            "no-dataset": {"kind": "not an instance"},
            "null-dataset": {"dataset": None},
            "string-dataset": {"dataset": "garbage"},
            "list-dataset": {"dataset": [1, 2]},
            "no-study-uid": {"dataset": dataset(None, self.series, "1.2.3.1")},
            "empty-study-uid": {"dataset": dataset(None, self.series, "1.2.3.2", **{"0020000D": {"vr": "UI", "Value": []}})},
            "valueless-study-uid": {"dataset": dataset(None, self.series, "1.2.3.3", **{"0020000D": {"vr": "UI"}})},
            "number-study-uid": {"dataset": dataset(None, self.series, "1.2.3.4", **{"0020000D": element("UI", 123)})},
            "null-study-element": {"dataset": dataset(None, self.series, "1.2.3.5", **{"0020000D": None})},
        }
        study_only = {  # a study, but no series: study-level views only
            "no-series-uid": {"dataset": dataset(s, None, "1.2.3.6")},
        }
        complete = {  # study and series: every view
            "legacy-pn": {"dataset": dataset(s, self.series, "1.2.3.7", **{"00100010": element("PN", "Legacy^Name")})},
            "empty-values": {"dataset": dataset(s, self.series, "1.2.3.8", **{
                "00100010": {"vr": "PN", "Value": []}, "00080050": {"vr": "SH", "Value": []},
                "00080020": {"vr": "DA", "Value": []}, "00080060": {"vr": "CS", "Value": []}})},
            "binary-placeholder": {"dataset": dataset(s, self.series, "1.2.3.9", **{
                "7FE00010": element("OB", {}), "00291010": element("OB", {})})},
            "odd-values": {"dataset": dataset(s, self.series, "1.2.3.10", **{
                "00100010": element("PN", None, 5, {"Alphabetic": 7}, {"Ideographic": "山田^太郎"}, ""),
                "00080090": element("PN", {}),
                "00080050": "not an element", "00100030": None, "00200010": element("SH", None),
                "00080016": element("UI", None)})},
        }
        self.docs = {**nothing, **study_only, **complete}
        self.study_level = set(study_only) | set(complete)
        self.series_level = set(complete)

    def expected(self, view: str) -> set[str]:
        return self.series_level if view in ("series", "instances") else self.study_level

    def as_list(self) -> list[dict[str, Any]]:
        return [dict(doc, _id=doc_id) for doc_id, doc in self.docs.items()]


def test_maps_never_throw_on_odd_documents():
    odd = OddDocuments()
    results = run_maps(odd.as_list() + [{"_id": DDOC_ID, "language": "javascript", "views": {}}])
    for view, per_doc in results.items():
        errors = {doc_id: r["error"] for doc_id, r in per_doc.items() if "error" in r}
        assert not errors, (view, errors)
        emitting = {doc_id for doc_id, r in per_doc.items() if r["keys"]}
        assert emitting == odd.expected(view), view


# -- installing --------------------------------------------------------------------------------


async def test_install_is_idempotent_and_restores_a_changed_document(make_client, couch_db_name, couch_server):
    await make_client(couch_db_name)
    first = stored_ddoc(couch_server, couch_db_name)
    assert first["views"] == views_on_disk()

    await make_client(couch_db_name)  # a second start: nothing to do
    assert stored_ddoc(couch_server, couch_db_name)["_rev"] == first["_rev"]

    changed = dict(first, views=dict(first["views"], index={"map": "function (doc) { emit(doc._id, null); }",
                                                              "reduce": "_count"}))
    changed["views"].pop("instances")
    changed_rev = put_doc(couch_server, couch_db_name, DDOC_ID, changed)

    await make_client(couch_db_name)  # a start after someone changed it: the files' content again
    restored = stored_ddoc(couch_server, couch_db_name)
    assert restored["views"] == views_on_disk()
    assert restored["_rev"] != changed_rev
    assert int(restored["_rev"].split("-")[0]) > int(changed_rev.split("-")[0])

    await make_client(couch_db_name)
    assert stored_ddoc(couch_server, couch_db_name)["_rev"] == restored["_rev"]


async def test_deleted_design_document_is_recreated(make_client, couch_db_name, couch_server):
    await make_client(couch_db_name)
    rev = stored_ddoc(couch_server, couch_db_name)["_rev"]
    status, body = couch_server.request("DELETE", f"{couch_db_name}/{DDOC_ID}?rev={rev}")
    assert status == 200, body
    await make_client(couch_db_name)
    assert stored_ddoc(couch_server, couch_db_name)["views"] == views_on_disk()


# -- the views in CouchDB, with odd documents in the database -------------------------------------------


async def test_views_skip_odd_documents_in_couchdb(client, couch_db_name, couch_server):
    odd = OddDocuments()
    for doc_id, doc in odd.docs.items():
        put_doc(couch_server, couch_db_name, doc_id, doc)
    real_study, real_series = generate_uid(), generate_uid()
    real_sop = generate_uid()
    assert (await stow(client, [make_instance(real_study, real_series, real_sop)]))[0] == 200

    for view in ("instances", "membership", "series", "studies"):
        if view in REDUCE_VIEWS:
            grouped = view_rows(couch_server, couch_db_name, view, "?group_level=1")
            assert grouped and all(row["value"] > 0 for row in grouped), view
            rows = view_rows(couch_server, couch_db_name, view, "?reduce=false")
        else:
            rows = view_rows(couch_server, couch_db_name, view)
        assert {row["id"] for row in rows} == odd.expected(view) | {real_sop}, view

    studies = {row["key"][0] for row in view_rows(couch_server, couch_db_name, "studies", "?group_level=1")}
    assert studies == {odd.study, real_study}


async def test_dicomweb_answers_with_odd_documents_in_the_database(client, couch_db_name, couch_server):
    odd = OddDocuments()
    for doc_id, doc in odd.docs.items():
        put_doc(couch_server, couch_db_name, doc_id, doc)
    paths = ["/studies", f"/studies?StudyInstanceUID={odd.study}", "/studies?PatientID=PAT-ODD", f"/studies/{odd.study}/series",
             f"/studies/{odd.study}/series/{odd.series}/instances", f"/studies/{odd.study}/metadata",
             f"/studies/{odd.study}/series/{odd.series}/metadata"]
    for path in paths:
        resp = await client.get(path)
        assert resp.status == 200, (path, await resp.text())
        assert await resp.json(content_type=None), path
    resp = await client.get("/studies", params={"StudyInstanceUID": odd.study})
    [study] = await resp.json()
    assert study["00201208"]["Value"] == [len(odd.study_level)]
    assert study["00201206"]["Value"] == [2]  # the series, and the instance without one


# -- documents of the predecessor ------------------------------------------------------------------------


async def test_legacy_document_is_found_and_served_as_valid_dicom_json(client, couch_db_name, couch_server):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    part10 = make_instance(study, series, sop, patient_name="Legacy^Name", patient_id="LEGACY-1")
    rev = put_doc(couch_server, couch_db_name, sop, {"dataset": legacy_dataset(study, series, sop)})
    put_attachment(couch_server, couch_db_name, sop, rev, "object.dcm", part10)

    resp = await client.get("/studies", params={"PatientName": "Legacy*"})
    assert resp.status == 200
    [found] = await resp.json()
    assert found["0020000D"]["Value"] == [study]
    assert found["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Legacy^Name"}]}
    assert found["00080090"] == {"vr": "PN", "Value": [{"Alphabetic": "Legacy^Referrer"}]}
    resp = await client.get("/studies", params={"PatientName": "legacy^name"})  # case-insensitive, whole name
    assert [s["0020000D"]["Value"] for s in await resp.json()] == [[study]]

    for path in (f"/studies/{study}/metadata", f"/studies/{study}/series/{series}/metadata",
                 f"/studies/{study}/series/{series}/instances/{sop}/metadata"):
        resp = await client.get(path)
        assert resp.status == 200, path
        [md] = await resp.json()
        assert md["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Legacy^Name"}]}, path
        assert md["7FE00010"]["vr"] == "OW" and md["00291010"]["vr"] == "OB", path  # bulk data: by BulkDataURI
        assert md["7FE00010"]["BulkDataURI"].endswith(f"/instances/{sop}/bulkdata/7FE00010"), path
        assert md["00280030"]["Value"] == [0.5, 0.5]
        ds = pydicom.Dataset.from_json(md)  # strict: PN strings or {} binaries would not load
        assert str(ds.PatientName) == "Legacy^Name" and ds.SOPInstanceUID == sop

    resp = await client.get("/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": series,
                                             "objectUID": sop})
    assert resp.status == 200
    assert pydicom.dcmread(io.BytesIO(await resp.read())).SOPInstanceUID == sop
