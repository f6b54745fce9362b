"""WADO-URI: the stored Part 10 file comes back byte-exact, whatever the Accept header says."""

from __future__ import annotations

from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid

OHIF_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


async def stored(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_instance(study, series, sop)
    assert (await stow(client, [data]))[0] == 200
    return data, {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}


async def test_ohif_request_gets_the_file(client):
    data, params = await stored(client)
    params.update(contentType="application/dicom", transferSyntax="*")
    for path in ("/", "/wado"):
        resp = await client.get(path, params=params, headers={"Accept": OHIF_ACCEPT})
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/dicom"
        assert int(resp.headers["Content-Length"]) == len(data)
        assert await resp.read() == data


async def test_etag_gives_304(client):
    data, params = await stored(client)
    resp = await client.get("/wado", params=params)
    etag = resp.headers["ETag"]
    assert etag.strip('"') and await resp.read() == data
    resp = await client.get("/wado", params=params, headers={"If-None-Match": etag})
    assert resp.status == 304
    assert resp.headers["ETag"] == etag and await resp.read() == b""
    resp = await client.get("/wado", params=params, headers={"If-None-Match": '"another-version"'})
    assert resp.status == 200 and await resp.read() == data


async def test_missing_or_bad_parameters_are_400(client):
    _, params = await stored(client)
    for name in ("studyUID", "seriesUID", "objectUID"):
        resp = await client.get("/wado", params={k: v for k, v in params.items() if k != name})
        assert resp.status == 400
        assert (await resp.json())["message"] == f"the {name} parameter is required"
    resp = await client.get("/wado", params=dict(params, requestType="XYZ"))
    assert resp.status == 400 and resp.content_type == "application/json"
    body = await resp.json()
    assert body["status"] == 400 and "requestType must be WADO" in body["message"] and "'XYZ'" in body["message"]
    resp = await client.get("/wado", params=dict(params, objectUID="not-a-uid"))
    assert resp.status == 400
    assert "objectUID='not-a-uid' is not a valid UID" in (await resp.json())["message"]


async def test_unknown_or_mismatched_object_is_404(client):
    _, params = await stored(client)
    resp = await client.get("/wado", params=dict(params, objectUID="1.2.3.4.5"))
    assert resp.status == 404
    assert (await resp.json())["message"].startswith("no instance 1.2.3.4.5 in series ")
    resp = await client.get("/wado", params=dict(params, studyUID="1.2.3"))  # the instance, but not of this study
    assert resp.status == 404
    assert (await resp.json())["message"].endswith(" of study 1.2.3")


async def test_unavailable_content_type_or_syntax_is_406(client):
    _, params = await stored(client)
    resp = await client.get("/wado", params=dict(params, contentType="image/jpeg"))
    assert resp.status == 406
    assert "contentType='image/jpeg' is not available" in (await resp.json())["message"]
    resp = await client.get("/wado", params=dict(params, transferSyntax="1.2.840.10008.1.2.4.50"))
    assert resp.status == 406
    message = (await resp.json())["message"]
    assert "1.2.840.10008.1.2.4.50 is not available" in message and "stored as 1.2.840.10008.1.2.1" in message
