"""QIDO-RS on a generated archive in the real store: results compared with what the data says."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from aiohttp.test_utils import TestClient, TestServer
from dicom_factory import make_instance, stow
from pydicom.data import get_charset_files
from pydicom.uid import generate_uid

from dicomweb_couch.app import create_app
from dicomweb_couch.settings import Settings


@dataclass(frozen=True)
class Study:
    uid: str
    patient_name: str
    patient_id: str
    date: str
    accession: str
    description: str
    series: tuple[tuple[str, str, int], ...]  # (series UID, modality, instances)
    charset: str | None = None

    def files(self) -> list[bytes]:
        return [make_instance(self.uid, series, patient_name=self.patient_name, patient_id=self.patient_id,
                              modality=modality, study_date=self.date, accession=self.accession,
                              description=self.description, series_number=n, instance_number=i + 1,
                              charset=self.charset)
                for n, (series, modality, count) in enumerate(self.series, 1) for i in range(count)]


def study(name, pid, date, acc, desc, *series, charset=None) -> Study:
    return Study(generate_uid(), name, pid, date, acc, desc,
                 tuple((generate_uid(), modality, count) for modality, count in series), charset)


A = study("Doe^John", "PAT-1", "20240102", "ACC-1", "Head CT", ("CT", 3), ("CT", 2))
B = study("Smith^Anna", "PAT-2", "20230515", "ACC-2", "Chest MR", ("MR", 2), ("CT", 1))
C = study("Müller^Jürgen", "PAT-3", "20221231", "ACC-3", "Knee", ("MR", 1), charset="ISO_IR 192")
D = study("Doe^Jane", "PAT-1", "20240301", "ACC-4", "Follow-up", ("CT", 1))
FILLERS = [study(f"Page^Patient{i:02d}", f"PAGE-{i}", f"201901{i + 1:02d}", f"ACC-P{i}", "Filler", ("CT", 1))
           for i in range(25)]
ALL = [A, B, C, D, *FILLERS]
OHIF_LIST = {"limit": "101", "offset": "0", "fuzzymatching": "false",
             "includefield": "00081030,00080060,00080090,00100030"}

@pytest.fixture(scope="module")
def archive_db(couch_server, suite_auth) -> Iterator[str]:
    """A database holding the studies of ALL, stored once for the module through STOW-RS (in an
    event loop of its own: the tests' loops live one test each)."""
    name = f"test_qido_{uuid.uuid4().hex[:12]}"
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_load(couch_server, suite_auth, name))
        yield name
    finally:
        loop.close()
        couch_server.request("DELETE", f"/{name}")


async def _load(couch_server, suite_auth, database: str) -> None:
    settings = Settings(couch_url=couch_server.url, couch_user=couch_server.user,
                        couch_password=couch_server.password, database=database, couch_wait=30,
                        **suite_auth.settings)
    async with TestClient(TestServer(create_app(settings)), headers=suite_auth.headers) as client:
        for s in ALL:
            status, body = await stow(client, s.files())
            assert status == 200, body


@pytest.fixture
async def qido(make_client, archive_db):
    """A server on the loaded archive (which the tests only read)."""
    return await make_client(archive_db)


def value(record: dict, tag: str):
    values = record.get(tag, {}).get("Value", [])
    return values[0] if values else None


async def studies(client, **params) -> list[str]:
    resp = await client.get("/studies", params=params)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/dicom+json")
    return [value(r, "0020000D") for r in await resp.json()]


def uids(*items: Study) -> set[str]:
    return {s.uid for s in items}


async def test_ohif_study_list(qido):
    resp = await qido.get("/studies", params=OHIF_LIST, headers={"Accept": "application/dicom+json"})
    records = {value(r, "0020000D"): r for r in await resp.json()}
    assert set(records) == uids(*ALL)
    a, b = records[A.uid], records[B.uid]
    assert value(a, "00100010") == {"Alphabetic": "Doe^John"}
    assert value(a, "00100020") == "PAT-1" and value(a, "00080020") == "20240102"
    assert value(a, "00080050") == "ACC-1" and value(a, "00081030") == "Head CT"
    assert value(a, "00100030") == "19700101"
    assert value(a, "00201206") == 2 and value(a, "00201208") == 5
    assert a["00080061"]["Value"] == ["CT"] and b["00080061"]["Value"] == ["CT", "MR"]
    assert value(b, "00201206") == 2 and value(b, "00201208") == 3
    assert value(a, "00081190").endswith(f"/studies/{A.uid}")
    assert value(records[C.uid], "00100010") == {"Alphabetic": "Müller^Jürgen"}


async def test_pages_have_no_duplicates_or_gaps(qido):
    seen: list[str] = []
    for offset in range(0, 40, 7):
        seen += await studies(qido, limit="7", offset=str(offset))
    assert len(seen) == len(set(seen)) == len(ALL)
    filtered = []
    for offset in range(0, 30, 10):
        filtered += await studies(qido, PatientName="Page*", limit="10", offset=str(offset))
    assert sorted(filtered) == sorted(uids(*FILLERS))


@pytest.mark.parametrize("params, expected", [
    ({"PatientName": "*doe*"}, [A, D]),
    ({"PatientName": "Doe*"}, [A, D]),
    ({"PatientName": "DOE^JOHN"}, [A]),
    ({"PatientName": "Doe^J?hn"}, [A]),
    ({"PatientName": "Müller*"}, [C]),
    ({"PatientName": "muller", "fuzzymatching": "true"}, [C]),
    ({"PatientName": "joh", "fuzzymatching": "true"}, [A]),
    ({"00100020": "PAT-1"}, [A, D]),
    ({"PatientID": "pat-1"}, []),
    ({"AccessionNumber": "ACC-2"}, [B]),
    ({"StudyDescription": "*Knee*"}, [C]),
    ({"StudyDescription": "*knee*"}, []),
    ({"StudyDate": "20240102"}, [A]),
    ({"StudyDate": "20240101-20241231"}, [A, D]),
    ({"StudyDate": "20221231-"}, [A, B, C, D]),
    ({"StudyDate": "-20190102"}, FILLERS[:2]),
    ({"ModalitiesInStudy": "MR"}, [B, C]),
    ({"00080061": "MR,CT", "StudyDate": "20220101-"}, [A, B, C, D]),
    ({"PatientID": "PAT-1", "StudyDate": "20240301"}, [D]),
    ({"StudyInstanceUID": f"{A.uid},{C.uid}"}, [A, C]),
    ({"StudyInstanceUID": f"{B.uid}\\{D.uid}"}, [B, D]),
    ({"PatientName": "Nobody*"}, []),
])
async def test_study_matching(qido, params, expected):
    assert sorted(await studies(qido, **params)) == sorted(uids(*expected))


async def test_percent_encoded_values_match(qido):
    resp = await qido.get("/studies?PatientName=Doe%5EJohn&includefield=00081030%2C00100030")
    [record] = await resp.json()
    assert value(record, "0020000D") == A.uid and value(record, "00081030") == "Head CT"


async def test_includefield_all_and_defaults(qido):
    [record] = await (await qido.get("/studies", params={"StudyInstanceUID": C.uid, "includefield": "all"})).json()
    assert value(record, "00081030") == "Knee" and value(record, "00080005") == "ISO_IR 192"
    [record] = await (await qido.get("/studies", params={"StudyInstanceUID": C.uid})).json()
    assert "00081030" not in record  # not a default return key, not asked for
    for tag in ("00080020", "00080030", "00080050", "00080061", "00080090", "00081190", "00100010",
                "00100020", "00100030", "00100040", "0020000D", "00200010", "00201206", "00201208"):
        assert tag in record, tag


@pytest.mark.parametrize("query, word", [
    ("limit=-1", "limit"), ("offset=abc", "offset"), ("StudyDate=2024-13-01", "StudyDate"),
    ("NoSuchKeyword=1", "NoSuchKeyword"), ("fuzzymatching=maybe", "fuzzymatching"),
    ("StudyInstanceUID=1.2.x", "StudyInstanceUID"), ("includefield=Bogus", "Bogus"),
])
async def test_bad_query_is_400_naming_the_parameter(qido, query, word):
    resp = await qido.get(f"/studies?{query}")
    assert resp.status == 400
    assert word in (await resp.json())["message"]


async def test_server_limit_cuts_with_warning(make_client, archive_db, qido):
    client = await make_client(archive_db, qido_max_limit=5, qido_default_limit=4)
    resp = await client.get("/studies", params={"limit": "10"})
    assert len(await resp.json()) == 5 and resp.headers["Warning"].startswith("299 ")
    resp = await client.get("/studies")
    assert len(await resp.json()) == 4 and "Warning" in resp.headers
    resp = await client.get("/studies", params={"limit": "3"})
    assert len(await resp.json()) == 3 and "Warning" not in resp.headers


async def test_series_of_a_study(qido):
    resp = await qido.get(f"/studies/{A.uid}/series", params={"includefield": "0008103E,00080021"})
    records = await resp.json()
    assert [value(r, "0020000E") for r in records] == sorted(s for s, _, _ in A.series)
    counts = {value(r, "0020000E"): value(r, "00201209") for r in records}
    assert counts == {s: n for s, _, n in A.series}
    for r in records:
        assert value(r, "00080060") == "CT" and value(r, "0020000D") == A.uid
        assert value(r, "0008103E").startswith("CT series")
        assert value(r, "00081190").endswith(f"/studies/{A.uid}/series/{value(r, '0020000E')}")
    mr = await (await qido.get(f"/studies/{B.uid}/series", params={"Modality": "MR"})).json()
    assert [value(r, "0020000E") for r in mr] == [B.series[0][0]]
    second = await (await qido.get(f"/studies/{A.uid}/series", params={"SeriesNumber": "2"})).json()
    assert [value(r, "0020000E") for r in second] == [A.series[1][0]]
    assert await (await qido.get("/studies/1.2.3.999/series")).json() == []


async def test_instances_of_a_series(qido):
    series = A.series[0][0]
    resp = await qido.get(f"/studies/{A.uid}/series/{series}/instances")
    records = await resp.json()
    assert len(records) == 3
    assert sorted(value(r, "00200013") for r in records) == [1, 2, 3]
    for r in records:
        assert value(r, "00080016") == "1.2.840.10008.5.1.4.1.1.2"
        assert value(r, "00280010") == 16 and value(r, "00280011") == 16
        assert value(r, "00081190").endswith(f"/instances/{value(r, '00080018')}")
    page = await (await qido.get(f"/studies/{A.uid}/series/{series}/instances", params={"limit": "2", "offset": "2"})).json()
    assert len(page) == 1
    one = await (await qido.get(f"/studies/{A.uid}/series/{series}/instances",
                                params={"InstanceNumber": "2"})).json()
    assert [value(r, "00200013") for r in one] == [2]


async def test_new_instance_is_found_by_the_next_query(client):
    study_uid, series_uid = generate_uid(), generate_uid()
    for n in range(1, 4):
        assert (await stow(client, [make_instance(study_uid, series_uid, instance_number=n)]))[0] == 200
        [record] = await (await client.get("/studies", params={"StudyInstanceUID": study_uid})).json()
        assert value(record, "00201208") == n
        assert len(await (await client.get(f"/studies/{study_uid}/series/{series_uid}/instances")).json()) == n


# -- every resource, level-aware filters --------------------------------------------------------


async def search(client, path, **params) -> list[dict]:
    resp = await client.get(path, params=params)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_top_level_series(qido):
    records = await search(qido, "/series", limit="1000")
    assert len(records) == sum(len(s.series) for s in ALL)
    mr = await search(qido, "/series", Modality="MR")
    assert sorted(value(r, "0020000E") for r in mr) == sorted([B.series[0][0], C.series[0][0]])
    doe = await search(qido, "/series", PatientName="Doe*", Modality="CT")
    assert {value(r, "0020000D") for r in doe} == uids(A, D) and len(doe) == 3
    assert all(value(r, "00100010") for r in doe)  # the study attribute matched on is returned
    page = await search(qido, "/series", limit="4", offset="3")
    assert [value(r, "0020000E") for r in page] == [value(r, "0020000E") for r in records[3:7]]


async def test_top_level_and_study_instances(qido):
    everything = await search(qido, "/instances", limit="1000")
    assert len(everything) == sum(n for s in ALL for _, _, n in s.series)
    in_a = await search(qido, f"/studies/{A.uid}/instances")
    assert len(in_a) == 5 and {value(r, "0020000D") for r in in_a} == {A.uid}
    ct_of_b = await search(qido, f"/studies/{B.uid}/instances", Modality="CT")
    assert [value(r, "0020000E") for r in ct_of_b] == [B.series[1][0]]
    page = await search(qido, "/instances", limit="5", offset="30")
    assert [value(r, "00080018") for r in page] == [value(r, "00080018") for r in everything[30:35]]
    numbered = await search(qido, "/instances", InstanceNumber="3", PatientID="PAT-1")
    assert [value(r, "0020000D") for r in numbered] == [A.uid]


async def test_study_search_on_series_and_instance_attributes(qido):
    assert sorted(await studies(qido, Modality="MR")) == sorted(uids(B, C))
    assert sorted(await studies(qido, SeriesDescription="MR series*")) == sorted(uids(B, C))
    assert sorted(await studies(qido, SOPClassUID="1.2.840.10008.5.1.4.1.1.4")) == sorted(uids(B, C))
    assert await studies(qido, InstanceNumber="3") == [A.uid]
    assert await studies(qido, InstanceNumber="3", Modality="MR") == []


async def test_study_search_with_series_and_instance_filters_together(qido):
    """Series and instance keys must hold for one instance in one matching series (PS3.4 C.4.1.3.1,
    relational): B has an instance number 2 and a series "CT series 2", but its number 2 is in
    "MR series 1"; A's number 3 is in its first series only."""
    assert await studies(qido, SeriesDescription="CT series 2", InstanceNumber="2") == [A.uid]
    assert await studies(qido, SeriesDescription="CT series 2", InstanceNumber="3") == []
    assert await studies(qido, SeriesDescription="MR series 1", InstanceNumber="2") == [B.uid]
    assert sorted(await studies(qido, SeriesDescription="MR series 1", InstanceNumber="1")) == sorted(uids(B, C))
    assert await studies(qido, SeriesDescription="MR series 1", InstanceNumber="2", PatientID="PAT-3") == []
    # At study level Modality is matched as ModalitiesInStudy (a study attribute), not per series:
    assert sorted(await studies(qido, Modality="CT", InstanceNumber="2")) == sorted(uids(A, B))


async def test_combined_date_time_range(qido):
    # every study was made at 10:15:00 on its date: a date-time range cuts through its first day
    assert await studies(qido, StudyDate="20240102-20240301", StudyTime="1200-") == [D.uid]
    assert sorted(await studies(qido, StudyDate="20240102-20240301", StudyTime="1000-")) == sorted(uids(A, D))
    assert await studies(qido, StudyDate="20240101-20240102", StudyTime="-1015") == [A.uid]


async def test_sequence_and_instance_attributes_need_documents(qido):
    series = A.series[0][0]
    # PixelSpacing is not in the instances view: the documents are read to match and return it
    records = await search(qido, f"/studies/{A.uid}/series/{series}/instances", includefield="00280030",
                           ImagePositionPatient="")
    assert all(r["00280030"]["Value"] == [0.5, 0.5] and "00200032" in r for r in records)
    records = await search(qido, f"/studies/{A.uid}/series/{series}/instances", RescaleIntercept="-1024")
    assert len(records) == 3
    assert await search(qido, f"/studies/{A.uid}/series/{series}/instances", RescaleIntercept="7") == []


async def test_ignored_parameters_are_said(qido):
    resp = await qido.get("/studies", params={"emptyvaluematching": "true", "limit": "2"})
    assert resp.status == 200 and "emptyvaluematching" in resp.headers["Warning"]


async def test_counts_follow_new_instances_in_other_series(client):
    study_uid = generate_uid()
    first, second = generate_uid(), generate_uid()
    await stow(client, [make_instance(study_uid, first, modality="CT")])
    [record] = await search(client, "/studies", StudyInstanceUID=study_uid)
    assert record["00080061"]["Value"] == ["CT"] and value(record, "00201206") == 1
    await stow(client, [make_instance(study_uid, second, modality="MR"), make_instance(study_uid, second, modality="MR")])
    [record] = await search(client, "/studies", StudyInstanceUID=study_uid, Modality="MR")
    assert record["00080061"]["Value"] == ["CT", "MR"]
    assert value(record, "00201206") == 2 and value(record, "00201208") == 3


async def test_other_server_process_sees_stores_of_this_one(make_client, couch_db_name):
    """Two servers on one database: each keeps its own catalog, current from the changes feed."""
    one, two = await make_client(couch_db_name), await make_client(couch_db_name)
    assert await search(two, "/studies") == []
    study_uid = generate_uid()
    await stow(one, [make_instance(study_uid, generate_uid())])
    assert [value(r, "0020000D") for r in await search(two, "/studies")] == [study_uid]


# -- names in other character sets --------------------------------------------------------------

CHARSET_FILES = ["chrArab.dcm", "chrFren.dcm", "chrGerm.dcm", "chrGreek.dcm", "chrH31.dcm", "chrH32.dcm",
                 "chrHbrw.dcm", "chrI2.dcm", "chrKoreanMulti.dcm", "chrRuss.dcm", "chrX1.dcm", "chrX2.dcm"]


@pytest.mark.parametrize("params, files", [
    ({"PatientName": "山田^太郎"}, {"chrH31.dcm", "chrH32.dcm"}),
    ({"PatientName": "やまだ*"}, {"chrH31.dcm", "chrH32.dcm"}),
    ({"PatientName": "Люк*"}, {"chrRuss.dcm"}),
    ({"PatientName": "buc^jérôme"}, {"chrFren.dcm"}),
    ({"PatientName": "jerome", "fuzzymatching": "true"}, {"chrFren.dcm"}),
    ({"PatientName": "äneas*"}, {"chrGerm.dcm"}),
    ({"PatientName": "Διονυσιος"}, {"chrGreek.dcm"}),
    ({"PatientName": "홍*"}, {"chrI2.dcm"}),
    ({"PatientName": "王^小東"}, {"chrX1.dcm"}),
    ({"PatientName": "*dong"}, {"chrX1.dcm", "chrX2.dcm", "chrI2.dcm"}),
])
async def test_names_in_other_character_sets(client, params, files):
    paths = {Path(p).name: p for p in get_charset_files()}
    status, body = await stow(client, [Path(paths[name]).read_bytes() for name in CHARSET_FILES])
    assert status == 200, body
    study_of = {name: pydicom.dcmread(paths[name], stop_before_pixels=True).StudyInstanceUID for name in CHARSET_FILES}
    found = set(await studies(client, **params))
    expected = {study_of[name] for name in files}
    others = {study_of[name] for name in CHARSET_FILES} - expected
    assert expected <= found and not (found & others - expected), params


async def test_sequence_matching_end_to_end(client):
    study_uid, series_uid = generate_uid(), generate_uid()
    other_study = generate_uid()
    await stow(client, [make_instance(study_uid, series_uid, requested_procedure="RP-7"),
                        make_instance(other_study, generate_uid(), requested_procedure="RP-8")])
    found = await search(client, f"/studies/{study_uid}/series", **{"00400275.00401001": "RP-7"})
    assert [value(r, "0020000E") for r in found] == [series_uid]
    assert value(found[0], "00400275")["00401001"]["Value"] == ["RP-7"]  # the sequence is returned
    assert await search(client, f"/studies/{study_uid}/series",
                        **{"RequestAttributesSequence.RequestedProcedureID": "RP-8"}) == []
    assert sorted(await studies(client, **{"00400275.00401001": "RP-*"})) == sorted([study_uid, other_study])
    assert await studies(client, **{"00400275.00401001": "RP-8"}) == [other_study]
