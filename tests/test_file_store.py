"""The optional file store: Part 10 files in a directory, the documents referring to them by SHA-256.

Everything against the real store (pouchdb-server) and a real server: byte-exact retrieval by
WADO-URI (with Range), WADO-RS and frames; durability under kill -9; deduplication; deletion of
the last reference; orphan sweeping; migration from attachments to files and back, interrupted
and resumed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT, CouchServer, local_couch
from dicom_factory import make_instance, multipart, stow
from pydicom.uid import generate_uid
from wado_helpers import frames_of, multiframe, parts, path, store

from dicomweb_couch.commands import files as files_command
from dicomweb_couch.store.couch import Couch
from dicomweb_couch.store.file_store import FileStore
from dicomweb_couch.store.migrate import TO_ATTACHMENTS, TO_FILES, migrate

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def stored_files(root: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in root.glob("??/??/*.dcm")}


@pytest.fixture
async def files_client(make_client, couch_db_name, tmp_path):
    root = tmp_path / "files"
    client = await make_client(couch_db_name, file_store=str(root))
    client.root = root
    return client


def wado_uri(uids: tuple[str, str, str]) -> dict[str, str]:
    return {"requestType": "WADO", "studyUID": uids[0], "seriesUID": uids[1], "objectUID": uids[2]}


async def open_couch(couch_server: CouchServer, database: str) -> Couch:
    couch = Couch(couch_server.url, database, couch_server.user, couch_server.password)
    await couch.open(30)
    return couch


async def test_stored_in_the_directory_and_served_byte_exact(files_client, couch_server, couch_db_name):
    data = make_instance(generate_uid(), generate_uid(), rows=64, columns=64)
    uids = await store(files_client, data)
    sha256 = hashlib.sha256(data).hexdigest()
    assert stored_files(files_client.root) == {sha256: data}
    _, doc = couch_server.request("GET", f"{couch_db_name}/{uids[2]}")
    assert doc["file"] == {"sha256": sha256, "size": len(data)} and "_attachments" not in doc

    resp = await files_client.get("/wado", params=wado_uri(uids))
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/dicom"
    assert await resp.read() == data
    etag = resp.headers["ETag"]
    resp = await files_client.get("/wado", params=wado_uri(uids), headers={"If-None-Match": etag})
    assert resp.status == 304
    resp = await files_client.head("/wado", params=wado_uri(uids))
    assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(data)

    resp = await files_client.get(path(uids), headers={"Accept": ANY})
    assert [p.body for p in await parts(resp)] == [data]
    resp = await files_client.get("/studies/{}/series/{}".format(*uids[:2]), headers={"Accept": ANY})
    assert [p.body for p in await parts(resp)] == [data]


async def test_range_requests_get_206_with_the_exact_bytes(files_client):
    data = make_instance(generate_uid(), generate_uid(), rows=64, columns=64)
    uids = await store(files_client, data)
    resp = await files_client.get("/wado", params=wado_uri(uids), headers={"Range": "bytes=100-1123"})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes 100-1123/{len(data)}"
    assert await resp.read() == data[100:1124]
    resp = await files_client.get("/wado", params=wado_uri(uids), headers={"Range": "bytes=-10"})
    assert resp.status == 206 and await resp.read() == data[-10:]
    resp = await files_client.get("/wado", params=wado_uri(uids), headers={"Range": f"bytes={len(data) + 5}-"})
    assert resp.status == 416


async def test_frames_come_from_the_file(files_client):
    pixels = frames_of(5)
    uids = await store(files_client, multiframe(pixels))
    resp = await files_client.get(path(uids) + "/frames/2,5", headers={"Accept": FRAMES})
    assert resp.status == 200
    assert [p.body for p in await parts(resp)] == [pixels[1].tobytes(), pixels[4].tobytes()]
    rle = multiframe(pixels, layout="bot")
    uids = await store(files_client, rle)
    decoded = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
    resp = await files_client.get(path(uids) + "/frames/3", headers={"Accept": decoded})
    assert resp.status == 200
    assert (await parts(resp))[0].body == pixels[2].tobytes()


async def test_identical_files_are_stored_once(files_client):
    data = make_instance(generate_uid(), generate_uid())
    await store(files_client, data)
    status, body = await stow(files_client, [data, data])
    assert status == 200, body
    assert list(stored_files(files_client.root).values()) == [data]
    assert not list((files_client.root / "tmp").iterdir())


async def test_delete_removes_the_file_only_with_its_last_reference(files_client, couch_server, couch_db_name):
    first, second = make_instance(generate_uid(), generate_uid()), make_instance(generate_uid(), generate_uid())
    uids, other = await store(files_client, first), await store(files_client, second)
    sha256 = hashlib.sha256(first).hexdigest()
    # a second document referring to the same file (as an older version of an instance, or a copy, would)
    _, doc = couch_server.request("GET", f"{couch_db_name}/{uids[2]}")
    twin = {"file": doc["file"]}
    status, _ = couch_server.request("PUT", f"{couch_db_name}/twin", twin)
    assert status == 201
    resp = await files_client.delete(path(uids))
    assert resp.status == 204
    assert sha256 in stored_files(files_client.root)  # the twin still refers to it
    resp = await files_client.get("/wado", params=wado_uri(uids))
    assert resp.status == 404
    _, twin = couch_server.request("GET", f"{couch_db_name}/twin")
    couch_server.request("DELETE", f"{couch_db_name}/twin?rev={twin['_rev']}")
    resp = await files_client.delete("/studies/" + other[0])
    assert resp.status == 204
    # the other study's file went with its document; the shared one waits for the sweep
    assert set(stored_files(files_client.root)) == {sha256}
    couch = await open_couch(couch_server, couch_db_name)
    try:
        assert await FileStore(couch, files_client.root, grace=0).sweep() == 1
    finally:
        await couch.close()
    assert stored_files(files_client.root) == {}


async def test_a_file_store_serves_one_database(couch_server, couch_db_name, tmp_path):
    couch = await open_couch(couch_server, couch_db_name)
    try:
        FileStore(couch, tmp_path)
        other = Couch(couch_server.url, couch_db_name + "x")
        with pytest.raises(ValueError, match="give each database a file store of its own"):
            FileStore(other, tmp_path)
    finally:
        await couch.close()


async def test_orphans_are_swept_only_after_the_grace(couch_server, couch_db_name, tmp_path):
    couch = await open_couch(couch_server, couch_db_name)
    try:
        store_ = FileStore(couch, tmp_path)
        await store_.install()
        with open(tmp_path / "orphan-source", "w+b") as fp:
            fp.write(b"not referenced by any document")
            sha256, _ = store_.write_file(fp)
        (tmp_path / "tmp" / "left.part").write_bytes(b"a store killed half way")
        assert await store_.sweep() == 0 and store_.path_of(sha256).exists()
        store_.grace = 0
        assert await store_.sweep() == 1
        assert not store_.path_of(sha256).exists() and not list((tmp_path / "tmp").iterdir())
    finally:
        await couch.close()


def test_kill_9_during_stow_leaves_every_acknowledged_instance_with_its_file(couch_server, couch_db_name, tmp_path):
    """The server, storing 8 instances per request, is killed (SIGKILL) mid-way; every instance it
    acknowledged has its document and its file, byte-exact; the leftovers are only orphans."""
    root = tmp_path / "files"
    port = local_couch.free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), DICOMWEB_COUCH_FILE_STORE=str(root))
    cmd = [sys.executable, "-m", "dicomweb_couch", "--port", str(port), "--couch-url", couch_server.url,
           "--database", couch_db_name, "--log-level", "WARNING"]
    if couch_server.user:
        env.update(DICOMWEB_COUCH_COUCH_USER=couch_server.user, DICOMWEB_COUCH_COUCH_PASSWORD=couch_server.password or "")
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    acknowledged: dict[str, bytes] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/studies?limit=1", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        killer = None
        for round_ in range(40):
            files = {generate_uid(): None for _ in range(8)}
            files = {sop: make_instance(generate_uid(), generate_uid(), sop, rows=128, columns=128) for sop in files}
            body, kind = multipart(list(files.values()))
            if round_ == 2:  # kill while a request is being stored, at a moment not chosen by the server
                killer = subprocess.Popen(["sh", "-c", f"sleep 0.{round_ + 1}; kill -9 {server.pid}"])
            request = urllib.request.Request(base + "/studies", data=body, method="POST",
                                             headers={"Content-Type": kind, "Accept": "application/dicom+json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    if resp.status == 200:
                        acknowledged.update(files)
            except OSError:
                break
        assert killer is not None
        killer.wait()
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGKILL)
        server.wait()
    assert server.returncode == -signal.SIGKILL
    assert 16 <= len(acknowledged) < 40 * 8  # the first two requests were acknowledged; the kill came mid-way
    for sop, data in acknowledged.items():
        status, doc = couch_server.request("GET", f"{couch_db_name}/{sop}")
        assert status == 200, sop
        path_ = root / doc["file"]["sha256"][:2] / doc["file"]["sha256"][2:4] / f"{doc['file']['sha256']}.dcm"
        assert path_.read_bytes() == data


async def test_migration_to_files_and_back_interrupted_and_resumed(make_client, couch_server, couch_db_name, tmp_path):
    client = await make_client(couch_db_name)  # attachments
    datas = [make_instance(generate_uid(), generate_uid(), rows=32, columns=32) for _ in range(5)]
    uids = [await store(client, d) for d in datas]
    couch = await open_couch(couch_server, couch_db_name)
    root = tmp_path / "files"
    try:
        store_ = FileStore(couch, root)
        await store_.install()
        first = await migrate(store_, TO_FILES, limit=2)  # interrupted after two
        assert first.moved == 2
        seen = []
        rest = await migrate(store_, TO_FILES, progress=seen.append)  # resumed
        assert rest.moved == 3 and rest.skipped == 4  # the two moved, and the design documents qido and files
        assert sum(seen) == 7
        assert sorted(stored_files(root).values()) == sorted(datas)
        for sop in (u[2] for u in uids):
            _, doc = couch_server.request("GET", f"{couch_db_name}/{sop}")
            assert "file" in doc and "_attachments" not in doc
        files_client = await make_client(couch_db_name, file_store=str(root))
        for u, data in zip(uids, datas, strict=True):
            resp = await files_client.get("/wado", params=wado_uri(u))
            assert await resp.read() == data

        back = await migrate(store_, TO_ATTACHMENTS, limit=1)
        assert back.moved == 1 and back.released == 1
        back = await migrate(store_, TO_ATTACHMENTS)
        assert back.moved == 4 and back.released == 4
        assert stored_files(root) == {}
        for u, data in zip(uids, datas, strict=True):
            resp = await client.get("/wado", params=wado_uri(u))
            assert await resp.read() == data
            _, doc = couch_server.request("GET", f"{couch_db_name}/{u[2]}")
            assert "file" not in doc and "object.dcm" in doc["_attachments"]
    finally:
        await couch.close()


def test_files_command_needs_a_file_store(capsys):
    with pytest.raises(SystemExit) as exit_:
        files_command.main(["to-files", "--couch-url", "http://127.0.0.1:1"])
    assert "file store" in str(exit_.value)


async def test_files_command_migrates(make_client, couch_server, couch_db_name, tmp_path, capsys):
    client = await make_client(couch_db_name)
    data = make_instance(generate_uid(), generate_uid())
    await store(client, data)
    args = ["--couch-url", couch_server.url, "--database", couch_db_name, "--file-store", str(tmp_path), "--quiet"]
    if couch_server.user:
        args += ["--couch-user", couch_server.user, "--couch-password", couch_server.password or ""]
    parsed = files_command.parse_args(["to-files", *args])
    settings = files_command.Settings.load(cli={k: getattr(parsed, k) for k in (
        "file_store", "couch_url", "couch_user", "couch_password", "database")}, environ={})
    assert await files_command.run(parsed, settings) == 0
    assert "1 moved" in capsys.readouterr().out
    assert list(stored_files(tmp_path).values()) == [data]
