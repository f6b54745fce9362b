"""Prometheus metrics, tested by scraping /metrics after real requests; request ids across the server,
its log and CouchDB."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from dicom_factory import make_instance, multipart, stow
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import generate_uid

from dicomweb_couch.app import create_app
from dicomweb_couch.settings import Settings
from dicomweb_couch.web.metrics import JsonLogFormatter

Samples = dict[str, list[tuple[dict[str, str], float]]]


async def scrape(client: TestClient) -> Samples:
    """Every sample of /metrics by name: (labels, value) pairs."""
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for found, v in samples.get(name, []) if all(found.get(k) == x for k, x in labels.items()))


async def test_requests_instances_bytes_and_store_are_counted(client):
    study, series = generate_uid(), generate_uid()
    good = [make_instance(study, series), make_instance(study, series)]
    body, content_type = multipart([*good, b"this is no DICOM file"])
    resp = await client.post("/studies", data=body, headers={"Content-Type": content_type,
                                                             "Accept": "application/dicom+json"})
    assert resp.status == 202, await resp.text()  # two stored, one refused
    assert (await stow(client, [good[0]]))[0] == 200  # stored again: counts as stored
    metadata = await client.get(f"/studies/{study}/metadata")
    assert metadata.status == 200
    metadata_size = len(await metadata.read())
    assert (await client.get(f"/studies/{generate_uid()}/metadata")).status == 404
    assert (await client.get("/no/such/route")).status == 404

    m = await scrape(client)
    assert value(m, "dicomweb_requests_total", route="/studies", method="POST", status="202") == 1
    assert value(m, "dicomweb_requests_total", route="/studies", method="POST", status="200") == 1
    assert value(m, "dicomweb_requests_total", route="/studies/{study}/metadata", status="200") == 1
    assert value(m, "dicomweb_requests_total", route="/studies/{study}/metadata", status="404") == 1
    assert value(m, "dicomweb_requests_total", route="unmatched", status="404") == 1
    assert value(m, "dicomweb_request_duration_seconds_count", route="/studies/{study}/metadata") == 2
    assert value(m, "dicomweb_request_bytes_total", route="/studies") >= len(body) + len(good[0])
    assert value(m, "dicomweb_response_bytes_total", route="/studies/{study}/metadata") >= metadata_size
    assert value(m, "dicomweb_instances_stored_total") == 3
    assert value(m, "dicomweb_instances_refused_total", reason="0xC000") == 1
    assert value(m, "dicomweb_store_request_duration_seconds_count", method="GET") > 0
    assert value(m, "dicomweb_store_request_duration_seconds_count", method="PUT") >= 2
    assert value(m, "dicomweb_store_errors_total") == 0
    lags = {labels["view"]: v for labels, v in m["dicomweb_search_index_lag_changes"]}
    assert set(lags) == {"qido/instances", "qido/series"}  # the views searches read
    assert all(lag >= 0 for lag in lags.values())
    assert value(m, "dicomweb_requests_in_flight") == 1  # the scrape itself
    assert not any(study in str(labels) for samples in m.values() for labels, _ in samples)  # no UIDs in labels


async def test_metrics_can_be_turned_off(make_client, couch_db_name):
    client = await make_client(couch_db_name, metrics=False)
    assert (await client.get("/metrics")).status == 404
    assert (await client.get("/healthz")).status == 200


async def test_request_id_reaches_the_log_and_couchdb(aiohttp_client, couch_db_name, couch_server):
    """A recording proxy in front of CouchDB sees the id the client sent; the JSON log line has it."""
    seen: list[str | None] = []

    async def forward(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("X-Request-ID"))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with proxy_session.request(request.method, couch_server.url + request.path_qs, headers=headers,
                                         data=await request.read(), auto_decompress=False) as upstream:
            body = await upstream.read()
            keep = {k: v for k, v in upstream.headers.items()
                    if k.lower() not in ("transfer-encoding", "content-length", "connection")}
            return web.Response(status=upstream.status, body=body, headers=keep)

    proxy_session = aiohttp.ClientSession()
    proxy_app = web.Application()
    proxy_app.router.add_route("*", "/{tail:.*}", forward)
    proxy = TestServer(proxy_app)
    await proxy.start_server()
    try:
        client = await aiohttp_client(create_app(Settings(
            couch_url=str(proxy.make_url("")).rstrip("/"), couch_user=couch_server.user,
            couch_password=couch_server.password, database=couch_db_name, couch_wait=30)))
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonLogFormatter())
        logger = logging.getLogger("dicomweb_couch")
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            seen.clear()
            status, _ = await stow_with_id(client, make_instance(generate_uid(), generate_uid()), "trace-42")
            assert status == 200
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        assert "trace-42" in seen
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        stored = [line for line in lines if line["message"].startswith("stored instance")]
        assert stored and stored[0]["request_id"] == "trace-42" and stored[0]["level"] == "INFO"
        resp = await client.get("/healthz")
        assert len(resp.headers["X-Request-ID"]) == 32  # made up when the client sends none
        resp = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
        assert resp.headers["X-Request-ID"] != "bad id\twith spaces"
    finally:
        await proxy.close()
        await proxy_session.close()


async def stow_with_id(client: TestClient, data: bytes, request_id: str) -> tuple[int, Any]:
    body, content_type = multipart([data])
    resp = await client.post("/studies", data=body, headers={"Content-Type": content_type, "X-Request-ID": request_id,
                                                             "Accept": "application/dicom+json"})
    assert resp.headers["X-Request-ID"] == request_id
    return resp.status, await resp.json(content_type=None)
