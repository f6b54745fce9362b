"""Instance documents whose Part 10 file is gone (an attachment deleted in CouchDB, a document
written by hand): every service that reads the file answers 404 naming the instance, never 500,
and the metadata (which comes from the document) is still served."""

from __future__ import annotations

import pytest
from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid

from dicomweb_couch.store.couch import ATTACHMENT


@pytest.fixture
async def fileless(client, couch_server, couch_db_name) -> tuple[str, str, str]:
    """An instance stored through STOW-RS whose file was then deleted directly in CouchDB."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    assert (await stow(client, [make_instance(study, series, sop)]))[0] == 200
    status, doc = couch_server.request("GET", f"{couch_db_name}/{sop}")
    assert status == 200 and ATTACHMENT in doc["_attachments"]
    status, body = couch_server.request("DELETE", f"{couch_db_name}/{sop}/{ATTACHMENT}?rev={doc['_rev']}")
    assert status == 200, body
    return study, series, sop


def no_file(sop: str) -> str:
    return f"instance {sop} has no stored file"


async def test_wado_uri(client, fileless):
    study, series, sop = fileless
    resp = await client.get("/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": series,
                                             "objectUID": sop})
    assert resp.status == 404 and (await resp.json())["message"] == no_file(sop)


@pytest.mark.parametrize("accept", ['multipart/related; type="application/dicom"',  # as stored
                                    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2'])
async def test_retrieve_as_stored_and_converted(client, fileless, accept):
    study, series, sop = fileless
    for url in (f"/studies/{study}", f"/studies/{study}/series/{series}/instances/{sop}"):
        resp = await client.get(url, headers={"Accept": accept})
        assert resp.status == 404, url
        assert (await resp.json())["message"] == no_file(sop)


@pytest.mark.parametrize("suffix", ["/frames/1", "/bulkdata/7FE00010", "/rendered", "/thumbnail"])
async def test_frames_bulk_data_and_rendered(client, fileless, suffix):
    study, series, sop = fileless
    resp = await client.get(f"/studies/{study}/series/{series}/instances/{sop}{suffix}")
    assert resp.status == 404
    assert (await resp.json())["message"] == no_file(sop)


async def test_metadata_and_search_still_answer(client, fileless):
    study, series, sop = fileless
    resp = await client.get(f"/studies/{study}/series/{series}/instances/{sop}/metadata")
    assert resp.status == 200 and (await resp.json())[0]["00080018"]["Value"] == [sop]
    resp = await client.get(f"/studies/{study}/instances")
    assert [r["00080018"]["Value"] for r in await resp.json()] == [[sop]]
