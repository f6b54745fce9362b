"""The study catalog: its index look-ups (pure), and how it follows the database (real store)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest
from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid

from dicomweb_couch.appkeys import CATALOG, COUCH
from dicomweb_couch.search import catalog as catalog_module
from dicomweb_couch.search.catalog import CatalogNotReady, StudyCatalog, StudyIndex, StudySummary


def summary(uid: str, name: str, pid: str, date: str, modalities: set[str]) -> StudySummary:
    attrs = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": name, "Ideographic": name.upper() + "=I"}]},
             "00100020": {"vr": "LO", "Value": [pid]}, "00080020": {"vr": "DA", "Value": [date]}}
    study = StudySummary(uid, modalities=modalities, series={"1"})
    study.variants[json.dumps(attrs)] = 3
    return study


INDEX = StudyIndex([
    summary("1.1", "Doe^John", "P1", "20200101", {"CT"}),
    summary("1.2", "Doering^Ann", "P2", "20210615", {"MR", "CT"}),
    summary("1.3", "Smith^Doe", "P1", "20221231", {"PT"}),
])


def test_exact_values():
    assert INDEX.exact("00100020", "P1") == {"1.1", "1.3"}
    assert INDEX.exact("00100020", "p1") == set()
    assert INDEX.exact("00080061", "CT") == {"1.1", "1.2"}


def test_ranges_are_inclusive_and_open_ended():
    assert INDEX.between("00080020", "20200101", "20210615") == {"1.1", "1.2"}
    assert INDEX.between("00080020", "20210616", None) == {"1.3"}
    assert INDEX.between("00080020", "", "20191231") == set()


def test_names_by_whole_name_and_component_prefix():
    assert INDEX.between("00100010", "DOE", "DOE\uffff") == {"1.1", "1.2", "1.3"}  # Smith^Doe by component
    assert INDEX.between("00100010", "DOE^", "DOE^\uffff") == {"1.1"}
    assert INDEX.between("00100010", "SMITH", "SMITH\uffff") == {"1.3"}


def test_summary_dataset_has_the_computed_attributes():
    study = summary("1.2", "Doering^Ann", "P2", "20210615", {"MR", "CT"})
    assert study.dataset["00080061"]["Value"] == ["CT", "MR"]
    assert study.dataset["00201208"]["Value"] == [3] and study.dataset["00201206"]["Value"] == [1]


async def test_deletion_behind_the_servers_back_is_seen(client, couch_server, couch_db_name):
    """A tombstone without the study UID (a delete made directly in CouchDB) makes the catalog
    re-read itself: the counts are right on the next search."""
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    assert (await stow(client, [make_instance(study, series, sop) for sop in sops]))[0] == 200
    [record] = await (await client.get("/studies", params={"StudyInstanceUID": study})).json()
    assert record["00201208"]["Value"] == [3]
    status, doc = couch_server.request("GET", f"/{couch_db_name}/{sops[0]}")
    assert couch_server.request("DELETE", f"/{couch_db_name}/{sops[0]}?rev={doc['_rev']}")[0] == 200
    [record] = await (await client.get("/studies", params={"StudyInstanceUID": study})).json()
    assert record["00201208"]["Value"] == [2]


def catalog_reads(caplog: pytest.LogCaptureFixture) -> int:
    """How often a catalog was read whole from the view so far (it logs each full read)."""
    return sum("reading the study catalog" in r.getMessage() for r in caplog.records)


async def test_catalog_survives_a_large_backlog(client, monkeypatch, caplog):
    """More changes than worth replaying: the catalog re-reads the view instead; fewer are replayed."""
    caplog.set_level(logging.INFO, logger="dicomweb_couch.search.catalog")
    monkeypatch.setattr("dicomweb_couch.search.catalog.REBUILD_AFTER", 2)
    assert (await client.get("/studies")).status == 200
    reads = catalog_reads(caplog)
    assert reads >= 1
    small = generate_uid()
    assert (await stow(client, [make_instance(small, generate_uid())]))[0] == 200
    [record] = await (await client.get("/studies")).json()
    assert record["00201208"]["Value"] == [1]
    assert catalog_reads(caplog) == reads  # one change: replayed
    study, series = generate_uid(), generate_uid()
    assert (await stow(client, [make_instance(study, series, instance_number=i) for i in range(5)]))[0] == 200
    records = await (await client.get("/studies", params={"StudyInstanceUID": study})).json()
    assert [r["00201208"]["Value"] for r in records] == [[5]]
    assert catalog_reads(caplog) == reads + 1  # five changes: read again
    assert client.app[CATALOG].get(study) is not None


async def test_replay_of_several_batches_of_changes(client, monkeypatch, caplog):
    """A backlog longer than one ``_changes`` batch is replayed batch after batch, every study kept."""
    caplog.set_level(logging.INFO, logger="dicomweb_couch.search.catalog")
    monkeypatch.setattr("dicomweb_couch.search.catalog.CHANGES_BATCH", 2)
    couch = client.app[COUCH]
    calls = []
    real_changes = couch.changes

    async def counted_changes(since, limit):
        calls.append(limit)
        return await real_changes(since, limit)

    monkeypatch.setattr(couch, "changes", counted_changes)
    assert (await client.get("/studies")).status == 200
    reads = catalog_reads(caplog)
    studies = {generate_uid(): n for n in (1, 2, 3, 1, 2)}
    for study, count in studies.items():
        files = [make_instance(study, generate_uid(), instance_number=i) for i in range(count)]
        assert (await stow(client, files))[0] == 200
    calls.clear()
    records = await (await client.get("/studies")).json()
    assert {r["0020000D"]["Value"][0]: r["00201208"]["Value"][0] for r in records} == studies
    assert len(calls) >= 5 and set(calls) == {2}  # 9 changes, 2 at a time
    assert catalog_reads(caplog) == reads  # replayed, not read again


async def test_background_refresher_fails_and_retries(client, caplog):
    """While CouchDB is unreachable the background refresher logs and tries again; once it is back
    the catalog catches up by itself."""
    caplog.set_level(logging.WARNING)
    couch = client.app[COUCH]
    catalog = StudyCatalog(couch)
    study = generate_uid()
    assert (await stow(client, [make_instance(study, generate_uid())]))[0] == 200
    real_url = couch.url
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        couch.url = f"http://127.0.0.1:{s.getsockname()[1]}"
    warm = asyncio.create_task(catalog.keep_warm(0.05))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while sum("background index update failed" in r.getMessage() for r in caplog.records) < 2:
            assert loop.time() < deadline, "the refresher did not try again"
            await asyncio.sleep(0.05)
        assert catalog.get(study) is None
        couch.url = real_url
        while catalog.get(study) is None:
            assert loop.time() < deadline, "the refresher did not recover"
            await asyncio.sleep(0.05)
    finally:
        couch.url = real_url
        warm.cancel()
        await asyncio.gather(warm, return_exceptions=True)
    assert catalog.get(study).instances == 1


async def test_a_slow_first_read_is_not_waited_for(client):
    """With no patience, a catalog that was never read says so (the search answers 503), and one
    that was read answers from its last state while it updates (the search adds a Warning)."""
    catalog = StudyCatalog(client.app[COUCH])
    with pytest.raises(CatalogNotReady):
        await catalog.current(patience=0)
    await catalog.refresh()
    studies, stale = await catalog.current(patience=0)
    assert studies == [] and stale
    assert (await catalog.current(patience=5))[1] is False


async def test_search_during_index_update_answers_at_once(make_client, couch_db_name, monkeypatch):
    """With no patience: while the first read runs, a search is 503 with Retry-After; once it has
    run, a search answers from it while the next update runs (Warning). The first read is held
    back here until the 503 has been seen, so both branches are taken every time."""
    release = asyncio.Event()
    real_study_rows = catalog_module.study_rows

    async def held_study_rows(couch, uid=None):
        await release.wait()
        return await real_study_rows(couch, uid)

    monkeypatch.setattr(catalog_module, "study_rows", held_study_rows)
    client = await make_client(couch_db_name, index_patience=0)
    resp = await client.get("/studies")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "10" and "being built" in (await resp.json())["message"]
    release.set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (resp := await client.get("/studies")).status == 503:
        assert loop.time() < deadline, "the first read did not finish"
        await asyncio.sleep(0.1)
    assert resp.status == 200 and "being updated" in resp.headers["Warning"]
    assert await resp.json() == []
