"""The landing page ``/``: status for a person (HTML) or a health check (JSON); WADO-URI when asked."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient
from conftest import local_couch
from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid
from test_viewer import write_build

from dicomweb_couch import __version__
from dicomweb_couch.app import create_app
from dicomweb_couch.settings import Settings
from dicomweb_couch.web.landing import without_credentials


async def store_two_studies(client: TestClient) -> None:
    first, second = generate_uid(), generate_uid()
    files = [make_instance(first, generate_uid()), make_instance(first, generate_uid()),
             make_instance(second, generate_uid())]
    assert (await stow(client, files))[0] == 200


async def test_page_shows_status_and_links_to_the_viewer(make_client, couch_db_name, tmp_path):
    client = await make_client(couch_db_name, ohif_dir=str(write_build(tmp_path / "ohif")))
    await store_two_studies(client)
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert f"dicomweb_couch {__version__}" in page
    assert "<td class=ok>reachable</td>" in page
    assert f"database <b>{couch_db_name}</b>: 2 studies, 3 instances" in page
    assert '<a href="/ohif/">open the OHIF Viewer</a>' in page
    assert f"<code>{str(client.make_url('')).rstrip('/')}/wado</code>" in page


async def test_health_check_gets_json(make_client, couch_db_name, tmp_path):
    client = await make_client(couch_db_name, ohif_dir=str(tmp_path / "none"))
    await store_two_studies(client)
    resp = await client.get("/", headers={"Accept": "application/json"})
    assert resp.status == 200
    body = await resp.json()
    assert body["server"] == "dicomweb_couch" and body["version"] == __version__
    assert body["database"] == couch_db_name
    assert (body["studies"], body["instances"], body["couch_error"]) == (2, 3, None)
    assert "no index.html" in body["viewer_error"]


async def test_page_says_when_the_viewer_is_missing(make_client, couch_db_name, tmp_path):
    client = await make_client(couch_db_name, ohif_dir=str(tmp_path / "none"))
    assert (await stow(client, [make_instance(generate_uid(), generate_uid())]))[0] == 200
    page = await (await client.get("/")).text()
    assert f"database <b>{couch_db_name}</b>: 1 study, 1 instance</td>" in page
    assert "<td class=bad>not available</td>" in page
    assert '<a href="/ohif/">how to install</a>' in page


async def test_query_at_the_root_is_wado_uri(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_instance(study, series, sop)
    assert (await stow(client, [data]))[0] == 200
    resp = await client.get("/", params={"requestType": "WADO", "studyUID": study, "seriesUID": series,
                                         "objectUID": sop})
    assert resp.status == 200 and await resp.read() == data
    bad = await client.get("/", params={"requestType": "WADO"})
    assert bad.status == 400 and "studyUID" in (await bad.json())["message"]


async def test_503_when_couchdb_stops_answering(aiohttp_client, tmp_path):
    """A CouchDB of its own, stopped under the running server."""
    local_couch.ensure_installed()
    with local_couch.start(tmp_path / "couch", port=0) as own:
        client = await aiohttp_client(create_app(Settings(couch_url=own.url, database="landing", couch_wait=10)))
        assert (await client.get("/")).status == 200
    resp = await client.get("/")
    assert resp.status == 503
    page = await resp.text()
    assert "<td class=bad>unavailable</td>" in page and "database is unavailable" in page
    health = await client.get("/", headers={"Accept": "application/json"})
    body = await health.json()
    assert health.status == 503 and "database is unavailable" in body["couch_error"]
    # an error on the open page never names the store's address or database (the log does)
    port = own.url.rsplit(":", 1)[1]
    for text in (page, json.dumps(body)):
        assert own.url not in text and port not in text and "landing" not in text


@pytest.mark.parametrize("url, shown", [
    ("http://admin:secret@127.0.0.1:5984", "http://127.0.0.1:5984"),
    ("https://user@couch.example.org/", "https://couch.example.org/"),
    ("http://127.0.0.1:5984", "http://127.0.0.1:5984"),
])
def test_the_page_never_shows_credentials(url, shown):
    assert without_credentials(url) == shown
