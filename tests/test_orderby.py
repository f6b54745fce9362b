"""``orderby`` on study, series and instance searches (as dcm4chee offers it), against a real store."""

from __future__ import annotations

import pytest
from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid

PATIENTS = [("Zeta^Anna", "20240105"), ("Alpha^Bert", "20240105"), ("Mid^Carl", "20230101"), ("Beta^Dora", "20250301")]


@pytest.fixture
async def archive(client):
    studies = {}
    for name, date in PATIENTS:
        study = generate_uid()
        studies[name] = study
        files = [make_instance(study, series, patient_name=name, study_date=date, series_number=n,
                               instance_number=i)
                 for n, series in ((2, generate_uid()), (1, generate_uid())) for i in (3, 1, 2)]
        assert (await stow(client, files))[0] == 200
    return client, studies


def values(records: list[dict], tag: str) -> list:
    out = []
    for r in records:
        v = r[tag]["Value"][0]
        out.append(v["Alphabetic"] if isinstance(v, dict) else v)
    return out


async def get(client, path: str, **params) -> list[dict]:
    resp = await client.get(path, params=params)
    assert resp.status == 200, await resp.text()
    assert "Warning" not in resp.headers
    return await resp.json()


async def test_studies_by_date_descending_then_name(archive):
    client, _ = archive
    records = await get(client, "/studies", orderby="-StudyDate,PatientName")
    assert values(records, "00100010") == ["Beta^Dora", "Alpha^Bert", "Zeta^Anna", "Mid^Carl"]


async def test_repeated_orderby_and_tags(archive):
    client, _ = archive
    records = await get(client, "/studies", orderby=["00080020", "-PatientName"])
    assert values(records, "00100010") == ["Mid^Carl", "Zeta^Anna", "Alpha^Bert", "Beta^Dora"]


async def test_ordered_pages_are_stable(archive):
    client, _ = archive
    whole = values(await get(client, "/studies", orderby="PatientName"), "0020000D")
    pages = [values(await get(client, "/studies", orderby="PatientName", limit="3", offset=str(o)), "0020000D")
             for o in (0, 3)]
    assert pages[0] + pages[1] == whole and len(set(whole)) == 4


async def test_series_and_instances(archive):
    client, studies = archive
    study = studies["Mid^Carl"]
    assert values(await get(client, f"/studies/{study}/series", orderby="-SeriesNumber"), "00200011") == [2, 1]
    assert values(await get(client, f"/studies/{study}/series", orderby="SeriesNumber"), "00200011") == [1, 2]
    records = await get(client, f"/studies/{study}/instances", orderby="-InstanceNumber,SOPInstanceUID")
    assert values(records, "00200013") == [3, 3, 2, 2, 1, 1]
    pair = values(records, "00080018")[:2]
    assert pair == sorted(pair)
    records = await get(client, "/series", orderby="-StudyDate,SeriesNumber", limit="4")
    assert [(r["00080020"]["Value"][0], r["00200011"]["Value"][0]) for r in records] == [
        ("20250301", 1), ("20250301", 2), ("20240105", 1), ("20240105", 1)]


@pytest.mark.parametrize("orderby, message", [
    ("NoSuchKeyword", "unknown attribute keyword"),
    ("SeriesNumber", "not a study-level attribute"),
    ("00400275.00401001", "sequence"),
])
async def test_bad_orderby_is_a_400_naming_it(client, orderby, message):
    resp = await client.get("/studies", params={"orderby": orderby})
    assert resp.status == 400
    assert message in (await resp.json())["message"]
