"""The study catalog on disk (issue 14): checkpoint and restart, rebuild from CouchDB, several
processes on one database, a first start on an existing database, and the event loop kept free.
Real pouchdb-server throughout; each "process" is a server app with its own catalog file."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

import pytest
from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid

from dicomweb_couch.appkeys import CATALOG
from dicomweb_couch.search import catalog as catalog_module
from dicomweb_couch.search.catalog_store import CatalogStore


def instance_doc(study: str, series: str, sop: str, name: str = "Bulk^Loaded") -> dict:
    """A document in the layout STOW writes (what an import straight into CouchDB leaves)."""
    return {"_id": sop, "dataset": {
        "0020000D": {"vr": "UI", "Value": [study]}, "0020000E": {"vr": "UI", "Value": [series]},
        "00080018": {"vr": "UI", "Value": [sop]}, "00080060": {"vr": "CS", "Value": ["CT"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]}, "00100020": {"vr": "LO", "Value": ["BULK"]}}}


def bulk_load(couch_server, database: str, studies: int, per_study: int) -> list[str]:
    couch_server.request("PUT", f"/{database}")
    uids = [generate_uid() for _ in range(studies)]
    docs = [instance_doc(study, study + ".1", f"{study}.1.{i}") for study in uids for i in range(per_study)]
    for start in range(0, len(docs), 500):
        status, _ = couch_server.request("POST", f"/{database}/_bulk_docs", {"docs": docs[start:start + 500]})
        assert status == 201
    return uids


async def study_uids(client, **params) -> list[str]:
    resp = await client.get("/studies", params=params)
    assert resp.status == 200, await resp.text()
    return [r["0020000D"]["Value"][0] for r in await resp.json()]


async def test_restart_replays_only_the_changes_since_its_checkpoint(make_client, couch_db_name, couch_server,
                                                                     tmp_path):
    path = str(tmp_path / "one.sqlite3")
    first = await make_client(couch_db_name, catalog_path=path)
    studies = [generate_uid() for _ in range(3)]
    for study in studies:
        assert (await stow(first, [make_instance(study, generate_uid())]))[0] == 200
    assert sorted(await study_uids(first)) == sorted(studies)
    await first.close()

    late = generate_uid()  # written while no server runs
    assert couch_server.request("PUT", f"/{couch_db_name}/{late}.1",
                                instance_doc(late, late + ".1", late + ".1"))[0] == 201
    again = await make_client(couch_db_name, catalog_path=path)
    catalog = again.app[CATALOG]
    assert catalog.ready  # from the file: searches need not wait for a re-read
    assert await catalog.refresh() == 1  # the one change since the checkpoint, not the whole database
    assert sorted(await study_uids(again)) == sorted(studies + [late])


@pytest.mark.parametrize("damage", ["garbage", "other database"])
async def test_a_missing_or_unusable_file_is_rebuilt_from_couchdb(make_client, couch_db_name, tmp_path, caplog,
                                                                  damage):
    caplog.set_level(logging.WARNING, "dicomweb_couch.search.catalog")
    path = tmp_path / "catalog.sqlite3"
    first = await make_client(couch_db_name, catalog_path=str(path))
    study = generate_uid()
    assert (await stow(first, [make_instance(study, generate_uid())]))[0] == 200
    assert await study_uids(first) == [study]
    await first.close()
    if damage == "garbage":
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        path.write_bytes(b"not a database at all" * 1000)
    else:
        with sqlite3.connect(path) as db:  # the file of another database (a copied config, a moved file)
            db.execute("UPDATE meta SET value = 'http://elsewhere:5984/other' WHERE key = 'source'")
    again = await make_client(couch_db_name, catalog_path=str(path))
    assert await study_uids(again) == [study]
    assert "rebuilding it from CouchDB" in caplog.text
    (path.unlink(), path.with_name(path.name + "-wal").unlink(missing_ok=True))  # gone altogether: rebuilt too
    await again.close()
    third = await make_client(couch_db_name, catalog_path=str(path))
    assert await study_uids(third) == [study]


async def test_two_processes_see_each_others_stow_and_delete_within_a_second(make_client, couch_db_name):
    one = await make_client(couch_db_name)
    two = await make_client(couch_db_name)
    assert one.app[CATALOG].path != two.app[CATALOG].path
    study = generate_uid()
    assert await study_uids(two) == []
    assert (await stow(one, [make_instance(study, generate_uid())]))[0] == 200
    started = time.monotonic()
    assert await study_uids(two) == [study]  # the next search, not eventually
    assert time.monotonic() - started < 1.0
    assert (await two.delete(f"/studies/{study}")).status in (200, 202, 204)
    started = time.monotonic()
    assert await study_uids(one) == []
    assert time.monotonic() - started < 1.0


async def test_first_start_on_a_large_database_answers_503_and_reports_progress(
        make_client, couch_db_name, couch_server, monkeypatch, caplog):
    """A new server on an existing database catches up in the background: searches get 503 with
    Retry-After (at once, not after a wait), the log says how far it is, then searches answer."""
    bulk_load(couch_server, couch_db_name, 30, 10)
    monkeypatch.setattr(catalog_module, "CHANGES_BATCH", 20)
    monkeypatch.setattr(catalog_module, "PROGRESS_EVERY", 0.0)
    apply = CatalogStore.apply

    def slow_apply(self, changes, seq):  # a large database: catching up takes a while
        time.sleep(0.1)
        return apply(self, changes, seq)

    monkeypatch.setattr(CatalogStore, "apply", slow_apply)
    caplog.set_level(logging.INFO, "dicomweb_couch.search.catalog")
    client = await make_client(couch_db_name, index_refresh=0.2)
    started = time.monotonic()
    resp = await client.get("/studies")
    assert resp.status == 503 and resp.headers["Retry-After"] == "10"
    assert time.monotonic() - started < 1.0
    assert "being built" in (await resp.json())["message"]
    ready = await client.get("/readyz")  # a load balancer sends the traffic elsewhere meanwhile
    assert ready.status == 503 and "study catalog catching up" in (await ready.text())
    assert (await client.get("/healthz")).status == 200
    while (resp := await client.get("/studies", params={"limit": "100"})).status == 503:
        await asyncio.sleep(0.2)
    assert resp.status == 200 and len(await resp.json()) == 30
    assert "of about 301 documents" in caplog.text and "study catalog ready: 30 studies, 300 instances" in caplog.text


async def test_the_event_loop_keeps_running_while_the_catalog_loads(make_client, couch_db_name, couch_server):
    """The catch-up's SQLite work runs in a thread: a ticker on the loop keeps ticking. (A loose
    bound: the machine is shared; bench/scale.py measures the real figure.)"""
    bulk_load(couch_server, couch_db_name, 200, 10)
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - t - 0.005)

    ticking = asyncio.ensure_future(ticker())
    client = await make_client(couch_db_name, index_refresh=3600)
    await client.app[CATALOG].refresh()
    stop.set()
    await ticking
    assert len(await study_uids(client, limit="1000")) == 200
    assert max(lags) < 0.5, f"the loop stalled {max(lags) * 1000:.0f} ms"
