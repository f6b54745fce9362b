"""Two sites, each a CouchDB-API store (a private pouchdb-server) with a server in front, replicating
continuously both ways through ``_replicator`` documents over links that can be cut (tests/link.py):
stores and deletions cross, a study stored while the link is down arrives when it is back, the same
SOP instance stored differently at both sites ends the same at both with the losing revision kept and
reported; a filtered replication; backup and restore into a new database served byte-exact."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pydicom
import pytest
from aiohttp.test_utils import TestClient
from conftest import REPO_ROOT, CouchServer, local_couch
from dicom_factory import make_instance, stow
from link import Link
from pydicom.uid import generate_uid
from wado_helpers import parts

from dicomweb_couch.app import create_app
from dicomweb_couch.settings import Settings

DEADLINE = 60.0  # seconds a replicated change may take here (2 shared cores); measured delays are printed
ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CouchServer, CouchServer]]:
    local_couch.ensure_installed()
    with local_couch.start(tmp_path_factory.mktemp("site-a"), port=0) as a, \
            local_couch.start(tmp_path_factory.mktemp("site-b"), port=0) as b:
        yield CouchServer(a.url), CouchServer(b.url)


@dataclass
class Site:
    couch: CouchServer
    database: str
    client: TestClient
    link: Link  # the way the *other* site reaches this one's store

    @property
    def db_url(self) -> str:
        return f"{self.couch.url}/{self.database}"

    def doc(self, doc_id: str, **query: str) -> tuple[int, Any]:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return self.couch.request("GET", f"{self.database}/{doc_id}" + (f"?{q}" if q else ""))


async def start_site(aiohttp_client: Callable[..., Awaitable[TestClient]], couch: CouchServer, database: str) -> Site:
    client = await aiohttp_client(create_app(Settings(couch_url=couch.url, database=database, couch_wait=30,
                                                      index_refresh=1)))
    link = Link(int(couch.url.rsplit(":", 1)[1]))
    await link.restore()
    return Site(couch, database, client, link)


def replicate(target: Site, source_url: str, **options: Any) -> str:
    """A continuous pull replication kept in the target store's ``_replicator`` database."""
    doc_id = f"pull-{uuid.uuid4().hex}"
    status, body = target.couch.request("PUT", f"_replicator/{doc_id}", {
        "source": source_url, "target": target.db_url, "continuous": True, **options})
    assert status in (201, 202), body
    return doc_id


@pytest.fixture
async def sites(aiohttp_client, stores) -> AsyncIterator[tuple[Site, Site]]:
    """Site A and site B, each pulling from the other through the other's link."""
    name = f"site_{uuid.uuid4().hex}"
    a = await start_site(aiohttp_client, stores[0], name)
    b = await start_site(aiohttp_client, stores[1], name)
    replicate(a, f"{b.link.url}/{name}")
    replicate(b, f"{a.link.url}/{name}")
    yield a, b
    # pouchdb-server 4.2.0 crashes (an uncaught not_found) when a _replicator document is deleted, so
    # the replications and their databases stay until the stores stop at the end of the module; the
    # links are cut, which leaves the replications idle.
    for site in (a, b):
        if site.link.up:
            await site.link.cut()


async def until(check: Callable[[], Awaitable[bool]], deadline: float = DEADLINE) -> float:
    """Seconds until ``check`` holds (polling every 0.1 s); fails after ``deadline``."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < deadline, "not replicated in time"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def found(client: TestClient, study: str, instances: int | None = None) -> bool:
    resp = await client.get("/studies", params={"StudyInstanceUID": study, "includefield": "00201208"})
    if resp.status != 200:
        return False
    rows = await resp.json(content_type=None) or []
    return bool(rows) and (instances is None or rows[0]["00201208"]["Value"] == [instances])


async def retrieve(client: TestClient, study: str) -> dict[str, bytes]:
    resp = await client.get(f"/studies/{study}", headers={"Accept": ANY})
    assert resp.status == 200
    return {pydicom.dcmread(io.BytesIO(p.body)).SOPInstanceUID: p.body for p in await parts(resp)}


def files_of(study: str, count: int, **attrs: Any) -> dict[str, bytes]:
    series = generate_uid()
    out = {}
    for n in range(count):
        sop = generate_uid()
        out[sop] = make_instance(study, series, sop, instance_number=n + 1, **attrs)
    return out


async def test_stored_at_one_site_found_and_retrieved_byte_exact_at_the_other(sites):
    a, b = sites
    study = generate_uid()
    files = files_of(study, 3)
    started = time.monotonic()
    assert (await stow(a.client, files.values()))[0] == 200
    delay = await until(lambda: found(b.client, study, 3))
    print(f"\nreplication A->B: study of 3 instances searchable at B {time.monotonic() - started:.2f} s "
          f"after the STOW began ({delay:.2f} s after it was answered)")
    assert await retrieve(b.client, study) == files
    resp = await b.client.get(f"/studies/{study}/metadata")
    assert resp.status == 200 and len(await resp.json()) == 3

    other = generate_uid()  # and the other way round
    back = files_of(other, 1)
    assert (await stow(b.client, back.values()))[0] == 200
    delay = await until(lambda: found(a.client, other))
    print(f"replication B->A: {delay:.2f} s")
    assert await retrieve(a.client, other) == back


async def test_delete_propagates(sites):
    a, b = sites
    study = generate_uid()
    assert (await stow(a.client, files_of(study, 2).values()))[0] == 200
    await until(lambda: found(b.client, study, 2))
    assert (await b.client.delete(f"/studies/{study}")).status in (200, 204)

    async def gone() -> bool:
        return not await found(a.client, study) and (await a.client.get(f"/studies/{study}/metadata")).status == 404

    print(f"\nDELETE B->A: {await until(gone):.2f} s")


async def test_study_stored_while_the_link_is_down_arrives_when_it_is_back(sites):
    a, b = sites
    await a.link.cut()
    await b.link.cut()
    study = generate_uid()
    files = files_of(study, 2)
    assert (await stow(b.client, files.values()))[0] == 200  # a site works on its own
    await asyncio.sleep(2)
    assert not await found(a.client, study)
    await a.link.restore()
    await b.link.restore()
    delay = await until(lambda: found(a.client, study, 2))
    print(f"\nstudy stored while apart: at the other site {delay:.2f} s after the link came back")
    assert await retrieve(a.client, study) == files


def conflicts_command(site: Site, *options: str) -> tuple[int, Any]:
    done = subprocess.run([sys.executable, "-m", "dicomweb_couch", "conflicts", "--couch-url", site.couch.url,
                           "--database", site.database, *options], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


def attachment(site: Site, doc_id: str, rev: str) -> bytes:
    with urllib.request.urlopen(f"{site.db_url}/{doc_id}/object.dcm?rev={rev}", timeout=30) as resp:
        return resp.read()


async def test_same_instance_stored_differently_while_apart(sites):
    a, b = sites
    await a.link.cut()
    await b.link.cut()
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    at_a = make_instance(study, series, sop, patient_name="Site^A")
    at_b = make_instance(study, series, sop, patient_name="Site^B")
    assert (await stow(a.client, [at_a]))[0] == 200
    assert (await stow(b.client, [at_b]))[0] == 200
    rev_a, rev_b = a.doc(sop)[1]["_rev"], b.doc(sop)[1]["_rev"]
    await a.link.restore()
    await b.link.restore()

    async def converged() -> bool:
        (_, doc_a), (_, doc_b) = a.doc(sop, conflicts="true"), b.doc(sop, conflicts="true")
        return doc_a["_rev"] == doc_b["_rev"] and bool(doc_a.get("_conflicts")) and bool(doc_b.get("_conflicts"))

    print(f"\nconflict replicated both ways in {await until(converged):.2f} s")
    winner, loser = max(rev_a, rev_b), min(rev_a, rev_b)  # CouchDB's rule: same generation, greater id wins
    assert a.doc(sop)[1]["_rev"] == winner
    winning_file, losing_file = (at_a, at_b) if winner == rev_a else (at_b, at_a)

    async def same_answers() -> bool:  # both sites serve the winner, search and retrieve alike
        answers = []
        for site in (a, b):
            resp = await site.client.get("/studies", params={"StudyInstanceUID": study, "includefield": "00100010"})
            rows = [{tag: e for tag, e in row.items() if tag != "00081190"}  # RetrieveURL names the site
                    for row in await resp.json(content_type=None)]
            answers.append(json.dumps(rows, sort_keys=True))
        return answers[0] == answers[1] and ("Site^A" if winning_file is at_a else "Site^B") in answers[0]

    await until(same_answers)
    for site in (a, b):
        assert (await retrieve(site.client, study)) == {sop: winning_file}
        assert attachment(site, sop, loser) == losing_file  # the losing revision is kept, file and all
        code, out = conflicts_command(site, "--json")
        assert code == 1
        [report] = json.loads(out)
        assert report["doc_id"] == sop and report["winner"]["rev"] == winner
        assert [r["rev"] for r in report["losers"]] == [loser]
        assert report["losers"][0]["size"] == len(losing_file)
    code, out = conflicts_command(a)
    assert f"lost {loser}" in out and f"object.dcm?rev={loser}" in out

    code, _ = conflicts_command(a, "--keep-winner")  # resolved at one site, the resolution replicates
    assert code == 0

    async def resolved() -> bool:
        return not b.doc(sop, conflicts="true")[1].get("_conflicts")

    await until(resolved)
    assert conflicts_command(b) == (0, "no conflicting instances\n")
    assert (await retrieve(b.client, study)) == {sop: winning_file}


@pytest.mark.parametrize("name, params, kept", [
    ("qido/modality", {"modality": "CT"}, "CT"),
    ("qido/study_date", {"from": "20240101", "to": "20241231"}, "2024"),
])
async def test_filtered_replication(sites, stores, name, params, kept):
    """A third database pulling from site A only one modality or one StudyDate range, through the filter
    functions the server installs; a deletion passes every filter."""
    a, _ = sites
    files = {"CT": files_of(generate_uid(), 1, modality="CT", study_date="20230105"),
             "MR": files_of(generate_uid(), 1, modality="MR", study_date="20240607")}
    if kept == "2024":
        files = {"2024": files["MR"], "other": files["CT"]}
    [[kept_sop, _]], [[other_sop, _]] = [list(f.items()) for f in (files[kept], next(
        v for k, v in files.items() if k != kept))]
    target = f"filtered_{uuid.uuid4().hex}"
    couch = stores[1]
    assert couch.request("PUT", target)[0] == 201
    status, body = couch.request("PUT", f"_replicator/pull-{uuid.uuid4().hex}", {
        "source": f"{a.link.url}/{a.database}", "target": f"{couch.url}/{target}", "continuous": True,
        "filter": name, "query_params": params})
    assert status in (201, 202), body
    assert (await stow(a.client, [f for batch in files.values() for f in batch.values()]))[0] == 200

    async def arrived() -> bool:
        return couch.request("GET", f"{target}/{kept_sop}")[0] == 200

    print(f"\nfiltered replication ({name}): {await until(arrived):.2f} s")
    await asyncio.sleep(2)
    assert couch.request("GET", f"{target}/{other_sop}")[0] == 404
    study = pydicom.dcmread(io.BytesIO(files[kept][kept_sop])).StudyInstanceUID
    assert (await a.client.delete(f"/studies/{study}")).status in (200, 204)

    async def deleted() -> bool:
        return couch.request("GET", f"{target}/{kept_sop}")[0] == 404

    await until(deleted)


def database_url(couch: CouchServer, database: str) -> str:
    """The database's URL as the replicator needs it: with the credentials (Apache CouchDB 3)."""
    if not couch.user:
        return f"{couch.url}/{database}"
    scheme, rest = couch.url.split("://", 1)
    return f"{scheme}://{quote(couch.user, safe='')}:{quote(couch.password or '', safe='')}@{rest}/{database}"


async def test_backup_and_restore_into_a_new_database(aiohttp_client, couch_server, couch_db_name):
    """Backup = a one-shot replication to another database (any CouchDB); restore = replicating it back into
    a new database, which a server then serves byte-exact."""
    source = await aiohttp_client(create_app(Settings(couch_url=couch_server.url, database=couch_db_name,
                                                      couch_wait=30)))
    studies = {generate_uid(): None for _ in range(3)}
    files: dict[str, bytes] = {}
    for study in studies:
        batch = files_of(study, 4)
        files.update(batch)
        assert (await stow(source, batch.values()))[0] == 200
    backup, restored = f"{couch_db_name}_backup", f"{couch_db_name}_restored"
    try:
        started = time.monotonic()
        status, body = couch_server.request("POST", "_replicate", {
            "source": database_url(couch_server, couch_db_name), "target": database_url(couch_server, backup),
            "create_target": True})
        assert status == 200 and body["ok"], body
        backup_seconds = time.monotonic() - started
        started = time.monotonic()
        status, body = couch_server.request("POST", "_replicate", {
            "source": database_url(couch_server, backup), "target": database_url(couch_server, restored),
            "create_target": True})
        assert status == 200 and body["ok"], body
        restore_seconds = time.monotonic() - started
        print(f"\nbackup of {len(files)} instances ({sum(map(len, files.values()))} bytes): {backup_seconds:.2f} s; "
              f"restore: {restore_seconds:.2f} s")
        server = await aiohttp_client(create_app(Settings(couch_url=couch_server.url, database=restored,
                                                          couch_wait=30)))
        served: dict[str, bytes] = {}
        for study in studies:
            assert await found(server, study, 4)
            served.update(await retrieve(server, study))
        assert served == files
    finally:
        couch_server.request("DELETE", backup)
        couch_server.request("DELETE", restored)
