"""The study catalog: its index look-ups (pure), and how it follows the database (real store)."""

from __future__ import annotations

import asyncio

import pytest
from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid

from dicomweb_couch.appkeys import CATALOG, COUCH
from dicomweb_couch.search import catalog_store
from dicomweb_couch.search.catalog import CatalogNotReady, StudyCatalog
from dicomweb_couch.search.catalog_store import CatalogStore
from dicomweb_couch.store.couch import Couch


def change(uid: str, name: str, pid: str, date: str, modality: str, n: int) -> dict:
    dataset = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": name, "Ideographic": name.upper() + "=I"}]},
               "00100020": {"vr": "LO", "Value": [pid]}, "00080020": {"vr": "DA", "Value": [date]},
               "0020000D": {"vr": "UI", "Value": [uid]}, "0020000E": {"vr": "UI", "Value": [uid + ".1"]},
               "00080060": {"vr": "CS", "Value": [modality]}}
    return {"id": f"{uid}.{n}", "doc": {"dataset": dataset}}


@pytest.fixture
def store(tmp_path) -> CatalogStore:
    store = CatalogStore(tmp_path / "catalog.sqlite3", "test")
    store.apply([change("1.1", "Doe^John", "P1", "20200101", "CT", 1), change("1.1", "Doe^John", "P1", "20200101", "CT", 2),
                 change("1.2", "Doering^Ann", "P2", "20210615", "MR", 1), change("1.2", "Doering^Ann", "P2", "20210615", "CT", 2),
                 change("1.3", "Smith^Doe", "P1", "20221231", "PT", 1)], "seq-1")
    return store


def uids(store: CatalogStore, *conditions: catalog_store.Condition) -> set[str]:
    return {s.uid for s in store.find(list(conditions), [], None, 0, 100)[0]}


def test_exact_values(store):
    assert uids(store, catalog_store.exact("00100020", ["P1"])) == {"1.1", "1.3"}
    assert uids(store, catalog_store.exact("00100020", ["p1"])) == set()
    assert uids(store, catalog_store.exact("00080061", ["CT"])) == {"1.1", "1.2"}


def test_ranges_are_inclusive_and_open_ended(store):
    assert uids(store, catalog_store.between("00080020", "20200101", "20210615")) == {"1.1", "1.2"}
    assert uids(store, catalog_store.between("00080020", "20210616", None)) == {"1.3"}
    assert uids(store, catalog_store.between("00080020", "", "20191231")) == set()


def test_names_by_whole_name_and_component_prefix(store):
    assert uids(store, catalog_store.between("00100010", "DOE", "DOE\uffff")) == {"1.1", "1.2", "1.3"}
    assert uids(store, catalog_store.between("00100010", "DOE^", "DOE^\uffff")) == {"1.1"}
    assert uids(store, catalog_store.between("00100010", "SMITH", "SMITH\uffff")) == {"1.3"}


def test_summary_dataset_has_the_computed_attributes(store):
    study = store.get("1.2")
    assert study.dataset["00080061"]["Value"] == ["CT", "MR"]
    assert study.dataset["00201208"]["Value"] == [2] and study.dataset["00201206"]["Value"] == [1]
    assert store.checkpoint() == "seq-1"


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


async def test_catalog_replays_a_backlog_larger_than_a_batch(client, monkeypatch):
    """More changes than one _changes request reads: the catalog reads on until it has them all."""
    monkeypatch.setattr("dicomweb_couch.search.catalog.CHANGES_BATCH", 2)
    study, series = generate_uid(), generate_uid()
    await client.get("/studies")
    assert (await stow(client, [make_instance(study, series, instance_number=i) for i in range(5)]))[0] == 200
    [record] = await (await client.get("/studies")).json()
    assert record["00201208"]["Value"] == [5]
    assert await client.app[CATALOG].get(study) is not None


async def test_a_slow_first_read_is_not_waited_for(client, tmp_path):
    """With no patience, a catalog that was never read says so (the search answers 503), and one
    that was read answers from its last state while it updates (the search adds a Warning)."""
    catalog = StudyCatalog(client.app[COUCH], tmp_path / "catalog.sqlite3")
    with pytest.raises(CatalogNotReady):
        await catalog.current(patience=0)
    await catalog.refresh()
    assert await catalog.current(patience=0) is True  # stale: not waited for
    assert await catalog.current(patience=5) is False
    assert await catalog.totals() == (0, 0)
    await catalog.close()


async def test_search_during_index_update_answers_at_once(make_client, couch_db_name, monkeypatch):
    """With no patience: while the first catch-up runs, a search is 503 with Retry-After; once it has
    run, a search answers from the last state while the next update runs (Warning). The first
    catch-up is held back here until the 503 has been seen, so both branches are taken every time."""
    release = asyncio.Event()
    real_changes = Couch.changes_with_docs

    async def held_changes(self, *args, **kwargs):
        await release.wait()
        return await real_changes(self, *args, **kwargs)

    monkeypatch.setattr(Couch, "changes_with_docs", held_changes)
    client = await make_client(couch_db_name, index_patience=0)
    resp = await client.get("/studies")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "10" and "being built" in (await resp.json())["message"]
    release.set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (resp := await client.get("/studies")).status == 503:
        assert loop.time() < deadline, "the first catch-up did not finish"
        await asyncio.sleep(0.1)
    resp = await client.get("/studies")  # caught up once: from now on the last state, at once
    assert resp.status == 200 and "being updated" in resp.headers["Warning"]
    assert await resp.json() == []
