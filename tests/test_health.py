"""/healthz and /readyz: open without a token, cheap, and 503 with the reason when the server should get
no traffic (CouchDB gone, design documents missing, search index behind); the status page shows counts
only to authorized users when authentication is on."""

from __future__ import annotations

import re

from conftest import local_couch
from oidc_issuer import OidcIssuer, bearer
from pydicom.uid import generate_uid
from test_design_docs import dataset, put_doc
from test_metrics import scrape

from dicomweb_couch.app import create_app
from dicomweb_couch.settings import Settings


async def test_healthz_and_readyz_when_all_is_well(client):
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "alive"}
    assert resp.headers["Cache-Control"] == "no-store"
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["status"] == "ready" and body["problems"] == []
    assert set(body["index_lag"]) == {"qido/instances", "qido/series"}  # the views searches read


async def test_readyz_waits_for_the_search_index(make_client, couch_db_name, couch_server):
    client = await make_client(couch_db_name, ready_index_lag=2, index_refresh=3600)
    assert (await client.get("/readyz")).status == 200
    study, series = generate_uid(), generate_uid()
    for _ in range(5):  # written behind the server's back: no view has indexed them
        sop = generate_uid()
        put_doc(couch_server, couch_db_name, sop, {"dataset": dataset(study, series, sop)})
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503, body
    assert body["status"] == "not ready"
    [problem] = body["problems"]
    assert problem.startswith("search index behind the database: ")
    lags = {view: int(n) for view, n in re.findall(r"(qido/\w+) by (\d+) changes", problem)}
    assert lags["qido/instances"] >= 5, problem  # the five documents (and the design document if never queried)
    assert (await client.get(f"/studies/{study}/series")).status == 200  # queries bring the views up to date
    assert (await client.get(f"/studies/{study}/metadata")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()


async def test_readyz_names_a_missing_design_document(client, couch_db_name, couch_server):
    status, ddoc = couch_server.request("GET", f"{couch_db_name}/_design/qido")
    assert status == 200
    status, _ = couch_server.request("DELETE", f"{couch_db_name}/_design/qido?rev={ddoc['_rev']}")
    assert status == 200
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["problems"] == ["design document _design/qido is missing"]
    assert (await client.get("/healthz")).status == 200


async def test_couchdb_gone(aiohttp_client, tmp_path):
    """A private store, stopped under a running server: not ready, still alive, errors counted."""
    with local_couch.start(tmp_path / "couch", port=0) as couch:
        client = await aiohttp_client(create_app(Settings(couch_url=couch.url, database="gone", couch_wait=30)))
        assert (await client.get("/readyz")).status == 200
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert body["problems"][0].startswith("CouchDB unreachable: ")
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/studies")).status == 503
    metrics = await scrape(client)
    errors = {labels["kind"]: value for labels, value in metrics["dicomweb_store_errors_total"]}
    assert sum(errors.values()) >= 2 and any("Connect" in kind for kind in errors), errors


async def test_probes_are_open_and_counts_are_for_users_only(make_client, couch_db_name):
    with OidcIssuer().running() as issuer:
        client = await make_client(couch_db_name, **issuer.server_settings())
        token = bearer(issuer.mint())
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status == 200, path
        assert (await client.get("/studies")).status == 401
        resp = await client.get("/", headers={"Accept": "application/json"})
        body = await resp.json()
        assert resp.status == 200 and body["counts_hidden"] is True and body["studies"] is None
        assert "counts shown to signed-in users" in await (await client.get("/")).text()
        resp = await client.get("/", headers={"Accept": "application/json", **token})
        body = await resp.json()
        assert body["counts_hidden"] is False and isinstance(body["studies"], int)
