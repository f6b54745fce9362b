"""STOW-RS against the real store: store response, statuses, failures part by part."""

from __future__ import annotations

import socket

from dicom_factory import make_instance, multipart, stow
from pydicom.uid import generate_uid

from dicomweb_couch.appkeys import COUCH

CT = "1.2.840.10008.5.1.4.1.1.2"


def tag(body: dict, key: str) -> list:
    return body.get(key, {}).get("Value", [])


def wado(study: str, series: str, sop: str) -> dict[str, str]:
    return {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}


async def test_store_one_instance_answers_store_response(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_instance(study, series, sop)
    body, content_type = multipart([data])
    resp = await client.post("/studies", data=body, headers={"Content-Type": content_type})
    assert resp.status == 200
    assert resp.content_type == "application/dicom+json" and "Warning" not in resp.headers
    body = await resp.json(content_type=None)
    assert set(body) == {"00081190", "00081199"}
    assert tag(body, "00081190")[0].endswith(f"/studies/{study}")
    [ref] = tag(body, "00081199")
    assert tag(ref, "00081150") == [CT] and tag(ref, "00081155") == [sop]
    assert tag(ref, "00081190")[0].endswith(f"/studies/{study}/series/{series}/instances/{sop}")
    assert "00081198" not in body
    resp = await client.get(tag(ref, "00081190")[0].split(str(client.make_url("")).rstrip("/"))[1],
                            headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert resp.status == 200 and data in await resp.read()  # the RetrieveURL gives the very file


async def test_store_again_is_success_and_keeps_one_document(client):
    study, series = generate_uid(), generate_uid()
    data = make_instance(study, series)
    first = await stow(client, [data])
    again = await stow(client, [data])
    assert first[0] == again[0] == 200
    assert again[1] == first[1]  # the same store response: the instance is there
    resp = await client.get(f"/studies/{study}/series/{series}/instances")
    assert len(await resp.json()) == 1


async def test_new_version_of_instance_replaces_the_file(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    assert (await stow(client, [make_instance(study, series, sop, description="first")]))[0] == 200
    second = make_instance(study, series, sop, description="second")
    assert (await stow(client, [second]))[0] == 200
    resp = await client.get("/wado", params=wado(study, series, sop))
    assert await resp.read() == second
    resp = await client.get("/studies", params={"StudyInstanceUID": study, "includefield": "00081030"})
    assert [tag(r, "00081030") for r in await resp.json()] == [["second"]]  # the search sees it too


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
    assert tag(failed, "00000902")[0]  # says why
    resp = await client.get(f"/studies/{study}/series/{series}/instances")
    assert [tag(r, "00080018") for r in await resp.json()] == [[sop]]


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
    assert "application/dicom+xml" in (await resp.json())["message"]


async def test_malformed_multipart_is_400(client):
    resp = await client.post("/studies", data=b"no boundary here",
                             headers={"Content-Type": 'multipart/related; type="application/dicom"'})
    assert resp.status == 400 and "boundary" in (await resp.json())["message"]
    resp = await client.post("/studies", data=b"garbage without any delimiter",
                             headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=zz'})
    assert resp.status == 400
    body = await resp.json()
    assert body["status"] == 400 and body["error"] == "Bad Request" and body["message"]


async def test_empty_multipart_is_400(client):
    resp = await client.post("/studies", data=b"--zz--\r\n",
                             headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=zz'})
    assert resp.status == 400
    assert "no parts" in (await resp.json())["message"]


async def test_several_instances_in_one_request(client):
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(5)]
    files = [make_instance(study, series, sop, instance_number=i) for i, sop in enumerate(sops, 1)]
    status, body = await stow(client, files)
    assert status == 200 and [tag(r, "00081155")[0] for r in tag(body, "00081199")] == sops
    for sop, data in zip(sops, files):
        assert await (await client.get("/wado", params=wado(study, series, sop))).read() == data


async def test_large_instance_round_trip(client):
    """Larger than the in-memory spool: goes through a temporary file both ways."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_instance(study, series, sop, rows=2500, columns=2500)  # 12.5 MB of pixels
    assert (await stow(client, [data]))[0] == 200
    resp = await client.get("/wado", params=wado(study, series, sop))
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


async def test_mix_of_stored_and_refused_parts(client):
    """Each part on its own (PS3.18 10.5.3): what was stored is listed and there, what was refused is
    listed with its reason and is not there."""
    study, series = generate_uid(), generate_uid()
    good = {sop: make_instance(study, series, sop, instance_number=i)
            for i, sop in enumerate([generate_uid() for _ in range(3)], 1)}
    wrong_study_sop = generate_uid()
    parts = [*good.values(), b"not DICOM" * 50, (b"{}", "application/json"),
             make_instance(generate_uid(), series, wrong_study_sop)]
    status, body = await stow(client, parts, path=f"/studies/{study}")
    assert status == 202
    assert sorted(tag(r, "00081155")[0] for r in tag(body, "00081199")) == sorted(good)
    failed = tag(body, "00081198")
    assert sorted(tag(f, "00081197")[0] for f in failed) == sorted([0xA900, 0xC000, 0xC000])
    assert [tag(f, "00081155") for f in failed if tag(f, "00081197") == [0xA900]] == [[wrong_study_sop]]
    resp = await client.get(f"/studies/{study}/instances")
    assert sorted(tag(r, "00080018")[0] for r in await resp.json()) == sorted(good)
    for sop, data in good.items():
        assert await (await client.get("/wado", params=wado(study, series, sop))).read() == data


async def test_nested_multipart_part_is_refused_alone(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    inner, inner_type = multipart([make_instance(study, series)], boundary="inner-boundary")
    status, body = await stow(client, [make_instance(study, series, sop), (inner, inner_type)])
    assert status == 202
    assert [tag(r, "00081155")[0] for r in tag(body, "00081199")] == [sop]
    [failed] = tag(body, "00081198")
    assert tag(failed, "00081197") == [0xC000] and "multipart/related" in tag(failed, "00000902")[0]
    resp = await client.get(f"/studies/{study}/series/{series}/instances")
    assert [tag(r, "00080018") for r in await resp.json()] == [[sop]]  # nothing of the nested part


async def test_body_that_breaks_after_good_parts_is_202_with_warning(client):
    """A body cut off after one complete part: the complete part is stored and acknowledged, the
    answer says the body was malformed (Warning, PS3.18 8.4.1.2), and nothing of the cut-off part is
    stored."""
    study, series, sop, cut_sop = generate_uid(), generate_uid(), generate_uid(), generate_uid()
    good, cut = make_instance(study, series, sop), make_instance(study, series, cut_sop)
    body, content_type = multipart([good], boundary="bb")
    body = body[:-len(b"--bb--\r\n")] + b"--bb\r\nContent-Type: application/dicom\r\n\r\n" + cut[:len(cut) // 2]
    resp = await client.post("/studies", data=body, headers={"Content-Type": content_type})
    assert resp.status == 202
    assert resp.headers["Warning"].startswith("299 ") and "part 2" in resp.headers["Warning"]  # says what broke
    answer = await resp.json(content_type=None)
    assert [tag(r, "00081155")[0] for r in tag(answer, "00081199")] == [sop]
    assert await (await client.get("/wado", params=wado(study, series, sop))).read() == good
    assert (await client.get("/wado", params=wado(study, series, cut_sop))).status == 404
