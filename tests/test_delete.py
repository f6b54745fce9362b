"""DELETE of studies, series and instances: documents and files gone, QIDO counts follow, 405 when read-only."""

from __future__ import annotations

from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid


async def archive(client):
    """Two studies: the first with a CT series of 3 instances and an MR series of 1."""
    study, ct, mr, other = generate_uid(), generate_uid(), generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(4)]
    files = [make_instance(study, ct, sops[i], instance_number=i + 1) for i in range(3)]
    files.append(make_instance(study, mr, sops[3], modality="MR"))
    files.append(make_instance(other, generate_uid()))
    assert (await stow(client, files))[0] == 200
    return study, ct, mr, other, sops


async def counts(client, study):
    """(series, instances) of the study as QIDO-RS reports them, None when it is not found."""
    resp = await client.get("/studies", params={"StudyInstanceUID": study})
    found = await resp.json(content_type=None) if resp.status == 200 else []
    if not found:
        return None
    return found[0]["00201206"]["Value"][0], found[0]["00201208"]["Value"][0]


async def test_delete_instance_series_study(client):
    study, ct, mr, other, sops = await archive(client)
    assert await counts(client, study) == (2, 4)

    resp = await client.delete(f"/studies/{study}/series/{ct}/instances/{sops[0]}")
    assert resp.status == 204
    assert await counts(client, study) == (2, 3)
    wado = {"requestType": "WADO", "studyUID": study, "seriesUID": ct, "objectUID": sops[0]}
    assert (await client.get("/wado", params=wado)).status == 404
    assert (await client.get(f"/studies/{study}/series/{ct}/instances/{sops[0]}/metadata")).status == 404
    rows = await (await client.get(f"/studies/{study}/series/{ct}/instances")).json()
    assert sorted(r["00080018"]["Value"][0] for r in rows) == sorted(sops[1:3])

    assert (await client.delete(f"/studies/{study}/series/{ct}")).status == 204
    assert await counts(client, study) == (1, 1)
    series = await (await client.get(f"/studies/{study}/series")).json()
    assert [s["0020000E"]["Value"][0] for s in series] == [mr]

    assert (await client.delete(f"/studies/{study}")).status == 204
    assert await counts(client, study) is None
    assert (await client.get(f"/studies/{study}/metadata")).status == 404
    assert await counts(client, other) == (1, 1)  # the other study is untouched


async def test_deleting_nothing_is_404(client):
    study, ct, mr, other, sops = await archive(client)
    for url in (f"/studies/{generate_uid()}", f"/studies/{study}/series/{generate_uid()}",
                f"/studies/{other}/series/{ct}",  # series of another study
                f"/studies/{study}/series/{mr}/instances/{sops[0]}"):  # instance of another series
        resp = await client.delete(url)
        assert resp.status == 404, url
        assert (await resp.json())["message"].startswith("no ")
    assert await counts(client, study) == (2, 4)
    assert (await client.delete(f"/studies/{study}")).status == 204
    assert (await client.delete(f"/studies/{study}")).status == 404  # already gone


async def test_stored_again_after_deletion(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_instance(study, series, sop)
    assert (await stow(client, [data]))[0] == 200
    assert (await client.delete(f"/studies/{study}")).status == 204
    assert (await stow(client, [data]))[0] == 200
    assert await counts(client, study) == (1, 1)
    params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    assert await (await client.get("/wado", params=params)).read() == data


async def test_read_only_archive_answers_405(make_client, couch_db_name):
    client = await make_client(couch_db_name, allow_delete=False)
    study, ct, mr, other, sops = await archive(client)
    for url, allowed in ((f"/studies/{study}", "GET, HEAD, POST"), (f"/studies/{study}/series/{ct}", "GET, HEAD"),
                         (f"/studies/{study}/series/{ct}/instances/{sops[0]}", "GET, HEAD")):
        resp = await client.delete(url)
        assert resp.status == 405 and resp.headers["Allow"] == allowed
        assert "read-only" in (await resp.json())["message"]
    assert await counts(client, study) == (2, 4)
