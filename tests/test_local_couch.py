"""The CouchDB-API store the tests run against, and scripts/local_couch.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT, CouchServer, local_couch, temporary_database


def test_server_answers_root_with_json(couch_server: CouchServer) -> None:
    status, body = couch_server.request("GET", "/")
    assert status == 200
    assert isinstance(body, dict)
    assert "couchdb" in body or "express-pouchdb" in body
    assert "version" in body


def test_create_db_put_and_get_doc(couch_server: CouchServer, couch_db_name: str) -> None:
    status, body = couch_server.request("PUT", couch_db_name)
    assert status in (201, 202), body

    doc = {"kind": "test", "values": [1, 2, 3], "text": "Grüße"}
    status, body = couch_server.request("PUT", f"{couch_db_name}/doc1", doc)
    assert status in (201, 202), body
    assert body["ok"] is True
    rev = body["rev"]

    status, body = couch_server.request("GET", f"{couch_db_name}/doc1")
    assert status == 200
    assert body["_id"] == "doc1"
    assert body["_rev"] == rev
    assert {k: body[k] for k in doc} == doc


def test_db_name_fixture_cleans_up(couch_server: CouchServer, couch_db_name: str) -> None:
    """The fixture names a database it did not create, and deletes it, with what the test put in
    it, at the end (``temporary_database`` is what the fixture runs)."""
    assert couch_db_name.startswith("test_")
    status, _ = couch_server.request("GET", couch_db_name)
    assert status == 404  # not created by the fixture
    with temporary_database(couch_server) as name:
        assert name != couch_db_name
        assert couch_server.request("PUT", name)[0] in (201, 202)
        assert couch_server.request("PUT", f"{name}/doc", {"a": 1})[0] in (201, 202)
    assert couch_server.request("GET", name)[0] == 404
    assert name not in couch_server.request("GET", "_all_dbs")[1]
    with temporary_database(couch_server) as never_created:
        pass  # a database the test never made is no error
    assert couch_server.request("GET", never_created)[0] == 404


def test_local_store_keeps_everything_in_its_data_dir(local_couch_store: Any) -> None:
    if local_couch_store is None:
        pytest.skip("DICOMWEB_COUCH_TEST_URL: an external server, not a local pouchdb-server")
    data: Path = local_couch_store.data_dir
    names = {p.name for p in data.iterdir()}
    assert {"config.json", "log.txt", "_users", "pouch__all_dbs__"} <= names
    assert list((data / "_users").glob("*.log")), "LevelDB files in the data folder"
    assert "GET / " in (data / "log.txt").read_text()


def test_start_writes_nothing_into_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("DICOMWEB_COUCH_TEST_URL"):
        pytest.skip("DICOMWEB_COUCH_TEST_URL: no local pouchdb-server in this run")
    local_couch.ensure_installed()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    repo_before = set(os.listdir(REPO_ROOT))
    with local_couch.start(tmp_path / "data", port=0) as couch:
        assert local_couch.server_info(couch.url) is not None
        server = CouchServer(couch.url)
        assert server.request("PUT", "somedb")[0] == 201
        assert (tmp_path / "data" / "somedb" / "CURRENT").exists()
        assert (tmp_path / "data" / ".tmp").is_dir()  # its TMPDIR
    assert not couch.running()
    assert list(cwd.iterdir()) == []
    new_in_repo = set(os.listdir(REPO_ROOT)) - repo_before
    assert not new_in_repo & {"config.json", "log.txt", "pouchdb-server.out", "somedb"}
    assert not (tmp_path / "data" / ".tmp").exists()  # emptied at stop
