"""Hostile STOW-RS bodies against the real server and store (issue 9, items 3, 4 and 6).

Properties that every answer must keep, checked after each request:
- never a 5xx (the store is up), never a stack trace in the body;
- every acknowledged instance comes back by WADO-URI byte-exact, as a part that was complete
  (followed by its delimiter) in the body sent;
- the database holds nothing that no response acknowledged.
Named cases first, then hypothesis-generated bodies (bounded: a few dozen examples).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom.data
import pytest
from dicom_factory import make_instance, multipart
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from live_server import LiveServer, running, store_response
from pydicom.uid import generate_uid

ORTHANC_BOUNDARY = f"{uuid.uuid4()}-{uuid.uuid4()}"  # 73 characters, as Orthanc sends
SAMPLES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm", "liver_1frame.dcm"]


def sample(name: str) -> bytes:
    return Path(pydicom.data.get_testdata_file(name)).read_bytes()


class Archive:
    """One server on a fresh database, and what its responses acknowledged (SOP -> bytes)."""

    def __init__(self, server: LiveServer, couch_url: str, database: str, couch_headers: dict[str, str]):
        self.server, self.couch_url, self.database, self.couch_headers = server, couch_url, database, couch_headers
        self.acknowledged: dict[str, bytes] = {}

    def stow(self, body: bytes, boundary: str, path: str = "/studies") -> tuple[int, dict]:
        """POST a body, check the response properties and what it acknowledged."""
        content_type = f'multipart/related; type="application/dicom"; boundary="{boundary}"'
        status, _, raw = self.server.stow(body, content_type, path)
        return status, self.check(status, raw, complete_parts(body, boundary))

    def check(self, status: int, raw: bytes, complete: list[bytes]) -> dict:
        assert status < 500, raw[:500]
        assert b"Traceback" not in raw and b'File "' not in raw, raw[:500]
        body = store_response(raw)
        for ref in body.get("00081199", {}).get("Value", []):
            url = ref["00081190"]["Value"][0]
            study, _, rest = url.partition("/studies/")[2].partition("/series/")
            series, _, sop = rest.partition("/instances/")
            got_status, got = self.server.wado_uri(study, series, sop)
            assert got_status == 200, sop
            assert got in complete, f"{sop}: the stored file ({len(got)} bytes) is no complete part of the body"
            self.acknowledged[sop] = got
        return body

    def assert_holds_only_acknowledged(self) -> None:
        request = urllib.request.Request(f"{self.couch_url}/{self.database}/_all_docs", headers=self.couch_headers)
        with urllib.request.urlopen(request, timeout=30) as resp:
            ids = {row["id"] for row in json.load(resp)["rows"] if not row["id"].startswith("_design/")}
        assert ids == set(self.acknowledged), f"stored without acknowledgement: {ids - set(self.acknowledged)}"


def complete_parts(body: bytes, boundary: str) -> list[bytes]:
    """The parts of ``body`` each followed by a delimiter (RFC 2046 5.1.1), as a strict reader sees them."""
    delimiter = b"\r\n--" + boundary.encode()
    pieces = (b"\r\n" + body).split(delimiter)[1:]
    parts = []
    for piece in pieces[:-1]:  # the last piece has no delimiter after it
        _, sep, content = piece.partition(b"\r\n\r\n")
        if sep:
            parts.append(content)
    return parts


@pytest.fixture
def serve(couch_server, couch_db_name: str, suite_auth) -> Iterator:
    """Start the server on the test's database with any settings (once per test)."""
    with_server: list = []

    def start(**settings) -> Archive:
        context = running(couch_server, couch_db_name, suite_auth, **settings)
        server = context.__enter__()
        with_server.append(context)
        return Archive(server, couch_server.url, couch_db_name, couch_server.headers())

    yield start
    for context in with_server:
        context.__exit__(None, None, None)


def part_bytes(boundary: str, content: bytes, headers: str = "Content-Type: application/dicom\r\n") -> bytes:
    return f"--{boundary}\r\n{headers}\r\n".encode() + content + b"\r\n"


# -- item 3: a body cut off inside a part ---------------------------------------------------------

def test_body_cut_off_inside_the_only_part_is_400_and_stores_nothing(serve):
    archive = serve()
    data = sample("CT_small.dcm")
    body, _ = multipart([data], boundary="cutb")
    cut = body[:len(body) // 2]  # a client that died mid-upload: no delimiter after the part
    status, answer = archive.stow(cut, "cutb")
    assert status == 400 and "cut-off" in answer["message"] and "nothing was stored" in answer["message"]
    archive.assert_holds_only_acknowledged()


def test_body_without_closing_delimiter_stores_nothing_of_the_last_part(serve):
    archive = serve()
    data = sample("CT_small.dcm")
    body = part_bytes("cutb", data)  # the whole file, but no delimiter ever follows it
    status, answer = archive.stow(body, "cutb")
    assert status == 400 and "before the boundary delimiter that completes it" in answer["message"]
    archive.assert_holds_only_acknowledged()


def test_complete_parts_before_a_cut_are_stored_and_the_cut_one_fails(serve):
    archive = serve()
    first, second = sample("MR_small.dcm"), sample("CT_small.dcm")
    body = part_bytes("cutb", first) + part_bytes("cutb", second)[:-5000]
    status, answer = archive.stow(body, "cutb")
    assert status == 202, answer
    assert len(answer["00081199"]["Value"]) == 1
    [failed] = answer["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0x0110]
    assert "nothing of this part was stored" in failed["00000902"]["Value"][0]
    assert set(archive.acknowledged.values()) == {first}
    archive.assert_holds_only_acknowledged()


# -- item 4: boundaries and part headers ----------------------------------------------------------

@pytest.mark.parametrize("boundary", [ORTHANC_BOUNDARY, "x" * 200, "a b'()+_,-./:=?"], ids=["73", "200", "bchars"])
def test_long_and_unusual_boundaries_are_accepted(serve, boundary):
    archive = serve()
    data = make_instance(generate_uid(), generate_uid())
    body, _ = multipart([data], boundary=boundary)
    status, answer = archive.stow(body, boundary)
    assert status == 200, answer
    assert list(archive.acknowledged.values()) == [data]


def test_boundary_over_200_characters_is_400(serve):
    archive = serve()
    boundary = "y" * 201
    body, _ = multipart([make_instance(generate_uid(), generate_uid())], boundary=boundary)
    status, answer = archive.stow(body, boundary)
    assert status == 400 and "boundary" in answer["message"]
    archive.assert_holds_only_acknowledged()


@pytest.mark.parametrize("headers", [
    "Content-Type: application/dicom\r\nX-Long: " + "h" * 9000 + "\r\n",
    "Content-Type: application/dicom\r\n" + "".join(f"X-Many-{i}: {i}\r\n" for i in range(200)),
    "Content-Type: application/dicom\r\nno colon in this line\r\n",
], ids=["line-9000-bytes", "200-headers", "no-colon"])
def test_hostile_part_headers_are_400(serve, headers):
    archive = serve()
    body = part_bytes("hb", make_instance(generate_uid(), generate_uid()), headers) + b"--hb--\r\n"
    status, answer = archive.stow(body, "hb")
    assert status == 400, answer
    assert "part 1" in answer["message"]
    archive.assert_holds_only_acknowledged()


def test_part_larger_than_max_instance_size_is_refused_alone(serve):
    archive = serve(max_instance_size=100_000)
    small, large = make_instance(generate_uid(), generate_uid()), make_instance(generate_uid(), generate_uid(),
                                                                                 rows=300, columns=300)
    body, _ = multipart([large, small], boundary="mb")
    status, answer = archive.stow(body, "mb")
    assert status == 202
    [failed] = answer["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xA700] and "max_instance_size" in failed["00000902"]["Value"][0]
    assert list(archive.acknowledged.values()) == [small]
    archive.assert_holds_only_acknowledged()


# -- item 6: silent and vanishing clients ---------------------------------------------------------

def _request_head(server: LiveServer, boundary: str, length: int) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in server.headers.items())
    return (f"POST /studies HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/dicom+json\r\n{extra}"
            f'Content-Type: multipart/related; type="application/dicom"; boundary={boundary}\r\n'
            f"Content-Length: {length}\r\n\r\n").encode()


def test_silent_client_gets_408_and_its_connection_closed(serve, caplog):
    archive = serve(client_timeout=1.0)
    data = sample("CT_small.dcm")
    body, _ = multipart([data], boundary="sb")
    started = time.monotonic()
    with archive.server.raw() as sock, caplog.at_level(logging.INFO):
        sock.sendall(_request_head(archive.server, "sb", len(body)) + body[:len(body) // 2])  # promises twice what it sends
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"nothing was stored" in answer
    assert time.monotonic() - started < 20  # the timeout (1 s) plus aiohttp's lingering close (10 s)
    archive.assert_holds_only_acknowledged()
    assert not [r for r in caplog.records if r.exc_info], "a silent client is no error with a traceback"
    assert [r for r in caplog.records if "sent nothing for 1 s" in r.getMessage()]


def test_client_that_disconnects_is_one_log_line_and_stores_nothing(serve, caplog):
    archive = serve()
    data = sample("CT_small.dcm")
    body, _ = multipart([data, make_instance(generate_uid(), generate_uid())], boundary="db")
    with caplog.at_level(logging.INFO):
        with archive.server.raw() as sock:
            sock.sendall(_request_head(archive.server, "db", len(body)) + body[:len(body) // 3])
            time.sleep(0.5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not [r for r in caplog.records if "closed the connection" in r.getMessage()]:
            time.sleep(0.1)
    lines = [r for r in caplog.records if "closed the connection" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert not [r for r in caplog.records if r.exc_info or "unexpected error" in r.getMessage()]
    archive.assert_holds_only_acknowledged()
    assert archive.server.request("GET", "/studies")[0] == 200  # and the server carries on


# -- generated bodies -----------------------------------------------------------------------------

BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?"


@st.composite
def part_contents(draw: st.DrawFn, pool: list[bytes]) -> bytes:
    data = draw(st.sampled_from(pool))
    damage = draw(st.sampled_from(["none", "truncate", "flip", "flips"]))
    if damage == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if damage in ("flip", "flips"):
        changed = bytearray(data)
        for _ in range(1 if damage == "flip" else draw(st.integers(2, 50))):
            at = draw(st.integers(0, len(data) - 1))
            changed[at] ^= 1 << draw(st.integers(0, 7))
        return bytes(changed)
    return data


@st.composite
def hostile_bodies(draw: st.DrawFn, pool: list[bytes]) -> tuple[bytes, str]:
    boundary = draw(st.text(BCHARS, min_size=1, max_size=200)).rstrip(" ") or "b"
    contents = draw(st.lists(part_contents(pool), min_size=0, max_size=3))
    assume(not any(("--" + boundary).encode() in c for c in contents))
    extra = draw(st.sampled_from(["", "Content-Length: 12\r\n", "Content-Type: application/json\r\n",
                                  "X-Junk: \x7f\xff\r\n", " folded\r\n"]))
    body = draw(st.sampled_from([b"", b"preamble\r\n"]))
    for content in contents:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n{extra}\r\n".encode("latin-1") + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode() + draw(st.sampled_from([b"", b"epilogue"]))
    ending = draw(st.sampled_from(["whole", "cut", "no-close"]))
    if ending == "cut" and body:
        body = body[:draw(st.integers(0, len(body) - 1))]
    elif ending == "no-close":
        body = body[:body.rindex(b"--" + boundary.encode() + b"--")]
    return body, boundary


POOL = [sample(name) for name in SAMPLES[:3]] + [make_instance(generate_uid(), generate_uid())]


@pytest.fixture
def shared_archive(serve) -> Archive:
    return serve()


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(case=hostile_bodies(POOL))
def test_generated_bodies_keep_the_archive_whole(shared_archive, case):
    body, boundary = case
    shared_archive.stow(body, boundary)
    shared_archive.assert_holds_only_acknowledged()


def test_every_pydicom_file_cut_short_or_bit_flipped_is_stored_exactly_or_refused(serve):
    """Damaged Part 10 files sent as complete parts: each is refused with a reason or stored as sent."""
    archive = serve()
    files = [Path(p) for p in pydicom.data.get_testdata_files() if Path(p).is_file()]
    refused = 0
    for number, path in enumerate(files):
        data = path.read_bytes()
        flipped = bytearray(data)
        flipped[(number * 7919) % min(len(data), 1024)] ^= 1 << (number % 8)  # in the meta or first elements
        body, _ = multipart([data[:len(data) // 2], data[:200], bytes(flipped)], boundary="pb")
        status, answer = archive.stow(body, "pb")
        assert status in (200, 202, 409), (path.name, answer)
        refused += len(answer.get("00081198", {}).get("Value", []))
        for failed in answer.get("00081198", {}).get("Value", []):
            assert failed["00000902"]["Value"], path.name  # says why
    archive.assert_holds_only_acknowledged()
    assert refused  # the damage is real: some were refused


def test_broken_chunked_transfer_encoding_mid_body_is_bounded_and_stores_nothing(serve, caplog):
    archive = serve(client_timeout=1.0)
    data = make_instance(generate_uid(), generate_uid())
    part = part_bytes("cb", data)
    extra = "".join(f"{name}: {value}\r\n" for name, value in archive.server.headers.items())
    head = (f"POST /studies HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n{extra}"
            'Content-Type: multipart/related; type="application/dicom"; boundary=cb\r\n\r\n').encode()
    with archive.server.raw() as sock, caplog.at_level(logging.INFO):
        sock.sendall(head + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        time.sleep(0.5)  # the handler is reading the body when the broken chunk comes
        sock.sendall(b"not-a-chunk-size\r\n\r\n")
        answer = sock.recv(65536)
    # aiohttp drops the broken chunk without failing the body, so the reader's timeout ends the wait
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("dicomweb_couch")]
    archive.assert_holds_only_acknowledged()
