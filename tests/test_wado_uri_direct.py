"""WADO-URI's direct path: the file is asked for by its document id (the SOP Instance UID) and the
request's UIDs are checked against the file's own header; documents under other ids still serve."""

from __future__ import annotations

import base64

from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid

from dicomweb_couch.dicom.identity import identify


def test_identify_needs_whole_values():
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_instance(study, series, sop)
    whole = identify(data)
    assert (whole.study, whole.series, whole.sop) == (study, series, sop)
    assert whole.transfer_syntax == "1.2.840.10008.1.2.1"
    cut = data.index(series.encode()) + len(series) - 3  # the series UID cut short
    assert identify(data[:cut]) is None
    assert identify(b"not dicom at all" * 100) is None


async def test_mismatched_study_is_404_even_with_a_matching_etag(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    assert (await stow(client, [make_instance(study, series, sop)]))[0] == 200
    params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    resp = await client.get("/wado", params=params)
    etag = resp.headers["ETag"]
    for wrong in ({"studyUID": generate_uid()}, {"seriesUID": generate_uid()}):
        resp = await client.get("/wado", params={**params, **wrong})
        assert resp.status == 404
        resp = await client.get("/wado", params={**params, **wrong}, headers={"If-None-Match": etag})
        assert resp.status == 404
    resp = await client.get("/wado", params=params, headers={"If-None-Match": etag})
    assert resp.status == 304


async def test_a_document_under_another_id_is_found_through_the_view(client, couch_server, couch_db_name):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_instance(study, series, sop)
    assert (await stow(client, [make_instance(generate_uid(), generate_uid())]))[0] == 200  # database and views
    doc = {"dataset": {"0020000D": {"vr": "UI", "Value": [study]}, "0020000E": {"vr": "UI", "Value": [series]},
                       "00080018": {"vr": "UI", "Value": [sop]}},
           "_attachments": {"object.dcm": {"content_type": "application/dicom",
                                           "data": base64.b64encode(data).decode()}}}
    status, _ = couch_server.request("PUT", f"{couch_db_name}/legacy-{generate_uid()}", doc)
    assert status == 201
    resp = await client.get("/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": series,
                                             "objectUID": sop})
    assert resp.status == 200
    assert await resp.read() == data


async def test_head_gives_the_headers_without_the_file(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_instance(study, series, sop)
    assert (await stow(client, [data]))[0] == 200
    params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    resp = await client.head("/wado", params=params)
    assert resp.status == 200
    assert int(resp.headers["Content-Length"]) == len(data) and resp.headers["ETag"]
    assert await resp.read() == b""


async def test_head_of_a_wado_rs_instance_has_no_body(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    assert (await stow(client, [make_instance(study, series, sop)]))[0] == 200
    url = f"/studies/{study}/series/{series}/instances/{sop}"
    accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    resp = await client.head(url, headers=accept)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("multipart/related")
    assert await resp.read() == b""
    resp = await client.get(url, headers=accept)  # the connection is still usable
    assert resp.status == 200


async def test_head_of_a_wado_rs_series_has_no_body(client):
    study, series = generate_uid(), generate_uid()
    files = [make_instance(study, series, instance_number=n) for n in range(1, 4)]
    assert (await stow(client, files))[0] == 200
    accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    resp = await client.head(f"/studies/{study}/series/{series}", headers=accept)
    assert resp.status == 200 and await resp.read() == b""
    resp = await client.get(f"/studies/{study}/series/{series}", headers=accept)
    assert resp.status == 200 and len(await resp.read()) > sum(map(len, files))
