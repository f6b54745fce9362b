"""CORS: a page on another origin can call every route, read errors and the headers it needs."""

from __future__ import annotations

import json

import pytest
from dicom_factory import make_instance, multipart
from pydicom.uid import generate_uid
from server_process import assert_clean_error, run

from dicomweb_couch.settings import Settings
from dicomweb_couch.web.cors import ALLOWED_HEADERS, normalize_origins

ORIGIN = "http://viewer.example:3000"


def preflight(method: str = "GET", headers: str | None = None, origin: str = ORIGIN) -> dict[str, str]:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        asked["Access-Control-Request-Headers"] = headers
    return asked


def exposed(resp) -> set[str]:
    return {h.strip() for h in resp.headers.get("Access-Control-Expose-Headers", "").split(",")}


async def test_every_answer_carries_the_origin_and_exposed_headers(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    body, content_type = multipart([make_instance(study, series, sop)])
    stored = await client.post("/studies", data=body, headers={"Content-Type": content_type, "Origin": ORIGIN})
    assert stored.status == 200
    wado = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    answers = [
        stored,
        await client.get("/studies", headers={"Origin": ORIGIN}),
        await client.get(f"/studies/{study}/series/{series}/metadata", headers={"Origin": ORIGIN}),
        await client.get("/wado", params=wado, headers={"Origin": ORIGIN}),  # streamed
        await client.get("/", params=wado, headers={"Origin": ORIGIN}),
    ]
    etag = answers[3].headers["ETag"]
    answers.append(await client.get("/wado", params=wado, headers={"Origin": ORIGIN, "If-None-Match": etag}))
    assert [a.status for a in answers] == [200, 200, 200, 200, 200, 304]
    for answer in answers:
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert {"Content-Length", "Warning", "ETag"} <= exposed(answer)


@pytest.mark.parametrize("path, status", [
    ("/studies?StudyDate=yesterday", 400),  # QIDO-RS refuses the value
    ("/wado?requestType=WADO", 400),
    ("/studies/1.2.3/metadata", 404),
    ("/no/such/route", 404),
])
async def test_errors_carry_the_origin_so_the_page_can_read_why(client, path, status):
    resp = await client.get(path, headers={"Origin": ORIGIN})
    assert resp.status == status
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert (await resp.json())["message"]


async def test_a_wrong_method_is_a_readable_405(client):
    resp = await client.delete("/wado", headers={"Origin": ORIGIN})
    assert resp.status == 405
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.content_type == "application/json"
    assert await resp.json() == {"status": 405, "error": "Method Not Allowed", "message": "Method Not Allowed"}
    assert set(resp.headers["Allow"].split(",")) >= {"GET"} and "DELETE" not in resp.headers["Allow"]


async def test_qido_warning_can_be_read_by_the_page(client):
    resp = await client.get("/studies", params={"emptyvaluematching": "true"}, headers={"Origin": ORIGIN})
    assert resp.headers["Warning"].startswith("299 ")
    assert "Warning" in exposed(resp)


async def test_preflight_grants_methods_and_headers(client):
    resp = await client.options("/studies", headers=preflight("POST", "content-type, authorization, x-custom"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert set(resp.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "HEAD", "POST"}
    granted = {h.lower() for h in resp.headers["Access-Control-Allow-Headers"].split(", ")}
    assert {"accept", "authorization", "content-type", "x-custom"} <= granted
    assert {h.lower() for h in ALLOWED_HEADERS} <= granted
    assert int(resp.headers["Access-Control-Max-Age"]) > 0


async def test_preflight_lets_an_unsupported_method_through_to_its_405(client):
    resp = await client.options("/studies", headers=preflight("DELETE"))
    assert resp.status == 204
    assert "DELETE" in resp.headers["Access-Control-Allow-Methods"].split(", ")


async def test_preflight_of_an_unknown_path_is_granted_and_the_request_gets_404(client):
    resp = await client.options("/nothing/here", headers=preflight("GET", "authorization"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Methods"] == "GET"


async def test_a_malformed_preflight_method_is_400(client):
    resp = await client.options("/studies", headers=preflight("GET POST"))
    assert resp.status == 400
    assert "Access-Control-Request-Method" in (await resp.json())["message"]


async def test_options_without_preflight_is_no_preflight(client):
    resp = await client.options("/studies", headers={"Origin": ORIGIN})
    assert resp.status == 405
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert (await resp.json())["status"] == 405 and "OPTIONS" not in resp.headers["Allow"]


async def test_restricted_origins(make_client, couch_db_name):
    client = await make_client(couch_db_name, cors_origins="https://viewer.example.org, http://127.0.0.1:3000")
    allowed = await client.get("/studies", headers={"Origin": "https://viewer.example.org"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"
    assert "Origin" in allowed.headers.getall("Vary")
    other = await client.get("/studies", headers={"Origin": "https://evil.example"})
    assert other.status == 200  # served, but a browser will not let that page read it
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Origin" in other.headers.getall("Vary")
    granted = await client.options("/studies", headers=preflight(origin="http://127.0.0.1:3000"))
    assert granted.status == 204
    assert granted.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:3000"
    refused = await client.options("/studies", headers=preflight(origin="https://evil.example"))
    assert refused.status == 403
    assert "https://evil.example" in (await refused.json())["message"]
    assert "Access-Control-Allow-Origin" not in refused.headers


async def test_cors_can_be_switched_off(make_client, couch_db_name):
    client = await make_client(couch_db_name, cors_origins="")
    resp = await client.get("/studies", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert (await client.options("/studies", headers=preflight())).status == 405


@pytest.mark.parametrize("value, origins", [
    ("*", ("*",)),
    ("", ()),
    ("https://A.example.org/, http://127.0.0.1:3000", ("https://a.example.org", "http://127.0.0.1:3000")),
    (["http://a.example", "*"], ("*",)),
    ("http://a.example,http://a.example", ("http://a.example",)),
])
def test_origin_settings(value, origins):
    assert normalize_origins(value) == origins


@pytest.mark.parametrize("value", ["viewer.example.org", "http://a.example/path", "ftp://a.example", "null"])
def test_a_value_that_is_no_origin_is_refused(value):
    with pytest.raises(ValueError, match="is not an origin"):
        Settings(cors_origins=value)


def test_origins_from_the_environment():
    settings = Settings.load(environ={"DICOMWEB_COUCH_CORS_ORIGINS": "http://a.example,https://b.example"})
    assert settings.cors_origins == ("http://a.example", "https://b.example")


def test_command_line_names_a_bad_origin():
    assert_clean_error(run("--cors-origins", "viewer.example.org"), "cors_origins", "viewer.example.org")


def test_origins_from_the_settings_file(tmp_path):
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"cors_origins": ["https://viewer.example.org", "http://127.0.0.1:3000"]}))
    assert Settings.load(environ={}, config_file=config).cors_origins == ("https://viewer.example.org",
                                                                          "http://127.0.0.1:3000")
    config.write_text(json.dumps({"cors_origins": 42}))
    with pytest.raises(ValueError, match="cors_origins"):
        Settings.load(environ={}, config_file=config)
