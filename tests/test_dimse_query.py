"""C-FIND against QIDO-RS on the same generated archive: the same keys give the same matches and
values, at every level of Patient Root and Study Root; pending responses, cancel, bad identifiers."""

from __future__ import annotations

import asyncio
import re

from dicom_factory import make_instance, stow
from dimse_helpers import AE_TITLE, binary, run, start_archive
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind as PATIENT_ROOT,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT,
)

PATIENTS = [("Doe^John", "PAT-1"), ("Doe^Jane", "PAT-2"), ("Müller^Hélène", "PAT-3"), ("Smith^Anna", "PAT-4")]
QIDO_PATH = {"STUDY": "/studies", "SERIES": "/series", "IMAGE": "/instances"}


async def make_archive(client) -> dict[str, list[str]]:
    """Seven studies of four patients, two series each (CT and MR), two or three instances per series."""
    files, studies = [], []
    for n, (name, pid) in enumerate(PATIENTS * 2):
        if n == 7:
            break
        study = generate_uid()
        studies.append(study)
        for s, modality in enumerate(("CT", "MR")):
            series = generate_uid()
            for i in range(2 + (n + s) % 2):
                files.append(make_instance(study, series, patient_name=name, patient_id=pid, modality=modality,
                                           study_date=f"2024{1 + n:02d}15", accession=f"ACC-{n}",
                                           description=f"Study {n}", series_number=s + 1, instance_number=i + 1))
    status, _ = await stow(client, files)
    assert status == 200
    return {"studies": studies}


def c_find(port: int, model, keys: dict[str, object], cancel_after: int | None = None) -> tuple[list[Dataset], list[int]]:
    """The identifiers of the pending responses and every status, from pynetdicom as the SCU."""
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    identifier = Dataset()
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    found, statuses = [], []
    try:
        responses = assoc.send_c_find(identifier, model, msg_id=7)
        for status, answer in responses:
            statuses.append(status.Status)
            if status.Status in (0xFF00, 0xFF01):
                found.append(answer)
                if cancel_after is not None and len(found) == cancel_after:
                    assoc.send_c_cancel(7, query_model=model)
    finally:
        assoc.release()
    return found, statuses


async def find_both(archive, level: str, keys: dict[str, object], model=STUDY_ROOT,
                    uid: str = "StudyInstanceUID") -> tuple[dict[str, Dataset], dict[str, dict]]:
    found, statuses = await asyncio.to_thread(c_find, archive.port, model, {"QueryRetrieveLevel": level, **keys})
    assert statuses[-1] == 0x0000 and statuses.count(0xFF00) == len(found), [hex(s) for s in statuses]
    params = {k: str(v) for k, v in keys.items() if v != ""}
    params["includefield"] = ",".join(k for k, v in keys.items() if v == "")
    params["limit"] = "1000"
    resp = await archive.client.get(QIDO_PATH[level], params=params)
    assert resp.status in (200, 204), await resp.text()
    qido = await resp.json() if resp.status == 200 else []
    tag = {"StudyInstanceUID": "0020000D", "SeriesInstanceUID": "0020000E", "SOPInstanceUID": "00080018"}[uid]
    return {str(ds.get(uid)): ds for ds in found}, {r[tag]["Value"][0]: r for r in qido}


def same_values(ds: Dataset, record: dict, keywords: list[str]) -> None:
    for keyword in keywords:
        elem = ds[keyword]
        value = record.get(f"{elem.tag:08X}", {}).get("Value")
        if elem.VR == "PN":
            assert str(elem.value) == (value[0]["Alphabetic"] if value else ""), keyword
        else:
            expected = [str(v) for v in value] if value else []
            got = [str(v) for v in (elem.value if elem.VM > 1 else [elem.value])] if elem.value not in (None, "") else []
            assert got == expected, (keyword, got, expected)


QUERIES = [
    ("STUDY", {"PatientName": "Doe*", "StudyInstanceUID": "", "StudyDate": "", "PatientID": "",
               "NumberOfStudyRelatedInstances": "", "ModalitiesInStudy": ""}),
    ("STUDY", {"PatientName": "doe^jane", "StudyInstanceUID": "", "AccessionNumber": ""}),  # PN: any case
    ("STUDY", {"StudyDate": "20240201-20240430", "StudyInstanceUID": "", "StudyDescription": ""}),
    ("STUDY", {"PatientName": "Müller*", "StudyInstanceUID": "", "PatientName_": None}),
    ("STUDY", {"AccessionNumber": "ACC-?", "PatientID": "PAT-1", "StudyInstanceUID": "", "StudyDate": ""}),
    ("SERIES", {"Modality": "MR", "SeriesInstanceUID": "", "StudyInstanceUID": "", "SeriesNumber": "",
                "NumberOfSeriesRelatedInstances": ""}),
    ("IMAGE", {"PatientID": "PAT-2", "SOPInstanceUID": "", "SOPClassUID": "", "InstanceNumber": ""}),
]


async def test_c_find_matches_qido_at_every_study_root_level(make_client, couch_db_name):
    archive = await start_archive(make_client, couch_db_name)
    await make_archive(archive.client)
    compared = 0
    for level, keys in QUERIES:
        keys = {k: v for k, v in keys.items() if v is not None and not k.endswith("_")}
        uid = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}[level]
        dimse, qido = await find_both(archive, level, keys, uid=uid)
        assert set(dimse) == set(qido) and dimse, (level, keys)
        for key, ds in dimse.items():
            assert set(ds.dir()) >= {k for k in keys} | {"QueryRetrieveLevel", "RetrieveAETitle"}, ds
            assert ds.QueryRetrieveLevel == level and ds.RetrieveAETitle == AE_TITLE
            same_values(ds, qido[key], [k for k in keys if k not in ("NumberOfStudyRelatedInstances",)])
            compared += 1
    assert compared > 20


async def test_c_find_in_series_of_one_study_and_images_of_one_series(make_client, couch_db_name):
    archive = await start_archive(make_client, couch_db_name)
    studies = (await make_archive(archive.client))["studies"]
    series, _ = await find_both(archive, "SERIES", {"StudyInstanceUID": studies[0], "SeriesInstanceUID": "",
                                                    "Modality": ""}, uid="SeriesInstanceUID")
    assert sorted(ds.Modality for ds in series.values()) == ["CT", "MR"]
    one = next(iter(series))
    images, qido = await find_both(archive, "IMAGE", {"StudyInstanceUID": studies[0], "SeriesInstanceUID": one,
                                                      "SOPInstanceUID": ""}, uid="SOPInstanceUID")
    assert set(images) == set(qido) and len(images) in (2, 3)


async def test_patient_root_patient_and_study_levels(make_client, couch_db_name):
    archive = await start_archive(make_client, couch_db_name)
    await make_archive(archive.client)
    found, statuses = await asyncio.to_thread(c_find, archive.port, PATIENT_ROOT, {
        "QueryRetrieveLevel": "PATIENT", "PatientName": "Doe*", "PatientID": "", "PatientBirthDate": "",
        "NumberOfPatientRelatedStudies": "", "NumberOfPatientRelatedInstances": ""})
    assert statuses[-1] == 0x0000
    patients = {ds.PatientID: ds for ds in found}
    assert set(patients) == {"PAT-1", "PAT-2"}
    resp = await archive.client.get("/studies", params={"PatientID": "PAT-1", "includefield": "00201208"})
    studies = await resp.json()
    assert patients["PAT-1"].NumberOfPatientRelatedStudies == len(studies) == 2
    assert patients["PAT-1"].NumberOfPatientRelatedInstances == sum(s["00201208"]["Value"][0] for s in studies)
    assert str(patients["PAT-2"].PatientName) == "Doe^Jane"
    found, statuses = await asyncio.to_thread(c_find, archive.port, PATIENT_ROOT, {
        "QueryRetrieveLevel": "STUDY", "PatientID": "PAT-3", "StudyInstanceUID": "", "PatientName": ""})
    assert statuses[-1] == 0x0000 and len(found) == 2
    assert {str(ds.PatientName) for ds in found} == {"Müller^Hélène"}
    assert all(ds.SpecificCharacterSet == "ISO_IR 192" for ds in found)


async def test_cancel_stops_pending_responses(make_client, couch_db_name):
    archive = await start_archive(make_client, couch_db_name, qido_max_limit=1, qido_default_limit=1)
    await make_archive(archive.client)
    found, statuses = await asyncio.to_thread(c_find, archive.port, STUDY_ROOT, {
        "QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": ""}, 1)
    assert statuses[-1] == 0xFE00, [hex(s) for s in statuses]
    assert len(found) < 30


async def test_bad_identifiers_fail_with_a_reason(make_client, couch_db_name):
    archive = await start_archive(make_client, couch_db_name)
    for keys in ({"QueryRetrieveLevel": "FRAME", "StudyInstanceUID": ""},
                 {"QueryRetrieveLevel": "STUDY", "StudyDate": "2024-01-01"},
                 {"PatientName": "Doe*", "StudyInstanceUID": ""}):  # no QueryRetrieveLevel
        found, statuses = await asyncio.to_thread(c_find, archive.port, STUDY_ROOT, keys)
        assert not found and statuses[-1] == 0xA900, (keys, [hex(s) for s in statuses])


async def test_findscu_from_dcmtk(make_client, couch_db_name):
    archive = await start_archive(make_client, couch_db_name)
    await make_archive(archive.client)
    code, out = await run(binary("findscu"), "-S", "-aec", AE_TITLE, "-k", "QueryRetrieveLevel=STUDY",
                          "-k", "PatientName=Doe*", "-k", "StudyInstanceUID", "-k", "PatientID",
                          "127.0.0.1", str(archive.port))
    assert code == 0, out
    assert len(re.findall(r"Find Response: \d+ \(Pending", out)) == 4, out
    assert out.count("PAT-1") == 2 and out.count("PAT-2") == 2
