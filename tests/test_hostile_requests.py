"""Hostile requests against a real server on the real store (issue 9, items 1, 2 and 8).

Every answer is checked for the same properties (``check``): never a 5xx but a 503 for a real
store outage, never a stack trace, never a credential, never a Python or Pillow message leaking
through a 4xx. The server runs in a thread of its own (a real TCP port, its own event loop), so a
request that held the event loop would also hold the request the test sends meanwhile
(``answered_meanwhile``). Generated cases come from hypothesis with bounded example counts; the
named cases are the ones issue 9 reproduced. Multipart (STOW) bodies are tests/test_hostile_stow.py's.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import pytest
from aiohttp import web
from conftest import CouchServer, SuiteAuth, local_couch
from dicom_factory import make_instance, multipart, stow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import generate_uid

from dicomweb_couch.app import create_app
from dicomweb_couch.settings import Settings

LEAKS = ("Traceback", 'File "', "int too large", "decompression bomb", "DecompressionBomb")
HYPOTHESIS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> object:
        return json.loads(self.body)


@dataclass(frozen=True)
class Live:
    """A server on its own event loop in a thread, with one stored instance."""

    host: str
    port: int
    headers: dict[str, str]
    secrets: tuple[str, ...]  # never in a body
    internal: tuple[str, ...]  # the store's address and database: only the status page ``/`` names them
    study: str
    series: str
    sop: str

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 30) -> Answer:
        """A GET with ``path`` sent exactly as given (no normalisation of dots or escapes)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={**self.headers, **(headers or {})})
            resp = conn.getresponse()
            return Answer(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def check(self, answer: Answer, outage: bool = False) -> Answer:
        """The properties every answer has (see the module doc)."""
        assert answer.status < 500 or (outage and answer.status == 503), (answer.status, answer.text[:500])
        for leak in LEAKS + self.secrets:
            assert leak not in answer.text, (leak, answer.status, answer.text[:500])
        if answer.status >= 400 and "text/html" not in answer.headers.get("Content-Type", ""):
            for leak in self.internal:
                assert leak not in answer.text, (leak, answer.status, answer.text[:500])
        return answer

    def answered_meanwhile(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        """Send ``path``; while it runs, ``GET /`` must answer within a second. Returns the first answer."""
        with ThreadPoolExecutor(1) as pool:
            hostile = pool.submit(self.get, path, headers)
            time.sleep(0.05)
            started = time.monotonic()
            other = self.get("/", {"Accept": "application/json"}, timeout=10)
            waited = time.monotonic() - started
            answer = hostile.result(timeout=60)
        assert other.status == 200 and waited < 1.0, f"GET / took {waited:.2f} s while {path[:80]} ran"
        return self.check(answer)


@pytest.fixture(scope="module")
def live(couch_server: CouchServer, suite_auth: SuiteAuth) -> Iterator[Live]:
    database = f"test_{uuid.uuid4().hex}"
    config = Settings(couch_url=couch_server.url, couch_user=couch_server.user, couch_password=couch_server.password,
                      database=database, couch_wait=30, **suite_auth.settings)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro):  # noqa: ANN001, ANN202
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    runner = web.AppRunner(create_app(config))
    run(runner.setup())
    run(web.TCPSite(runner, "127.0.0.1", 0).start())
    host, port = runner.addresses[0][:2]
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    body, content_type = multipart([make_instance(study, series, sop, patient_name="Doe^John")])
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request("POST", "/studies", body=body, headers={**suite_auth.headers, "Content-Type": content_type,
                                                         "Accept": "application/dicom+json"})
    assert conn.getresponse().status == 200
    conn.close()
    secrets = tuple(s for s in (couch_server.password,) if s)
    try:
        yield Live(host, port, suite_auth.headers, secrets, (couch_server.url, database), study, series, sop)
    finally:
        run(runner.cleanup())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        couch_server.request("DELETE", database)


def names(answer: Answer) -> list[str]:
    """PatientName (Alphabetic) of each study of a QIDO answer."""
    return [r["00100010"]["Value"][0]["Alphabetic"] for r in answer.json()]  # type: ignore[index, union-attr]


# -- item 1: wildcards cost time linear in value x pattern, and the server stays responsive --------------------


@pytest.mark.parametrize("stars", [14, 40, 2000])
def test_many_wildcards_answer_fast_and_correctly(live: Live, stars: int) -> None:
    """``PatientName=**************Z`` took 9-15 s and blocked every other request; 40 stars never ended."""
    answer = live.answered_meanwhile("/studies?PatientName=" + "*" * stars + "Z")
    assert answer.status == 200 and answer.json() == []
    answer = live.answered_meanwhile("/studies?PatientName=" + "*" * stars + "N")
    assert answer.status == 200 and names(answer) == ["Doe^John"]


@pytest.mark.parametrize("pattern", ["*?*?*?*?*?*?*?*?*?*?*?*?*?*?Z", "D*o*e*^*J*o*h*n*X", "*" * 30 + "d"])
def test_wildcards_on_every_path_stay_fast(live: Live, pattern: str) -> None:
    """The fuzzy path, a series-level text attribute and an instance-level one."""
    for path in (f"/studies?fuzzymatching=true&PatientName={quote(pattern)}",
                 f"/studies/{live.study}/series?SeriesDescription={quote(pattern)}",
                 f"/instances?PatientName={quote(pattern)}&SOPInstanceUID={live.sop}"):
        assert live.answered_meanwhile(path).status == 200


@given(term=st.text("ab*?", max_size=12), text=st.text("ab", max_size=12), prefix=st.booleans())
@settings(max_examples=300, deadline=None)
def test_wildcard_match_agrees_with_the_definition(term: str, text: str, prefix: bool) -> None:
    """`*` any run, `?` one character (PS3.4 C.2.2.2.4), checked against a direct recursive definition."""
    from dicomweb_couch.search.matching import wildcard_match

    def matches(t: str, s: str) -> bool:
        if not t:
            return prefix or not s
        if t[0] == "*":
            return any(matches(t[1:], s[i:]) for i in range(len(s) + 1))
        return bool(s) and t[0] in ("?", s[0]) and matches(t[1:], s[1:])

    assert wildcard_match(term, text, prefix) == matches(term, text)


# -- item 2: a password in the CouchDB URL is never in a body nor in a log line ---------------------------------


async def test_store_password_is_in_no_body_and_no_log(aiohttp_client, tmp_path, caplog) -> None:  # noqa: ANN001
    """Started with ``--couch-url http://admin:SECRET@host:port`` and the store then stopped: every route
    answers (503 where it needs the store) without SECRET, the store's address or the database name, and no
    log record holds SECRET."""
    secret = "S3cret-" + uuid.uuid4().hex[:8]
    caplog.set_level(logging.DEBUG)
    local_couch.ensure_installed()
    with local_couch.start(tmp_path / "couch", port=0) as own:
        assert CouchServer(own.url).request("PUT", "_config/admins/admin", secret)[0] == 200
        url = own.url.replace("http://", f"http://admin:{secret}@")
        client = await aiohttp_client(create_app(Settings(couch_url=url, database="secretdb", couch_wait=10)))
        study, series, sop = generate_uid(), generate_uid(), generate_uid()
        assert (await stow(client, [make_instance(study, series, sop)]))[0] == 200
        assert (await client.get("/studies")).status == 200
    instance = f"/studies/{study}/series/{series}/instances/{sop}"
    paths = ["/", "/studies", "/series", "/instances", f"/studies/{study}/series", f"/studies/{study}/instances",
             f"/studies/{study}/series/{series}/instances", f"/studies/{study}/metadata", instance + "/metadata",
             f"/studies/{study}", instance, instance + "/frames/1", instance + "/rendered", instance + "/thumbnail",
             f"/studies/{study}/rendered", "/wado?" + urlencode({"requestType": "WADO", "studyUID": study,
                                                                "seriesUID": series, "objectUID": sop})]
    for path in paths:
        for accept in ("application/json", "*/*"):
            resp = await client.get(path, headers={"Accept": accept})
            body = await resp.text()
            assert resp.status == 503, (path, resp.status, body[:300])
            assert secret not in body and "Traceback" not in body, (path, body[:300])
            if path != "/":  # the status page names the store (without credentials); errors do not
                assert own.url not in body and f"127.0.0.1:{own.port}" not in body and "secretdb" not in body, body
    body, content_type = multipart([make_instance(study, series)])
    resp = await client.post("/studies", data=body, headers={"Content-Type": content_type})
    assert resp.status == 503 and secret not in await resp.text()
    resp = await client.delete(f"/studies/{study}")
    assert resp.status == 503 and secret not in await resp.text()
    formatter = logging.Formatter()
    leaked = [formatter.format(r) for r in caplog.records if secret in formatter.format(r)]
    assert not leaked, leaked[:3]
