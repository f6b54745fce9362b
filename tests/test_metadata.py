"""WADO-RS metadata: every stored attribute of every instance, image-level ones included."""

from __future__ import annotations

import pytest
from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid

from dicomweb_couch.web import wado_rs

IMAGE_TAGS = ("00280010", "00280011", "00280030", "00200032", "00200037", "00281052", "00281053",
              "00281050", "00281051", "00280004", "00280100", "00280101", "00280103")


async def stored_study(client, counts=(2, 1)):
    study = generate_uid()
    series = [generate_uid() for _ in counts]
    files = [make_instance(study, s, instance_number=i + 1) for s, n in zip(series, counts) for i in range(n)]
    assert (await stow(client, files))[0] == 200
    return study, series


def value(record: dict, tag: str):
    return record[tag]["Value"][0]


async def test_series_metadata_has_what_ohif_draws_with(client):
    study, series = await stored_study(client)
    resp = await client.get(f"/studies/{study}/series/{series[0]}/metadata")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/dicom+json")
    records = await resp.json()
    assert len(records) == 2
    for record in records:
        for tag in IMAGE_TAGS:
            assert tag in record, tag
        assert record["00280030"]["Value"] == [0.5, 0.5]
        assert value(record, "00100010") == {"Alphabetic": "Doe^John"}
        assert record["7FE00010"] == {"vr": "OW", "BulkDataURI": (  # bulk data left out, with its URI
            f"{client.make_url('/studies')}/{study}/series/{series[0]}/instances/{value(record, '00080018')}/bulkdata/7FE00010")}
        assert value(record, "0020000E") == series[0]


async def test_study_and_instance_metadata(client):
    study, series = await stored_study(client)
    records = await (await client.get(f"/studies/{study}/metadata")).json()
    assert sorted(value(r, "0020000E") for r in records) == sorted([series[0], series[0], series[1]])
    sop = value(records[0], "00080018")
    path = f"/studies/{study}/series/{value(records[0], '0020000E')}/instances/{sop}/metadata"
    [record] = await (await client.get(path)).json()
    assert record == records[0]


async def test_large_study_is_streamed_in_batches(client, monkeypatch):
    monkeypatch.setattr(wado_rs, "BATCH", 2)
    study, series = await stored_study(client, counts=(3, 2))
    records = await (await client.get(f"/studies/{study}/metadata")).json()
    assert len({value(r, "00080018") for r in records}) == 5


@pytest.mark.parametrize("path", [
    "/studies/1.2.3.4/metadata",
    "/studies/1.2.3.4/series/1.2.3.5/metadata",
    "/studies/{study}/series/1.2.3.5/metadata",
    "/studies/1.2.3.4/series/{series}/instances/{sop}/metadata",
    "/studies/{study}/series/{series}/instances/1.2.3.6/metadata",
])
async def test_unknown_or_mismatched_is_404(client, path):
    study, series = await stored_study(client, counts=(1,))
    records = await (await client.get(f"/studies/{study}/metadata")).json()
    resp = await client.get(path.format(study=study, series=series[0], sop=value(records[0], "00080018")))
    assert resp.status == 404
    assert "no instance" in (await resp.json())["message"]
