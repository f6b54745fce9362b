"""Databases written by dcmjs-org/dicomweb-server: served right (transfer syntax learnt from the file and
kept, AT values as strings), repaired by a repeated STOW, upgraded in place by ``python -m dicomweb_couch
upgrade`` without becoming unreadable to the predecessor. Documents are written exactly as it writes them
(tests/predecessor.py), with real JPEG 2000 and RLE files from pydicom's test data."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pydicom
from conftest import REPO_ROOT, CouchServer
from dicom_factory import make_instance, stow
from predecessor import write_predecessor_document
from pydicom.uid import generate_uid
from test_design_docs import legacy_dataset, put_attachment, put_doc
from wado_helpers import parts, storable, transfer_syntax

JPEG2000 = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"
ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def one_study(name: str, study: str, series: str) -> bytes:
    """pydicom's test file ``name`` as an instance of its own in the given study and series (several of
    them share one SOP Instance UID), in its own transfer syntax."""
    ds = pydicom.dcmread(io.BytesIO(storable(name)))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def with_at_values(study: str, series: str) -> bytes:
    """A real file given AT values (Frame Increment Pointer, and one inside a sequence item)."""
    ds = pydicom.dcmread(io.BytesIO(one_study("MR_small.dcm", study, series)))
    ds.add_new(0x00280009, "AT", [0x00540010, 0x00540020])
    item = pydicom.Dataset()
    item.add_new(0x00209165, "AT", 0x00200032)  # Dimension Index Pointer
    ds.DimensionIndexSequence = [item]
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def legacy_study(couch: CouchServer, db: str) -> dict[str, bytes]:
    study, series = generate_uid(), generate_uid()
    files = {"jp2k": one_study("MR_small_jp2klossless.dcm", study, series),
             "rle": one_study("MR_small_RLE.dcm", study, series), "at": with_at_values(study, series)}
    for data in files.values():
        write_predecessor_document(couch, db, data)
    return files


def uids(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def url(data: bytes) -> str:
    return "/studies/{}/series/{}/instances/{}".format(*uids(data))


def stored(couch: CouchServer, db: str, data: bytes) -> dict:
    status, doc = couch.request("GET", f"{db}/{uids(data)[2]}")
    assert status == 200
    return doc


async def test_compressed_legacy_instances_are_served_in_their_real_syntax(client, couch_db_name, couch_server):
    files = legacy_study(couch_server, couch_db_name)
    for kind, syntax, frame_type in (("jp2k", JPEG2000, "image/jp2"), ("rle", RLE, "image/dicom-rle")):
        data = files[kind]
        assert "transferSyntaxUID" not in stored(couch_server, couch_db_name, data)
        resp = await client.get(url(data), headers={"Accept": ANY})
        assert resp.status == 200
        [part] = await parts(resp)
        assert part.body == data, kind  # as stored, byte-exact, not decoded
        assert transfer_syntax(part) == syntax
        # learnt once, kept in the document (the predecessor's fields untouched)
        doc = stored(couch_server, couch_db_name, data)
        assert doc["transferSyntaxUID"] == syntax
        assert {"dataset", "md5hash"} <= doc.keys() and "object.dcm" in doc["_attachments"]

        resp = await client.get(url(data), headers={"Accept": f'multipart/related; type="application/dicom"; '
                                                               f'transfer-syntax={syntax}'})
        assert resp.status == 200, kind
        assert (await parts(resp))[0].body == data
        for path in ("/frames/1", "/bulkdata/7FE00010"):
            resp = await client.get(url(data) + path, headers={"Accept": f"multipart/related; type={frame_type}"})
            assert resp.status == 200, (kind, path, await resp.text())
            [frame] = await parts(resp)
            assert frame.content_type.startswith(frame_type) and transfer_syntax(frame) == syntax, frame.content_type
            ds = pydicom.dcmread(io.BytesIO(data))
            assert frame.body.rstrip(b"\0") == pydicom.encaps.get_frame(ds.PixelData, 0,
                                                                         number_of_frames=1).rstrip(b"\0")


async def test_legacy_instance_through_wado_uri_in_its_syntax(client, couch_db_name, couch_server):
    data = legacy_study(couch_server, couch_db_name)["jp2k"]
    study, series, sop = uids(data)
    params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    resp = await client.get("/wado", params=dict(params, transferSyntax=JPEG2000))
    assert resp.status == 200 and await resp.read() == data
    resp = await client.get("/wado", params=dict(params, transferSyntax="1.2.840.10008.1.2"))
    assert resp.status == 406
    assert JPEG2000 in await resp.text()


async def test_at_values_come_back_as_hex_strings(client, couch_db_name, couch_server):
    data = legacy_study(couch_server, couch_db_name)["at"]
    assert stored(couch_server, couch_db_name, data)["dataset"]["00280009"]["Value"] == [0x00540010, 0x00540020]
    resp = await client.get(url(data) + "/metadata")
    assert resp.status == 200
    [md] = await resp.json()
    assert md["00280009"] == {"vr": "AT", "Value": ["00540010", "00540020"]}
    assert md["00209222"]["Value"][0]["00209165"] == {"vr": "AT", "Value": ["00200032"]}
    ds = pydicom.Dataset.from_json(md)  # pydicom refused the integers
    assert ds.FrameIncrementPointer == [0x00540010, 0x00540020]


async def test_storing_the_same_file_again_repairs_the_document(client, couch_db_name, couch_server):
    files = legacy_study(couch_server, couch_db_name)
    before = stored(couch_server, couch_db_name, files["at"])
    status, body = await stow(client, [files["at"], files["rle"]])
    assert status == 200, body
    after = stored(couch_server, couch_db_name, files["at"])
    assert after["transferSyntaxUID"] == "1.2.840.10008.1.2.1"
    assert after["dataset"]["00280009"]["Value"] == ["00540010", "00540020"]
    assert after["md5hash"] == before["md5hash"]
    assert after["_attachments"]["object.dcm"]["digest"] == before["_attachments"]["object.dcm"]["digest"]
    assert stored(couch_server, couch_db_name, files["rle"])["transferSyntaxUID"] == RLE
    # nothing left to repair: a third store writes nothing
    assert (await stow(client, [files["at"]]))[0] == 200
    assert stored(couch_server, couch_db_name, files["at"])["_rev"] == after["_rev"]


def upgrade(couch: CouchServer, db: str, *options: str) -> tuple[int, dict]:
    command = [sys.executable, "-m", "dicomweb_couch", "upgrade", "--couch-url", couch.url, "--database", db,
               "--json", "--quiet", *options]
    if couch.user:
        command += ["--couch-user", couch.user, "--couch-password", couch.password or ""]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def predecessor_can_read(doc: dict) -> bool:
    """What the predecessor's views need: every DS/IS element with a Value array (they call Value.map)."""
    return all(isinstance(e.get("Value"), list) for e in doc["dataset"].values() if e.get("vr") in ("DS", "IS"))


async def test_upgrade_command_checks_upgrades_and_resumes(client, couch_db_name, couch_server):
    files = legacy_study(couch_server, couch_db_name)
    ours = storable("CT_small.dcm")
    assert (await stow(client, [ours]))[0] == 200  # written by this server: already current
    status, _ = couch_server.request("PUT", f"{couch_db_name}/1.2.3.999", {"dataset": {
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]}}})
    assert status == 201
    before = {k: stored(couch_server, couch_db_name, d) for k, d in files.items()}

    code, report = upgrade(couch_server, couch_db_name, "--dry-run")
    assert code == 1 and report["problems"] == {"1.2.3.999": "no object.dcm attachment"}
    assert report["upgraded"] == 3 and report["current"] == 2
    assert report["changes"] == {"transfer syntax recorded": 3, "AT values mended": 1}
    assert {k: stored(couch_server, couch_db_name, d) for k, d in files.items()} == before  # nothing written

    code, report = upgrade(couch_server, couch_db_name)
    assert code == 1 and report["upgraded"] == 3 and report["other"] >= 1  # the design document
    for kind, syntax in (("jp2k", JPEG2000), ("rle", RLE), ("at", "1.2.840.10008.1.2.1")):
        doc = stored(couch_server, couch_db_name, files[kind])
        assert doc["transferSyntaxUID"] == syntax
        assert doc["md5hash"] == before[kind]["md5hash"]
        assert doc["_attachments"]["object.dcm"]["digest"] == before[kind]["_attachments"]["object.dcm"]["digest"]
        assert doc["dataset"]["00080005"] == {"vr": "CS", "Value": ["ISO_IR 192"]}
        assert doc["dataset"]["00101020"]["Value"] == [None]  # the predecessor's empty DS stays
        assert doc["dataset"]["7FE00010"]["Value"] == [{}]
        assert predecessor_can_read(doc)
    assert stored(couch_server, couch_db_name, files["at"])["dataset"]["00280009"]["Value"] == ["00540010", "00540020"]

    code, report = upgrade(couch_server, couch_db_name)  # a second run finds everything current
    assert report["upgraded"] == 0 and report["current"] == 5 and report["resumed_after"] is None

    # an interrupted run resumes after the last checkpointed document
    first_id = sorted(uids(d)[2] for d in files.values())[0]
    checkpoint = f"{couch_db_name}/_local/dicomweb_couch-upgrade"
    status, current = couch_server.request("GET", checkpoint)
    assert status == 200 and current["last_id"] is None  # a finished run leaves nothing to resume
    status, _ = couch_server.request("PUT", checkpoint, {"last_id": first_id, "_rev": current["_rev"]})
    assert status == 201
    code, report = upgrade(couch_server, couch_db_name)
    assert report["resumed_after"] == first_id and report["examined"] < 6
    code, report = upgrade(couch_server, couch_db_name, "--restart")
    assert report["resumed_after"] is None and report["examined"] >= 6

    resp = await client.get(url(files["jp2k"]), headers={"Accept": ANY})
    assert resp.status == 200 and transfer_syntax((await parts(resp))[0]) == JPEG2000


async def test_upgrade_mends_pn_strings_of_older_databases(client, couch_db_name, couch_server):
    """Older predecessor databases hold PN values as plain strings: upgraded to PS3.18 F.2.2 objects."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    rev = put_doc(couch_server, couch_db_name, sop, {"dataset": legacy_dataset(study, series, sop), "md5hash": "x"})
    put_attachment(couch_server, couch_db_name, sop, rev, "object.dcm",
                   make_instance(study, series, sop, patient_name="Legacy^Name"))
    code, report = upgrade(couch_server, couch_db_name)
    assert code == 0 and report["changes"] == {"PN values mended": 1, "transfer syntax recorded": 1}
    doc = couch_server.request("GET", f"{couch_db_name}/{sop}")[1]
    assert doc["dataset"]["00100010"]["Value"] == [{"Alphabetic": "Legacy^Name"}]
    assert doc["dataset"]["00080090"]["Value"] == [{"Alphabetic": "Legacy^Referrer"}]
    assert doc["dataset"]["7FE00010"]["Value"] == [{}] and doc["transferSyntaxUID"] == "1.2.840.10008.1.2.1"


def test_upgrade_command_reports_an_unreachable_couchdb():
    done = subprocess.run([sys.executable, "-m", "dicomweb_couch", "upgrade", "--couch-url", "http://127.0.0.1:9",
                           "--quiet"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={"DICOMWEB_COUCH_COUCH_WAIT": "1", "PATH": ""})
    assert done.returncode == 2
    assert "did not answer" in done.stderr and "Traceback" not in done.stderr
