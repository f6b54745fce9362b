"""STOW-RS against the real store: store response, statuses, failures part by part."""

from __future__ import annotations

import socket

from dicom_factory import make_instance, multipart, stow
from pydicom.uid import generate_uid

from dicomweb_couch.appkeys import COUCH

CT = "1.2.840.10008.5.1.4.1.1.2"


def tag(body: dict, key: str) -> list:
    return body.get(key, {}).get("Value", [])


async def test_store_one_instance_answers_store_response(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    status, body = await stow(client, [make_instance(study, series, sop)])
    assert status == 200
    assert tag(body, "00081190")[0].endswith(f"/studies/{study}")
    [ref] = tag(body, "00081199")
    assert tag(ref, "00081150") == [CT] and tag(ref, "00081155") == [sop]
    assert tag(ref, "00081190")[0].endswith(f"/studies/{study}/series/{series}/instances/{sop}")
    assert "00081198" not in body


async def test_store_again_is_success_and_keeps_one_document(client):
    study, series = generate_uid(), generate_uid()
    data = make_instance(study, series)
    assert (await stow(client, [data]))[0] == 200
    assert (await stow(client, [data]))[0] == 200
    resp = await client.get(f"/studies/{study}/series/{series}/instances")
    assert len(await resp.json()) == 1


async def test_new_version_of_instance_replaces_the_file(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    await stow(client, [make_instance(study, series, sop, description="first")])
    second = make_instance(study, series, sop, description="second")
    assert (await stow(client, [second]))[0] == 200
    resp = await client.get("/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop})
    assert await resp.read() == second


async def test_study_uid_mismatch_is_409_with_failure_reason(client):
    study, other = generate_uid(), generate_uid()
    status, body = await stow(client, [make_instance(study, generate_uid())], path=f"/studies/{other}")
    assert status == 409
    [failed] = tag(body, "00081198")
    assert tag(failed, "00081197") == [0xA900]
    assert "does not match" in tag(failed, "00000902")[0]
    assert "00081199" not in body


async def test_one_good_one_bad_part_is_202(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    status, body = await stow(client, [make_instance(study, series, sop), b"this is not DICOM at all" * 10])
    assert status == 202
    assert [tag(r, "00081155")[0] for r in tag(body, "00081199")] == [sop]
    [failed] = tag(body, "00081198")
    assert tag(failed, "00081197") == [0xC000]


async def test_part_of_other_media_type_fails_alone(client):
    status, body = await stow(client, [(b'{"not": "dicom"}', "application/json")])
    assert status == 409
    [failed] = tag(body, "00081198")
    assert "application/json" in tag(failed, "00000902")[0]


async def test_wrong_media_type_is_415(client):
    resp = await client.post("/studies", data=make_instance(generate_uid(), generate_uid()),
                             headers={"Content-Type": "application/dicom"})
    assert resp.status == 415
    assert "multipart/related" in (await resp.json())["message"]
    body, _ = multipart([b"x"], boundary="b1")
    resp = await client.post("/studies", data=body,
                             headers={"Content-Type": 'multipart/related; type="application/dicom+xml"; boundary=b1'})
    assert resp.status == 415


async def test_malformed_multipart_is_400(client):
    resp = await client.post("/studies", data=b"no boundary here",
                             headers={"Content-Type": 'multipart/related; type="application/dicom"'})
    assert resp.status == 400 and "boundary" in (await resp.json())["message"]
    resp = await client.post("/studies", data=b"garbage without any delimiter",
                             headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=zz'})
    assert resp.status == 400


async def test_empty_multipart_is_400(client):
    resp = await client.post("/studies", data=b"--zz--\r\n",
                             headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=zz'})
    assert resp.status == 400
    assert "no parts" in (await resp.json())["message"]


async def test_several_instances_in_one_request(client):
    study, series = generate_uid(), generate_uid()
    files = [make_instance(study, series, instance_number=i) for i in range(1, 6)]
    status, body = await stow(client, files)
    assert status == 200 and len(tag(body, "00081199")) == 5


async def test_large_instance_round_trip(client):
    """Larger than the in-memory spool: goes through a temporary file both ways."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_instance(study, series, sop, rows=2500, columns=2500)  # 12.5 MB of pixels
    assert (await stow(client, [data]))[0] == 200
    resp = await client.get("/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop})
    assert await resp.read() == data


async def test_database_failure_is_503(client):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    client.app[COUCH].url = f"http://127.0.0.1:{dead}"
    resp = await client.get("/studies")
    assert resp.status == 503 and "database" in (await resp.json())["message"]
    status, body = await stow(client, [make_instance(generate_uid(), generate_uid())])
    assert status == 503 and "nothing was stored" in body["message"]
