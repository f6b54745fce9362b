"""web/instances.py: the instances a study/series/instance URL names, read from the view a page
(1,000 rows) at a time — here with more than one page, through every service that uses it."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from dicomweb_couch.web import instances

COUNT = instances.BATCH + 5
CT = "1.2.840.10008.5.1.4.1.1.2"


def document(study: str, series: str, sop: str, number: int) -> dict:
    """An instance document as dcmjs-org/dicomweb-server wrote it (its file is not needed here)."""
    return {"_id": sop, "dataset": {
        "00080016": {"vr": "UI", "Value": [CT]}, "00080018": {"vr": "UI", "Value": [sop]},
        "00080060": {"vr": "CS", "Value": ["CT"]}, "00100020": {"vr": "LO", "Value": ["PAGES"]},
        "0020000D": {"vr": "UI", "Value": [study]}, "0020000E": {"vr": "UI", "Value": [series]},
        "00200013": {"vr": "IS", "Value": [number]}}}


@pytest.fixture
async def big_series(client, couch_server, couch_db_name) -> tuple[str, str, list[str]]:
    """One series of more instances than a page, written in bulk straight into the database."""
    study, series = generate_uid(), generate_uid()
    sops = sorted(f"2.25.{n}" for n in range(10**6, 10**6 + COUNT))
    docs = [document(study, series, sop, n) for n, sop in enumerate(sops, 1)]
    status, body = couch_server.request("POST", f"{couch_db_name}/_bulk_docs", {"docs": docs})
    assert status == 201 and all("error" not in r for r in body), body[:3]
    return study, series, sops


def sop_of(record: dict) -> str:
    return record["00080018"]["Value"][0]


async def test_more_than_a_page_through_every_service(client, big_series):
    """One test, as indexing a thousand documents dominates its time: metadata, instance search
    with paging across the page boundary, the study's count, and DELETE."""
    study, series, sops = big_series
    resp = await client.get(f"/studies/{study}/series/{series}/metadata")
    assert resp.status == 200
    assert [sop_of(r) for r in await resp.json()] == sops  # all, once each, in UID order

    url = f"/studies/{study}/series/{series}/instances"
    resp = await client.get(url)
    assert len(await resp.json()) == 1000 and "offset" in resp.headers["Warning"]  # the server's limit
    resp = await client.get(url, params={"offset": "998", "limit": "4"})
    assert [sop_of(r) for r in await resp.json()] == sops[998:1002]
    resp = await client.get(url, params={"offset": "1000"})
    assert [sop_of(r) for r in await resp.json()] == sops[1000:]
    resp = await client.get("/studies", params={"StudyInstanceUID": study})
    assert (await resp.json())[0]["00201208"]["Value"] == [COUNT]

    resp = await client.delete(f"/studies/{study}/series/{series}")
    assert resp.status == 204
    resp = await client.get(f"/studies/{study}/series/{series}/metadata")
    assert resp.status == 404
    assert await (await client.get("/studies", params={"StudyInstanceUID": study})).json() == []
