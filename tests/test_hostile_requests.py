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
NAME = "Doe^John^Jacob^Jingleheimer"  # long enough for a backtracking matcher to take hours on many stars
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

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 30, method: str = "GET") -> Answer:
        """A request with ``path`` sent exactly as given (no normalisation of dots or escapes)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, headers={**self.headers, **(headers or {})})
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

    def run(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    runner = web.AppRunner(create_app(config))
    run(runner.setup())
    run(web.TCPSite(runner, "127.0.0.1", 0).start())
    host, port = runner.addresses[0][:2]
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    body, content_type = multipart([make_instance(study, series, sop, patient_name=NAME)])
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
    answer = live.answered_meanwhile("/studies?PatientName=" + "*" * stars + "R")
    assert answer.status == 200 and names(answer) == [NAME]


@pytest.mark.parametrize("pattern", ["*?*?*?*?*?*?*?*?*?*?*?*?*?*?Z", "D*o*e*^*J*o*h*n*J*a*c*o*b*X", "*" * 30 + "d"])
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


async def test_store_password_is_in_no_body_and_no_log(aiohttp_client, tmp_path, caplog) -> None:
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


# -- item 8: path UIDs, CouchDB ids, 406 messages, metadata negotiation, frame lists ---------------------------

ROUTES = ("/studies/{s}", "/studies/{s}/metadata", "/studies/{s}/series", "/studies/{s}/instances",
          "/studies/{s}/rendered", "/studies/{s}/thumbnail", "/studies/{s}/series/{se}", "/studies/{s}/series/{se}/metadata",
          "/studies/{s}/series/{se}/instances", "/studies/{s}/series/{se}/rendered", "/studies/{s}/series/{se}/thumbnail",
          "/studies/{s}/series/{se}/instances/{i}", "/studies/{s}/series/{se}/instances/{i}/metadata",
          "/studies/{s}/series/{se}/instances/{i}/rendered", "/studies/{s}/series/{se}/instances/{i}/thumbnail",
          "/studies/{s}/series/{se}/instances/{i}/frames/1", "/studies/{s}/series/{se}/instances/{i}/frames/1/rendered",
          "/studies/{s}/series/{se}/instances/{i}/bulkdata/7FE00010")
COUCH_IDS = ("_design", "_design%2Fqido", "_all_docs", "_changes", "_bulk_docs", "_local%2Fx", "_users", "..", ".",
             "%2E%2E", "1..2", ".1", "1.", "1.2.a", "1" * 65, "1." * 2500, "%00", "1%2F2", "%C3%A9")


def routes(live: Live, position: str, value: str) -> list[str]:
    """Every route with ``value`` in the UID ``position`` (s, se, i) and real UIDs elsewhere."""
    uids = {"s": live.study, "se": live.series, "i": live.sop, position: value}
    return [r.format(**uids) for r in ROUTES if "{" + position + "}" in r]


@pytest.mark.parametrize("position, parameter", [("s", "StudyInstanceUID"), ("se", "SeriesInstanceUID"),
                                                 ("i", "SOPInstanceUID")])
def test_a_path_uid_is_checked_before_the_store(live: Live, position: str, parameter: str) -> None:
    """5,000 characters (Apache CouchDB refused the view URL with a 400 reported as an outage) or a
    CouchDB id: 400 naming the parameter, whatever the route, in every position. ``..`` and ``.`` are
    resolved by the HTTP layer into another path, which then does not exist (404)."""
    for value in COUCH_IDS:
        for path in routes(live, position, value):
            answer = live.check(live.get(path))
            if value in ("..", ".", "%2E%2E"):
                assert answer.status in (400, 404), (path, answer.status)
            else:
                assert answer.status == 400 and parameter in answer.json()["message"], (path, answer.text[:300])
        if position == "s":  # STOW to a study, and DELETE, are checked the same way
            assert live.check(live.get(f"/studies/{value}", method="POST")).status in (400, 404, 405)
        assert live.check(live.get(routes(live, position, value)[0], method="DELETE")).status in (400, 404, 405)
    assert live.get(f"/studies/{live.study}/metadata").status == 200  # nothing was deleted


def test_couchdb_ids_in_wado_uri_are_400(live: Live) -> None:
    params = {"requestType": "WADO", "studyUID": live.study, "seriesUID": live.series, "objectUID": live.sop}
    for name in ("studyUID", "seriesUID", "objectUID"):
        for value in ("_design/qido", "_all_docs", "_changes", "..", "1" * 5000):
            answer = live.check(live.get("/wado?" + urlencode(dict(params, **{name: value}))))
            assert answer.status == 400 and name in answer.json()["message"]


def test_metadata_is_406_unless_json_is_accepted(live: Live) -> None:
    """PS3.18 8.7: the metadata resource is DICOM JSON here; an image type cannot be had."""
    for level in (f"/studies/{live.study}", f"/studies/{live.study}/series/{live.series}",
                  f"/studies/{live.study}/series/{live.series}/instances/{live.sop}"):
        for accept in ("image/png", 'multipart/related; type="application/dicom+xml"', "text/html"):
            answer = live.check(live.get(level + "/metadata", {"Accept": accept}))
            assert answer.status == 406 and "metadata" in answer.json()["message"], (accept, answer.text)
        for accept in ("application/dicom+json", "application/json", "*/*", "image/png, application/dicom+json;q=0.5"):
            assert live.get(level + "/metadata", {"Accept": accept}).status == 200, accept
        assert live.get(level + "/metadata?accept=image/png", {"Accept": "application/dicom+json"}).status == 406


def test_a_repeated_frame_list_does_not_multiply_the_answer(live: Live) -> None:
    """``1,1,1,...`` (2,001 entries) returned 2,001 copies of the frame from one short URL."""
    base = f"/studies/{live.study}/series/{live.series}/instances/{live.sop}/frames/"
    for tail in ("", "/rendered"):
        for frames, limit in ((",".join(["1"] * 2001), "1000"), (",".join(["1"] * 17), "16")):
            answer = live.check(live.get(base + frames + tail, {"Accept": "*/*"}))
            assert answer.status == 400 and limit in answer.json()["message"] and len(answer.body) < 1000
        assert live.get(base + "1,1" + tail, {"Accept": "*/*"}).status == 200  # a repeat within the allowance


@pytest.mark.parametrize("viewport", ["16,16,0,0,1e300,1e300", "16,16,0,0,60000,60000", "16,16,-1e30,0,16,16",
                                      "16,16,0,0,65535,65535", "5000,16", "16,16,0,0,16,1e9"])
def test_a_viewport_too_large_is_400_naming_the_limit(live: Live, viewport: str) -> None:
    """These gave 406 "Python int too large" or "decompression bomb"."""
    base = f"/studies/{live.study}/series/{live.series}/instances/{live.sop}"
    for path in (base + "/rendered", base + "/thumbnail", base + "/frames/1/rendered", f"/studies/{live.study}/rendered"):
        answer = live.answered_meanwhile(f"{path}?viewport={viewport}")
        assert answer.status == 400 and "viewport" in answer.json()["message"], answer.text
        assert any(limit in answer.json()["message"] for limit in ("4096", "65535")), answer.text


# -- generated cases -----------------------------------------------------------------------------------------

KEYS = ("PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "Modality",
        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyDescription", "SeriesDescription",
        "ReferringPhysicianName", "00100010", "0020000D", "00081030", "RequestAttributesSequence.RequestedProcedureID",
        "includefield", "limit", "offset", "fuzzymatching", "orderby", "x" * 300, "_design", "00091010")
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.text("*?\\,^=-.0123456789aZ%/ ", max_size=60),
    st.sampled_from(["*" * 200 + "Z", "?" * 500, "../../_all_docs", "_design/qido", "\x00", "\ud7ff\ufeff",
                     "1" * 3000, "-1", "99999999999999999999999999", "1e309", "NaN", "all", "00100010,zz",
                     "20240101-", "-", "20241301", "2024010", "%", "%%", "%ZZ", "Doe^John^^^^^^", "=" * 100]))


def query(pairs: list[tuple[str, str]]) -> str:
    return urlencode(pairs, quote_via=quote)


@HYPOTHESIS
@given(pairs=st.lists(st.tuples(st.sampled_from(KEYS), HOSTILE_TEXT), max_size=4),
       level=st.sampled_from(["/studies", "/series", "/instances", "/studies/{s}/series", "/studies/{s}/instances",
                              "/studies/{s}/series/{se}/instances"]))
def test_generated_qido_queries(live: Live, pairs: list[tuple[str, str]], level: str) -> None:
    answer = live.check(live.get(level.format(s=live.study, se=live.series) + "?" + query(pairs)))
    assert answer.status in (200, 400), (answer.status, answer.text[:300])


@HYPOTHESIS
@given(position=st.sampled_from(["s", "se", "i"]), value=HOSTILE_TEXT.filter(bool), route=st.sampled_from(ROUTES))
def test_generated_path_segments(live: Live, position: str, value: str, route: str) -> None:
    uids = {"s": live.study, "se": live.series, "i": live.sop, position: quote(value, safe="")}
    answer = live.check(live.get(route.format(**uids)))
    assert answer.status in (200, 400, 404, 406), (answer.status, answer.text[:300])


ACCEPT = st.one_of(
    st.text(max_size=60).filter(lambda t: "\r" not in t and "\n" not in t and "\x00" not in t),
    st.lists(st.sampled_from(["*/*", "image/png", "image/jpeg;q=0.5", "application/dicom+json", "image/*",
                              'multipart/related; type="application/octet-stream"; transfer-syntax=*',
                              'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50',
                              'multipart/related; type="application/dicom"', "application/octet-stream;q=nan",
                              "text/html;q=1e999", ";;;", ",,,", 'a/b; x="\\"', "*/*;q=-1", "x" * 300]),
             min_size=1, max_size=5).map(", ".join))


@HYPOTHESIS
@given(accept=ACCEPT, tail=st.sampled_from(["", "/metadata", "/frames/1", "/rendered", "/thumbnail",
                                            "/frames/1/rendered", "/bulkdata/7FE00010"]),
       param=st.booleans())
def test_generated_accept_headers(live: Live, accept: str, tail: str, param: bool) -> None:
    path = f"/studies/{live.study}/series/{live.series}/instances/{live.sop}{tail}"
    if param:
        path += "?" + query([("accept", accept)])
    answer = live.check(live.get(path, {"Accept": accept.encode("latin-1", "replace").decode("latin-1")}))
    assert answer.status in (200, 400, 406), (answer.status, answer.text[:300])


RENDERING = st.lists(st.tuples(st.sampled_from(["window", "viewport", "quality", "annotation", "iccprofile"]),
                               st.one_of(HOSTILE_TEXT, st.lists(st.one_of(
                                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                                   st.integers(-10**30, 10**30).map(str), st.sampled_from(["", "SIGMOID", "linear"])),
                                   max_size=7).map(",".join))), max_size=3)


@HYPOTHESIS
@given(params=RENDERING, tail=st.sampled_from(["/rendered", "/thumbnail", "/frames/1/rendered"]),
       level=st.sampled_from(["study", "instance"]))
def test_generated_rendering_parameters(live: Live, params: list[tuple[str, str]], tail: str, level: str) -> None:
    base = f"/studies/{live.study}" if level == "study" and tail != "/frames/1/rendered" else \
        f"/studies/{live.study}/series/{live.series}/instances/{live.sop}"
    answer = live.check(live.get(base + tail + "?" + query(params), {"Accept": "*/*"}))
    assert answer.status in (200, 400, 406), (answer.status, answer.text[:300])


@HYPOTHESIS
@given(frames=st.one_of(HOSTILE_TEXT.filter(bool), st.lists(st.integers(-5, 2**70), min_size=1, max_size=40).map(
    lambda ns: ",".join(map(str, ns)))), tail=st.sampled_from(["", "/rendered"]))
def test_generated_frame_lists(live: Live, frames: str, tail: str) -> None:
    path = f"/studies/{live.study}/series/{live.series}/instances/{live.sop}/frames/{quote(frames, safe=',')}{tail}"
    answer = live.check(live.get(path, {"Accept": "*/*"}))
    assert answer.status in (200, 400, 404, 406), (answer.status, answer.text[:300])


@HYPOTHESIS
@given(changes=st.dictionaries(st.sampled_from(["requestType", "studyUID", "seriesUID", "objectUID", "contentType",
                                                "transferSyntax", "anonymize", "frameNumber", "rows"]),
                               HOSTILE_TEXT, max_size=4), root=st.sampled_from(["/wado", "/"]))
def test_generated_wado_uri_parameters(live: Live, changes: dict[str, str], root: str) -> None:
    params = {"requestType": "WADO", "studyUID": live.study, "seriesUID": live.series, "objectUID": live.sop, **changes}
    answer = live.check(live.get(root + "?" + query(list(params.items()))))
    assert answer.status in (200, 400, 404, 406), (answer.status, answer.text[:300])


@pytest.mark.parametrize("accept", [" " * 8000 + '"', "image/png;" + " " * 8000 + '"', '"' + "\\" * 8000, "a, " * 2600])
def test_a_long_accept_header_is_parsed_in_linear_time(live: Live, accept: str) -> None:
    """200 spaces and an unclosed quote took the Accept parser's regular expression 6 s, 8,000 forever."""
    base = f"/studies/{live.study}/series/{live.series}/instances/{live.sop}"
    for tail in ("", "/metadata", "/frames/1", "/rendered"):
        assert live.answered_meanwhile(base + tail, {"Accept": accept}).status in (200, 406)


@pytest.mark.parametrize("number", ["9" * 5000, "²", "١٢", "+1", "1_000", " 1"])
def test_numbers_beyond_what_python_converts_are_400(live: Live, number: str) -> None:
    """Digits Python will not turn into an int (over 4,300 of them, superscripts) in limit, offset, quality
    and frame lists: a 400, or for forms that are numbers after all, an answer."""
    base = f"/studies/{live.study}/series/{live.series}/instances/{live.sop}"
    value = quote(number, safe="")
    for path in (f"/studies?limit={value}", f"/studies?offset={value}", f"{base}/rendered?quality={value}",
                 f"{base}/frames/{value}", f"{base}/frames/1,{value}/rendered", f"/studies?SeriesNumber={value}",
                 f"/studies?PatientName=a&limit={value}&offset={value}", f"{base}/bulkdata/00081115/{value}/00081150"):
        answer = live.check(live.get(path, {"Accept": "*/*"}))
        assert answer.status in (200, 400, 404), (path, answer.status, answer.text[:200])


@pytest.mark.parametrize("url, given, clean, expected", [
    ("http://admin:S3cret@127.0.0.1:5984", (None, None), "http://127.0.0.1:5984", ("admin", "S3cret")),
    ("http://admin:S3cret%40x@127.0.0.1:5984/", (None, None), "http://127.0.0.1:5984/", ("admin", "S3cret@x")),
    ("http://admin:S3cret@[::1]:5984", (None, None), "http://[::1]:5984", ("admin", "S3cret")),
    ("http://other:S3cret@127.0.0.1:5984", ("admin", "given"), "http://127.0.0.1:5984", ("admin", "given")),
])
def test_credentials_leave_the_couch_url_when_settings_are_read(url: str, given: tuple[str | None, str | None],
                                                                clean: str, expected: tuple[str, str]) -> None:
    """The URL keeps no user or password; they become the settings' (explicit settings win), and the
    settings' repr (what a debug log line would print) holds no password."""
    s = Settings(couch_url=url, couch_user=given[0], couch_password=given[1])
    assert (s.couch_url, s.couch_user, s.couch_password) == (clean, *expected)
    assert "S3cret" not in repr(s) and "given" not in repr(s)
