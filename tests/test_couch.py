"""store/couch.py, the one module that speaks to CouchDB, against the real store.

Where only Apache CouchDB takes a path (ranged attachment reads, refusing to create a database),
the requests go through ``couch_front.CouchFront``, which forwards everything to the real store and
answers those requests as Apache CouchDB 3 does.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import CouchServer, local_couch
from couch_front import CouchFront

from dicomweb_couch.store import couch as couch_module
from dicomweb_couch.store import design_docs
from dicomweb_couch.store.couch import ATTACHMENT, Couch, CouchRefused, CouchUnavailable


@pytest.fixture
async def couch(couch_server: CouchServer, couch_db_name: str) -> AsyncIterator[Couch]:
    db = Couch(couch_server.url, couch_db_name, couch_server.user, couch_server.password)
    await db.open(wait_seconds=10)
    yield db
    await db.close()


def instance_doc(sop: str, study: str, data: bytes) -> dict[str, Any]:
    return {"_id": sop, "md5hash": hashlib.md5(data).hexdigest(),
            "dataset": {"0020000D": {"vr": "UI", "Value": [study]}, "00080018": {"vr": "UI", "Value": [sop]}}}


async def put(couch: Couch, sop: str, data: bytes, study: str = "1.2.3") -> bool:
    return await couch.store_instance(instance_doc(sop, study, data), io.BytesIO(data), len(data))


async def attachment_bytes(couch: Couch, doc_id: str) -> bytes | None:
    async with couch.attachment(doc_id) as attachment:
        if attachment is None:
            return None
        return b"".join([chunk async for chunk in attachment.chunks])


# -- opening: credentials and database creation refused ---------------------------------------------


async def test_wrong_credentials_are_refused_with_a_clear_error(tmp_path):
    """A real pouchdb-server with an admin (as Apache CouchDB 3 always has): wrong credentials are
    a CouchUnavailable saying so, not a retry loop until the start-up wait runs out."""
    local_couch.ensure_installed()
    with local_couch.start(tmp_path / "couch", port=0) as server:
        assert CouchServer(server.url).request("PUT", "_config/admins/admin", "right")[0] == 200
        couch = Couch(server.url, "archive", "admin", "wrong")
        started = asyncio.get_running_loop().time()
        with pytest.raises(CouchUnavailable, match="refused the credentials"):
            await couch.open(wait_seconds=30)
        assert asyncio.get_running_loop().time() - started < 10
        couch = Couch(server.url, "archive", "admin", "right")
        await couch.open(wait_seconds=10)
        assert (await couch.database_info())["db_name"] == "archive"
        await couch.close()


async def test_database_creation_refused(aiohttp_server, couch_server, couch_db_name):
    front = CouchFront(couch_server.url, refuse_create=True)
    server = await aiohttp_server(front.app())
    couch = Couch(str(server.make_url("")), couch_db_name, couch_server.user, couch_server.password)
    with pytest.raises(CouchUnavailable) as info:
        await couch.open(wait_seconds=5)
    assert f"cannot create or open database {couch_db_name!r}" in str(info.value)
    assert "admin credentials" in str(info.value)


async def test_unreachable_server_is_unavailable_after_the_wait():
    couch = Couch(f"http://127.0.0.1:{local_couch.free_port()}", "archive")
    with pytest.raises(CouchUnavailable, match="did not answer within 1 s"):
        await couch.open(wait_seconds=1)


# -- JSON requests: non-2xx answers ---------------------------------------------------------------


async def test_non_2xx_json_answers_say_outage_or_refusal_with_the_reason(couch):
    """A 404 for a view is an outage-like fault of the deployment (503); a 400 is the store refusing
    this one request (CouchRefused: a 4xx for the client, never a false outage, issue 9 item 8)."""
    for doc_id, content in design_docs.load().items():
        await couch.install_design_doc(doc_id, content)
    with pytest.raises(CouchUnavailable) as info:
        await couch.view("qido", "no_such_view")
    message = str(info.value)
    assert "answered 404" in message and "no_such_view" in message
    assert await couch.get_doc("missing") is None  # a 404 the caller expects is no error
    with pytest.raises(CouchRefused, match="refused .*400") as refused:
        await couch.view("qido", "instances", limit="not-a-number")
    assert refused.value.status == 400 and not isinstance(refused.value, CouchUnavailable)


# -- storing ----------------------------------------------------------------------------------------


async def test_store_is_byte_exact_and_a_repeat_writes_nothing(couch):
    data = bytes(range(256)) * 1000
    assert await put(couch, "2.25.1", data) is True
    rev = (await couch.get_doc("2.25.1"))["_rev"]
    assert await put(couch, "2.25.1", data) is False
    assert (await couch.get_doc("2.25.1"))["_rev"] == rev
    assert await attachment_bytes(couch, "2.25.1") == data


async def test_concurrent_stores_of_one_file_write_it_once(couch):
    data = b"same file" * 5000
    assert await put(couch, "2.25.20", data) is True  # alone: what one store costs in revisions
    one_store = (await couch.get_doc("2.25.20"))["_rev"].split("-")[0]  # 1 on CouchDB, 2 attachment-first
    results = await asyncio.gather(*(put(couch, "2.25.2", data) for _ in range(6)))
    assert sorted(results) == [False] * 5 + [True]
    assert (await couch.get_doc("2.25.2"))["_rev"].startswith(f"{one_store}-")  # written once
    assert await attachment_bytes(couch, "2.25.2") == data


async def test_concurrent_stores_of_different_versions_all_succeed_and_one_wins_whole(couch):
    versions = [bytes([n]) * (10_000 + n) for n in range(4)]
    results = await asyncio.gather(*(put(couch, "2.25.3", v) for v in versions))
    assert results == [True] * 4  # each version was written (and replaced in turn)
    doc = await couch.get_doc("2.25.3")
    kept = await attachment_bytes(couch, "2.25.3")
    assert kept in versions and doc["md5hash"] == hashlib.md5(kept).hexdigest()  # document and file agree
    assert int(doc["_rev"].split("-")[0]) >= 4  # each version was written in turn


async def test_store_after_a_deletion_writes_anew(couch):
    assert await put(couch, "2.25.4", b"first" * 100)
    assert await couch.delete_instances({"2.25.4": "1.2.3"}) == 1
    assert await put(couch, "2.25.4", b"first" * 100) is True
    assert await attachment_bytes(couch, "2.25.4") == b"first" * 100


# -- design documents --------------------------------------------------------------------------------


async def test_concurrent_design_document_installs(couch):
    """Several server processes starting together install the design document once between them."""
    [(doc_id, content)] = design_docs.load().items()
    results = await asyncio.gather(*(couch.install_design_doc(doc_id, content) for _ in range(5)))
    assert any(results)
    stored = await couch.get_doc(doc_id)
    assert stored["views"] == content["views"] and stored["_rev"].startswith(f"{sum(results)}-")
    assert await couch.install_design_doc(doc_id, content) is False  # unchanged: not rewritten
    changed = {**content, "views": {**content["views"], "extra": {"map": "function (doc) {}"}}}
    results = await asyncio.gather(*(couch.install_design_doc(doc_id, changed) for _ in range(3)))
    assert any(results)
    assert set((await couch.get_doc(doc_id))["views"]) == set(changed["views"])


# -- bulk deletion ---------------------------------------------------------------------------------


async def test_delete_past_one_batch_keeps_the_study_in_each_tombstone(couch, monkeypatch):
    monkeypatch.setattr(couch_module, "_DELETE_BATCH", 3)
    ids = {f"2.25.10{i}": f"1.2.{i % 2}" for i in range(8)}
    for sop, study in ids.items():
        assert await put(couch, sop, sop.encode() * 10, study)
    assert await couch.delete_instances({**ids, "2.25.999": "1.2.9"}) == 8  # a missing one is no error
    for sop in ids:
        assert await couch.get_doc(sop) is None
    tombstones = await couch.latest_revisions(sorted(ids))
    assert {t["_id"]: t["dataset"]["0020000D"]["Value"][0] for t in tombstones} == ids
    assert all(t["_deleted"] for t in tombstones)
    assert await couch.delete_instances(ids) == 0  # already gone


async def test_delete_retries_a_document_changed_meanwhile(couch, couch_server, monkeypatch):
    """A document rewritten between reading its revision and deleting it is deleted with its new
    revision; one rewritten every time ends in CouchUnavailable, not a silent partial delete."""
    for sop in ("2.25.201", "2.25.202"):
        assert await put(couch, sop, sop.encode() * 10)
    real_request = couch._request
    rewrites = {"2.25.201": 1, "2.25.202": 0}

    async def request_racing_a_writer(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        answer = await real_request(method, url, **kwargs)
        if url.endswith("/_all_docs"):
            for sop, left in rewrites.items():
                if left:
                    rewrites[sop] -= 1
                    doc = await couch.get_doc(sop)
                    status, _ = await asyncio.to_thread(couch_server.request, "PUT",
                                                        f"{couch.database}/{sop}", {**doc, "touched": True})
                    assert status == 201
        return answer

    monkeypatch.setattr(couch, "_request", request_racing_a_writer)
    assert await couch.delete_instances({"2.25.201": "1.2.3", "2.25.202": "1.2.3"}) == 2
    assert rewrites["2.25.201"] == 0  # the race did happen
    assert await couch.get_doc("2.25.201") is None and await couch.get_doc("2.25.202") is None

    assert await put(couch, "2.25.203", b"x" * 100)
    rewrites.clear()
    rewrites["2.25.203"] = 100
    with pytest.raises(CouchUnavailable, match="kept conflicting"):
        await couch.delete_instances({"2.25.203": "1.2.3"})
    assert rewrites["2.25.203"] == 95  # five rounds, then it gave up


# -- reading attachments: whole, and from an offset (the Range / 206 path) ------------------------------


async def test_attachment_etag_and_missing(couch):
    data = b"etag test" * 100
    assert await put(couch, "2.25.301", data)
    async with couch.attachment("2.25.301") as attachment:
        assert attachment.status == 200 and attachment.length == len(data) and attachment.etag
        etag = attachment.etag
        assert b"".join([c async for c in attachment.chunks]) == data
    async with couch.attachment("2.25.301", if_none_match=etag) as attachment:
        assert attachment.status == 304 and attachment.length is None
    async with couch.attachment("2.25.404") as attachment:
        assert attachment is None
    async with couch.attachment_from("2.25.404", 10) as stream:
        assert stream is None


async def read_from(couch: Couch, doc_id: str, offset: int) -> tuple[int, bytes]:
    async with couch.attachment_from(doc_id, offset) as stream:
        data = bytearray()
        while chunk := await stream.read(65536):
            data += chunk
        return stream.size, bytes(data)


async def test_read_from_an_offset_where_ranges_are_ignored(couch):
    """pouchdb-server answers 200 with the whole attachment: the first bytes are dropped here."""
    data = bytes(range(256)) * 4096  # 1 MiB
    assert await put(couch, "2.25.401", data)
    assert await read_from(couch, "2.25.401", 0) == (len(data), data)
    assert couch.ranges_honoured is None  # no ranged read asked yet
    assert await read_from(couch, "2.25.401", 300_001) == (len(data), data[300_001:])
    assert couch.ranges_honoured is False


async def test_read_from_an_offset_where_ranges_are_honoured(aiohttp_server, couch_server, couch_db_name):
    """Apache CouchDB answers a ranged read with 206 and Content-Range: the production code path,
    through a front that answers as it does (see couch_front)."""
    front = CouchFront(couch_server.url, ranges=True)
    server = await aiohttp_server(front.app())
    couch = Couch(str(server.make_url("")), couch_db_name, couch_server.user, couch_server.password)
    await couch.open(wait_seconds=10)
    try:
        data = bytes(range(256)) * 4096
        assert await put(couch, "2.25.402", data)
        assert await read_from(couch, "2.25.402", 300_001) == (len(data), data[300_001:])
        assert couch.ranges_honoured is True
        assert ("GET", f"/{couch_db_name}/2.25.402/{ATTACHMENT}", "bytes=300001-") in front.requests
    finally:
        await couch.close()
