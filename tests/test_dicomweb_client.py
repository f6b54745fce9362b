"""The real ``dicomweb_client`` library and its command line against the running server.

dicomweb_client is what dcmjs-org/dicomweb-server's README told users to load data with, so it
must keep working: its Python API (synchronous, on ``requests``: run in a thread here) and its
``dicomweb_client`` console script, at the root and under a URL prefix.
"""

from __future__ import annotations

import asyncio
import json

import pydicom
from dicomweb_cli import PIXEL_SPACING, Study, console_script, run_cli  # noqa: F401  (re-exported)
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset

# -- helpers ----------------------------------------------------------------------------------


def dataset(record: dict) -> Dataset:
    """A DICOM JSON object as a pydicom Dataset: this also proves it is valid DICOM JSON."""
    return Dataset.from_json(record)


async def call(fn, *args, **kwargs):
    """Run a synchronous dicomweb_client call without blocking the server's event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def client_for(test_client, prefix: str = "") -> DICOMwebClient:
    """dicomweb_client on the test server, with the test client's credentials (the suite's, if any)."""
    return DICOMwebClient(url=str(test_client.make_url(prefix)).rstrip("/"), headers=dict(test_client.session.headers))


def cli_auth(test_client) -> list[str]:
    """The command line's options for the test client's bearer token (the suite's, if any)."""
    scheme, _, token = test_client.session.headers.get("Authorization", "").partition(" ")
    return ["--bearer-token", token] if scheme == "Bearer" else []


async def store(dwc: DICOMwebClient, study: Study) -> Dataset:
    response = await call(dwc.store_instances, datasets=study.datasets())
    stored = response.ReferencedSOPSequence
    assert len(stored) == 3, response
    assert "FailedSOPSequence" not in response
    return response


# -- the Python API ------------------------------------------------------------------------------


async def test_store_instances_answers_store_response(client):
    study = Study()
    response = await store(client_for(client), study)
    assert response.RetrieveURL.endswith(f"/studies/{study.uid}")
    sops = {ds.SOPInstanceUID for ds in study.datasets()}
    assert {item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence} == sops


async def test_search_for_studies_after_store(client):
    dwc = client_for(client)
    study = Study()
    await store(dwc, study)
    [found] = [dataset(r) for r in await call(dwc.search_for_studies)]
    assert found.StudyInstanceUID == study.uid
    assert str(found.PatientName) == study.patient_name
    assert found.PatientID == study.patient_id
    assert found.NumberOfStudyRelatedSeries == 2
    assert found.NumberOfStudyRelatedInstances == 3
    assert sorted(found.ModalitiesInStudy) == ["CT", "MR"]
    assert found.StudyDate == "20240102" and found.AccessionNumber == "ACC-1"
    assert found.RetrieveURL.endswith(f"/studies/{study.uid}")


async def test_search_for_studies_with_filter(client):
    dwc = client_for(client)
    wanted, other = Study(patient_id="PAT-WANTED"), Study(patient_id="PAT-OTHER", patient_name="Other^Patient")
    await store(dwc, wanted)
    await store(dwc, other)
    assert len(await call(dwc.search_for_studies)) == 2
    found = await call(dwc.search_for_studies, search_filters={"PatientID": "PAT-WANTED"})
    assert [dataset(r).StudyInstanceUID for r in found] == [wanted.uid]
    found = await call(dwc.search_for_studies, search_filters={"PatientName": "Other*"})
    assert [dataset(r).StudyInstanceUID for r in found] == [other.uid]
    assert await call(dwc.search_for_studies, search_filters={"PatientID": "NOBODY"}) == []


async def test_search_for_series_and_instances(client):
    dwc = client_for(client)
    study = Study()
    await store(dwc, study)
    series = {s.SeriesInstanceUID: s for s in map(dataset, await call(dwc.search_for_series, study.uid))}
    assert set(series) == {study.ct, study.mr}
    assert series[study.ct].Modality == "CT" and series[study.ct].NumberOfSeriesRelatedInstances == 2
    assert series[study.mr].Modality == "MR" and series[study.mr].NumberOfSeriesRelatedInstances == 1
    assert series[study.mr].SeriesNumber == 2

    instances = [dataset(r) for r in await call(dwc.search_for_instances, study.uid, study.ct)]
    assert sorted(i.InstanceNumber for i in instances) == [1, 2]
    for instance in instances:
        assert instance.StudyInstanceUID == study.uid and instance.SeriesInstanceUID == study.ct
        assert instance.SOPClassUID == pydicom.uid.CTImageStorage
        assert (instance.Rows, instance.Columns) == (8, 12)


async def test_retrieve_series_metadata_has_image_attributes(client):
    dwc = client_for(client)
    study = Study()
    await store(dwc, study)
    metadata = [dataset(r) for r in await call(dwc.retrieve_series_metadata, study.uid, study.ct)]
    assert len(metadata) == 2
    for md in metadata:
        assert md.SeriesInstanceUID == study.ct
        assert (md.Rows, md.Columns) == (8, 12)
        assert [float(v) for v in md.PixelSpacing] == PIXEL_SPACING
        assert (md.BitsAllocated, md.BitsStored, md.HighBit) == (16, 12, 11)
        assert md.PhotometricInterpretation == "MONOCHROME2"
        assert str(md.PatientName) == study.patient_name


async def test_retrieve_study_metadata(client):
    dwc = client_for(client)
    study = Study()
    await store(dwc, study)
    metadata = [dataset(r) for r in await call(dwc.retrieve_study_metadata, study.uid)]
    assert {md.SOPInstanceUID for md in metadata} == {ds.SOPInstanceUID for ds in study.datasets()}
    assert {md.SeriesInstanceUID for md in metadata} == {study.ct, study.mr}
    assert all(md.StudyInstanceUID == study.uid for md in metadata)


async def test_api_under_a_url_prefix(make_client, couch_db_name):
    test_client = await make_client(couch_db_name, prefix="/dicom-web")
    dwc = client_for(test_client, "/dicom-web")
    study = Study()
    response = await store(dwc, study)
    assert f"/dicom-web/studies/{study.uid}" in response.RetrieveURL
    [found] = [dataset(r) for r in await call(dwc.search_for_studies, search_filters={"PatientID": study.patient_id})]
    assert found.StudyInstanceUID == study.uid and found.NumberOfStudyRelatedInstances == 3
    assert len(await call(dwc.search_for_series, study.uid)) == 2
    assert len(await call(dwc.retrieve_series_metadata, study.uid, study.ct)) == 2
    # and nothing answers at the root: the prefix really is where the routes are
    assert (await test_client.get("/studies")).status == 404


# -- the command line ------------------------------------------------------------------------------


async def test_cli_store_instances_then_search(client, tmp_path):
    url = str(client.make_url("")).rstrip("/")
    study = Study()
    code, out, err = await run_cli(url, *cli_auth(client), "store", "instances", *map(str, study.write(tmp_path)))
    assert code == 0, err
    resp = await client.get("/studies", params={"StudyInstanceUID": study.uid})
    [found] = [dataset(r) for r in await resp.json()]
    assert found.NumberOfStudyRelatedInstances == 3

    code, out, err = await run_cli(url, *cli_auth(client), "search", "studies")
    assert code == 0, err
    assert study.uid in out
    [record] = json.loads(out)
    assert dataset(record).PatientID == study.patient_id


async def test_cli_search_with_filter(client, tmp_path):
    url = str(client.make_url("")).rstrip("/")
    wanted, other = Study(patient_id="PAT-CLI"), Study(patient_id="PAT-ELSE")
    files = map(str, wanted.write(tmp_path) + other.write(tmp_path))
    code, _, err = await run_cli(url, *cli_auth(client), "store", "instances", *files)
    assert code == 0, err
    code, out, err = await run_cli(url, *cli_auth(client), "search", "studies", "--filter", "PatientID=PAT-CLI")
    assert code == 0, err
    assert [dataset(r).StudyInstanceUID for r in json.loads(out)] == [wanted.uid]


async def test_cli_under_a_url_prefix(make_client, couch_db_name, tmp_path):
    test_client = await make_client(couch_db_name, prefix="/dicom-web")
    url = str(test_client.make_url("/dicom-web"))
    study = Study()
    code, _, err = await run_cli(url, *cli_auth(test_client), "store", "instances", *map(str, study.write(tmp_path)))
    assert code == 0, err
    resp = await test_client.get("/dicom-web/studies")
    assert [dataset(r).StudyInstanceUID for r in await resp.json()] == [study.uid]
    code, out, err = await run_cli(url, *cli_auth(test_client), "search", "studies")
    assert code == 0, err
    assert study.uid in out
