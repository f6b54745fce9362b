"""Every file pydicom ships goes through STOW-RS: stored and returned byte-exact by WADO-URI,
or refused alone with a failure reason while the others in the same request are stored."""

from __future__ import annotations

from pathlib import Path

import pydicom.data
from dicom_factory import stow

FILES = [Path(p) for p in pydicom.data.get_testdata_files() if Path(p).is_file()]
REFUSED = {0xA900, 0xC000}


def values(body: dict, tag: str) -> list:
    return body.get(tag, {}).get("Value", [])


async def test_each_file_stores_and_comes_back_byte_exact(client):
    stored = refused = 0
    for path in FILES:
        data = path.read_bytes()
        status, body = await stow(client, [data])
        if status == 409:
            [failure] = values(body, "00081198")
            assert values(failure, "00081197")[0] in REFUSED, path.name
            assert values(failure, "00000902"), path.name  # says why
            refused += 1
            continue
        assert status == 200, (path.name, body)
        [ref] = values(body, "00081199")
        url = values(ref, "00081190")[0]
        study, series, sop = url.split("/studies/")[1].replace("/series/", "/").replace("/instances/", "/").split("/")
        resp = await client.get("/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": series,
                                                 "objectUID": sop, "contentType": "application/dicom"})
        assert resp.status == 200, path.name
        assert await resp.read() == data, path.name
        stored += 1
    assert stored > 140 and stored + refused == len(FILES)


async def test_all_files_in_one_request(client):
    status, body = await stow(client, [p.read_bytes() for p in FILES])
    assert status == 202
    stored, failed = values(body, "00081199"), values(body, "00081198")
    assert len(stored) + len(failed) == len(FILES)
    assert len(stored) > 140
    resp = await client.get("/studies", params={"limit": "1000"})
    studies = {r["0020000D"]["Value"][0] for r in await resp.json()}
    assert {values(r, "00081190")[0].split("/studies/")[1].split("/")[0] for r in stored} <= studies
