"""errors.py: every failure becomes a small JSON problem body; anything unexpected a 500 that is
logged with its traceback while nothing internal reaches the client."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dicomweb_couch.app import create_app
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.search.matching import QueryError
from dicomweb_couch.settings import Settings
from dicomweb_couch.store.couch import CouchUnavailable

SECRET = "password=hunter2 at /srv/internal/couch.py line 42"


def raising(exc: Exception):
    async def handler(request: web.Request) -> web.Response:
        raise exc
    return handler


@pytest.fixture
async def failing(aiohttp_client, couch_server, couch_db_name, suite_auth) -> TestClient:
    """The real application with extra routes that fail in each way a handler can."""
    app = create_app(Settings(couch_url=couch_server.url, couch_user=couch_server.user,
                              couch_password=couch_server.password, database=couch_db_name, couch_wait=30,
                              **suite_auth.settings))
    app.router.add_get("/test/bug", raising(KeyError(SECRET)))
    app.router.add_get("/test/dicomweb", raising(DicomwebError(409, "a reason", {"Retry-After": "7"})))
    app.router.add_get("/test/query", raising(QueryError("PatientName: a bad value")))
    app.router.add_get("/test/couch", raising(CouchUnavailable("CouchDB answered 500 to GET /db/x")))
    return await aiohttp_client(app, headers=suite_auth.headers)


async def test_an_unexpected_error_is_a_500_that_says_nothing_internal(failing, caplog):
    caplog.set_level(logging.ERROR, logger="dicomweb_couch.errors")
    resp = await failing.get("/test/bug", params={"q": "1"})
    assert resp.status == 500 and resp.content_type == "application/json"
    text = await resp.text()
    assert await resp.json() == {"status": 500, "error": "Internal Server Error",
                                 "message": "internal server error (logged on the server)"}
    assert "hunter2" not in text and "Traceback" not in text and "KeyError" not in text
    [record] = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert record.getMessage() == "unexpected error in GET /test/bug?q=1"
    assert record.exc_info and record.exc_info[0] is KeyError  # the traceback is in the log


async def test_expected_errors_keep_their_status_message_and_headers(failing):
    resp = await failing.get("/test/dicomweb")
    assert resp.status == 409 and resp.headers["Retry-After"] == "7"
    assert await resp.json() == {"status": 409, "error": "Conflict", "message": "a reason"}
    resp = await failing.get("/test/query")
    assert resp.status == 400
    assert await resp.json() == {"status": 400, "error": "Bad Request", "message": "PatientName: a bad value"}
    resp = await failing.get("/test/couch")
    assert resp.status == 503
    message = (await resp.json())["message"]
    assert "database is unavailable" in message and "/db/x" not in message  # no internal address


async def test_aiohttp_errors_become_problem_bodies(failing):
    resp = await failing.get("/no/such/route")
    assert resp.status == 404
    assert await resp.json() == {"status": 404, "error": "Not Found", "message": "Not Found"}
    resp = await failing.post("/test/bug")
    assert resp.status == 405 and resp.headers["Allow"] == "GET,HEAD"
    assert (await resp.json())["status"] == 405
