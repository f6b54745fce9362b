"""Faults of the store and of the server itself: the archive loses nothing it acknowledged, and a
client never hangs on a store that stopped answering (issue 9, items 5 and 9).

Every test starts its OWN pouchdb-server (scripts/local_couch.py, supervised as ``scripts/run``
does) and stops, freezes or kills it, or kills the archive server (a subprocess) with SIGKILL.
The figures of each run (instances acknowledged / found / byte-exact) are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import REPO_ROOT, local_couch
from dicom_factory import make_instance, multipart
from pydicom.uid import generate_uid

from dicomweb_couch.app import create_app
from dicomweb_couch.errors import error_middleware
from dicomweb_couch.settings import Settings
from dicomweb_couch.store import couch as couch_module
from dicomweb_couch.store import design_docs
from dicomweb_couch.store.couch import (
    Couch,
    CouchRefused,
    CouchUnavailable,
    IndexNotReady,
)

COUCH_TIMEOUT = 2.0
ACCEPT_JSON = {"Accept": "application/dicom+json"}


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[Any]:
    """A pouchdb-server of this test alone (a ``local_couch.LocalCouch``), supervised."""
    local_couch.ensure_installed()
    with local_couch.start(tmp_path / "couch", port=0) as couch:
        yield couch


def _signal_store(store: Any, sig: signal.Signals) -> None:
    """Signal the store's whole process group (supervisor and pouchdb-server)."""
    os.killpg(store.pid, sig)


async def _stow(session: aiohttp.ClientSession, root: str, files: list[bytes],
                timeout: float = 60) -> tuple[int, dict[str, Any], dict[str, str]]:
    body, content_type = multipart(files)
    async with session.post(root + "/studies", data=body, timeout=aiohttp.ClientTimeout(total=timeout),
                            headers={"Content-Type": content_type, **ACCEPT_JSON}) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


def _acknowledged(answer: dict[str, Any]) -> list[str]:
    """SOP Instance UIDs of the ReferencedSOPSequence (0008,1199) of a STOW-RS response."""
    items = (answer.get("00081199") or {}).get("Value") or []
    return [item["00081155"]["Value"][0] for item in items]


async def _check_archive(session: aiohttp.ClientSession, root: str, study: str, sent: dict[str, bytes],
                         acknowledged: set[str]) -> dict[str, int]:
    """Every acknowledged instance retrievable byte-exact (WADO-URI), and the study's QIDO-RS count
    equal to what is retrievable. Returns the figures of the run."""
    found = exact = 0
    for sop, data in sent.items():
        async with session.get(root + "/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": _series(study),
                                                       "objectUID": sop, "contentType": "application/dicom"}) as resp:
            body = await resp.read()
        if resp.status == 200:
            found += 1
            exact += body == data
            assert body == data, f"instance {sop} comes back altered ({len(body)} of {len(data)} bytes)"
        else:
            assert resp.status == 404, (resp.status, body[:200])
            assert sop not in acknowledged, f"acknowledged instance {sop} is lost"
    async with session.get(root + f"/studies/{study}/instances", headers=ACCEPT_JSON) as resp:
        listed = await resp.json(content_type=None) if resp.status == 200 else []
    assert resp.status in (200, 204)
    assert len(listed) == found, f"QIDO-RS lists {len(listed)} instances, {found} are retrievable"
    return {"acknowledged": len(acknowledged), "found": found, "byte_exact": exact, "qido": len(listed)}


def _instances(study: str, count: int, rows: int = 16) -> dict[str, bytes]:
    """``count`` new instances of the one series of ``study`` (see :func:`_series`)."""
    out = {}
    for n in range(count):
        sop = generate_uid()
        out[sop] = make_instance(study, _series(study), sop, instance_number=n + 1, rows=rows, columns=rows)
    return out


def _series(study: str) -> str:
    """The series UID the tests use in ``study``: derived from it, so no table is needed."""
    return generate_uid(entropy_srcs=[study])


# -- a frozen store (SIGSTOP): bounded waits ----------------------------------------------------------


async def test_frozen_store_gives_503_with_retry_after_within_couch_timeout(aiohttp_client, own_store) -> None:
    settings = Settings(couch_url=own_store.url, database="faults", couch_wait=30, auth="none",
                        couch_timeout=COUCH_TIMEOUT)
    client = await aiohttp_client(create_app(settings))
    study = generate_uid()
    sent = _instances(study, 1)
    body, content_type = multipart(list(sent.values()))
    resp = await client.post("/studies", data=body, headers={"Content-Type": content_type, **ACCEPT_JSON})
    assert resp.status == 200, await resp.text()
    sop = next(iter(sent))
    wado = (f"/wado?requestType=WADO&studyUID={study}&seriesUID={_series(study)}&objectUID={sop}"
            "&contentType=application/dicom")
    requests = [("GET", "/studies", None), ("GET", f"/studies/{study}/series/{_series(study)}/instances", None),
                ("GET", wado, None), ("GET", "/", None), ("POST", "/studies", _instances(study, 1))]
    _signal_store(own_store, signal.SIGSTOP)
    try:
        for method, path, files in requests:
            started = time.monotonic()
            kwargs: dict[str, Any] = {}
            if files:
                data, kind = multipart(list(files.values()))
                kwargs = {"data": data, "headers": {"Content-Type": kind, **ACCEPT_JSON}}
            resp = await asyncio.wait_for(client.request(method, path, **kwargs), 8 * COUCH_TIMEOUT)
            took = time.monotonic() - started
            await resp.read()
            assert resp.status == 503, (path, resp.status)
            assert resp.headers.get("Retry-After", "").isdigit(), (path, dict(resp.headers))
            # within couch_timeout, plus slack for a CPU shared with other test runs
            assert took < COUCH_TIMEOUT + 2, f"{method} {path}: 503 after {took:.1f} s"
            print(f"\nfrozen store, couch_timeout {COUCH_TIMEOUT:g} s: {method} {path[:40]} -> 503 in {took:.2f} s", end="")
    finally:
        _signal_store(own_store, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while (resp := await client.get(wado)).status != 200:  # recovers by itself: no restart of ours
        assert time.monotonic() < deadline, f"no recovery after SIGCONT: {resp.status}"
        await asyncio.sleep(0.3)
    assert await resp.read() == sent[sop]


# -- the store stopped and restarted under load --------------------------------------------------------


async def test_store_stopped_and_restarted_under_load(aiohttp_client, tmp_path: Path) -> None:
    local_couch.ensure_installed()
    data_dir = tmp_path / "couch"
    store = local_couch.start(data_dir, port=0)
    port = store.port
    settings = Settings(couch_url=store.url, database="faults", couch_wait=30, auth="none", couch_timeout=COUCH_TIMEOUT)
    client = await aiohttp_client(create_app(settings))
    study = generate_uid()
    sent: dict[str, bytes] = {}
    acknowledged: set[str] = set()
    answers: list[tuple[int, float, str | None]] = []
    stop = asyncio.Event()

    async def writer() -> None:
        while not stop.is_set():
            files = _instances(study, 2)
            sent.update(files)
            data, kind = multipart(list(files.values()))
            started = time.monotonic()
            resp = await client.post("/studies", data=data, headers={"Content-Type": kind, **ACCEPT_JSON})
            answer = await resp.json(content_type=None)
            answers.append((resp.status, time.monotonic() - started, resp.headers.get("Retry-After")))
            if resp.status in (200, 202):
                acknowledged.update(_acknowledged(answer))

    async def reader() -> None:
        while not stop.is_set():
            started = time.monotonic()
            resp = await client.get("/studies", headers=ACCEPT_JSON)
            await resp.read()
            answers.append((resp.status, time.monotonic() - started, resp.headers.get("Retry-After")))
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(writer()), asyncio.create_task(reader())]
    try:
        await asyncio.sleep(1.5)
        store.stop()
        await asyncio.sleep(3)
        down = [a for a in answers if a[0] == 503]
        store = local_couch.start(data_dir, port=port)
        await asyncio.sleep(3)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    try:
        assert down, "no request met the stopped store"
        for status, took, retry_after in answers:
            assert status in (200, 202, 204, 503), status
            if status == 503:
                assert retry_after and retry_after.isdigit()
                assert took < COUCH_TIMEOUT + 2, f"a 503 took {took:.1f} s"
        async with aiohttp.ClientSession() as session:
            figures = await _check_archive(session, str(client.make_url("")).rstrip("/"), study, sent, acknowledged)
        print(f"\nstore restart under load: {figures}, 503 answers: {len(down)}")
        assert figures["found"] >= figures["acknowledged"] > 0
    finally:
        store.stop()


# -- the archive server killed mid-STOW (SIGKILL), ten times ---------------------------------------------


@asynccontextmanager
async def _server(tmp_path: Path, couch_url: str, port: int) -> AsyncIterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_COUCH_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    with (tmp_path / "server.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dicomweb_couch", "--port", str(port), "--couch-url", couch_url,
                                 "--database", "faults"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                try:
                    async with session.get(f"http://127.0.0.1:{port}/", timeout=aiohttp.ClientTimeout(total=5)) as r:
                        if r.status == 200:
                            break
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
                await asyncio.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_archive_killed_mid_stow_ten_times(tmp_path: Path, own_store) -> None:
    port = local_couch.free_port()
    root = f"http://127.0.0.1:{port}"
    study = generate_uid()
    sent: dict[str, bytes] = {}
    acknowledged: set[str] = set()
    store_pids = {own_store.server_pid()}
    rng = random.Random(9)
    async with aiohttp.ClientSession() as session:
        for _ in range(10):
            async with _server(tmp_path, own_store.url, port) as proc:

                async def keep_storing() -> None:
                    while True:  # until the kill below cuts the connection
                        files = _instances(study, 3, rows=512)  # ~0.5 MiB each: the kill lands mid-upload
                        sent.update(files)
                        status, answer, _ = await _stow(session, root, list(files.values()))
                        if status in (200, 202):
                            acknowledged.update(_acknowledged(answer))

                task = asyncio.create_task(keep_storing())
                await asyncio.sleep(rng.uniform(1.0, 3.0))
                proc.kill()  # SIGKILL: no clean-up of any kind
                proc.wait()
                with pytest.raises(aiohttp.ClientError):
                    await task
            assert local_couch.server_info(own_store.url, timeout=5) is not None or _wait_for_store(own_store)
            store_pids.add(own_store.server_pid())
        async with _server(tmp_path, own_store.url, port):
            figures = await _check_archive(session, root, study, sent, acknowledged)
    figures["store_restarts"] = len(store_pids) - 1
    print(f"\nkill -9 mid-STOW x10: {json.dumps(figures)} (sent {len(sent)})")
    assert figures["acknowledged"] > 0 and figures["found"] >= figures["acknowledged"]


def _wait_for_store(store: Any, timeout: float = 20) -> bool:
    """Whether the supervisor brought pouchdb-server back within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if local_couch.server_info(store.url, timeout=1) is not None:
            return True
        time.sleep(0.2)
    return False


# -- what CouchDB's answers mean ---------------------------------------------------------------------------


async def test_a_request_couchdb_refuses_is_not_an_outage(couch_server, couch_db_name) -> None:
    """A 4xx from CouchDB (here a malformed view parameter) is CouchRefused, not CouchUnavailable."""
    couch = Couch(couch_server.url, couch_db_name, couch_server.user, couch_server.password)
    await couch.open(30)
    try:
        for doc_id, content in design_docs.load().items():
            await couch.install_design_doc(doc_id, content)
        with pytest.raises(CouchRefused) as refused:
            await couch.view("qido", "instances", limit="many")
        assert 400 <= refused.value.status < 500
    finally:
        await couch.close()


async def test_error_answers(aiohttp_client) -> None:
    """How the middleware answers each store error; every 503, whoever sends it, has Retry-After."""
    async def raising(request: web.Request) -> web.StreamResponse:
        raise {"refused": CouchRefused(400, "CouchDB refused GET /db/_design/qido/_view/x (400: too long)"),
               "too-large": CouchRefused(413, "CouchDB refused PUT (413: document too large)"),
               "indexing": IndexNotReady("GET view did not finish within 60 s"),
               "down": CouchUnavailable("CouchDB did not answer GET / within 10 s")}[request.match_info["kind"]]

    async def plain_503(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="not now")

    app = web.Application(middlewares=[error_middleware])
    app.add_routes([web.get("/raise/{kind}", raising), web.get("/plain", plain_503)])
    client = await aiohttp_client(app)
    expected = {"refused": 400, "too-large": 413, "indexing": 503, "down": 503}
    for kind, status in expected.items():
        resp = await client.get(f"/raise/{kind}")
        body = await resp.json()
        assert resp.status == status, (kind, body)
        assert ("Retry-After" in resp.headers) == (status == 503), kind
        assert "_design" not in body["message"] and "_view" not in body["message"]
    assert "indexing" in (await (await client.get("/raise/indexing")).json())["message"]
    resp = await client.get("/plain")
    assert resp.status == 503 and resp.headers["Retry-After"].isdigit()


async def test_a_view_still_indexing_is_503_with_retry_after(make_client, couch_db_name) -> None:
    client = await make_client(couch_db_name, couch_view_timeout=0.001)
    study = generate_uid()
    # stored first: study searches read the catalog, series and instance searches of a known study the views
    body, content_type = multipart(list(_instances(study, 1).values()))
    assert (await client.post("/studies", data=body, headers={"Content-Type": content_type, **ACCEPT_JSON})).status == 200
    resp = await client.get(f"/studies/{study}/series/{_series(study)}/instances", headers=ACCEPT_JSON)
    body = await resp.json()
    assert resp.status == 503 and resp.headers["Retry-After"].isdigit()
    assert "indexing" in body["message"]


async def test_an_instance_larger_than_pouchdb_takes_is_refused(make_client, couch_db_name, local_couch_store,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """On pouchdb-server, files above POUCHDB_MAX_ATTACHMENT never reach it (a 300 MiB one would kill
    it): the STOW answer says 0xA700, out of resources."""
    if local_couch_store is None:
        pytest.skip("an external CouchDB: the pouchdb-server limit does not apply")
    monkeypatch.setattr(couch_module, "POUCHDB_MAX_ATTACHMENT", 1000)
    client = await make_client(couch_db_name)
    study = generate_uid()
    body, content_type = multipart(list(_instances(study, 1).values()))
    resp = await client.post("/studies", data=body, headers={"Content-Type": content_type, **ACCEPT_JSON})
    answer = await resp.json(content_type=None)
    assert resp.status == 409, answer
    assert answer["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]


# -- the local store: a write form it survives, and a supervisor ------------------------------------------


class _SlowFile(io.BytesIO):
    """A file whose reads take a while, so an upload can be cut off in the middle."""

    def read(self, n: int | None = -1) -> bytes:
        time.sleep(0.05)
        return super().read(min(n or 65536, 65536) if n and n > 0 else 65536)


async def test_an_upload_cut_off_leaves_pouchdb_up_and_nothing_visible(own_store) -> None:
    couch = Couch(own_store.url, "faults")
    await couch.open(30)
    pid = own_store.server_pid()
    study = generate_uid()
    sop, data = next(iter(_instances(study, 1, rows=1024).items()))
    doc = {"_id": sop, "dataset": {"0020000D": {"vr": "UI", "Value": [study]}},
           "md5hash": hashlib.md5(data).hexdigest()}
    try:
        upload = asyncio.create_task(couch.store_instance(doc, _SlowFile(data), len(data)))
        await asyncio.sleep(0.5)
        upload.cancel()  # as a killed archive would: the connection closes mid-upload
        await asyncio.gather(upload, return_exceptions=True)
        await asyncio.sleep(1.0)
        assert own_store.server_pid() == pid and local_couch.server_info(own_store.url) is not None, \
            "pouchdb-server died of an upload cut off"
        left = await couch.get_doc(sop)
        assert left is None or "dataset" not in left  # invisible to every view and look-up
        assert await couch.store_instance(doc, io.BytesIO(data), len(data))  # and a retry stores it whole
        async with couch.attachment(sop) as attachment:
            assert attachment is not None
            assert b"".join([chunk async for chunk in attachment.chunks]) == data
    finally:
        await couch.close()


def test_supervisor_restarts_a_killed_store(own_store) -> None:
    status, _ = _couch_request(own_store.url, "PUT", "/kept")
    assert status == 201
    time.sleep(1)  # pouchdb-server acknowledges before LevelDB has it: a kill at once can lose it
    pid = own_store.server_pid()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while own_store.server_pid() in (None, pid):  # the supervisor starts a new one
        assert time.monotonic() < deadline, own_store.log_tail()
        time.sleep(0.1)
    assert _wait_for_store(own_store), own_store.log_tail()
    assert _couch_request(own_store.url, "GET", "/kept")[0] == 200
    assert "restarting" in own_store.out_path.read_text()


def test_detached_store_is_supervised_and_stops_whole(tmp_path: Path) -> None:
    """``start --detach`` (what scripts/run uses): restarted when killed, and ``stop`` ends it all."""
    data, port = tmp_path / "couch", local_couch.free_port()
    script = [sys.executable, str(REPO_ROOT / "scripts" / "local_couch.py")]
    subprocess.run(script + ["start", "--data", str(data), "--port", str(port), "--detach"], check=True, timeout=60)
    url = f"http://127.0.0.1:{port}"
    supervisor = int((data / local_couch.PID_FILE_NAME).read_text())
    child = int((data / local_couch.CHILD_PID_FILE_NAME).read_text())
    try:
        os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while local_couch.server_info(url, timeout=1) is None or \
                int((data / local_couch.CHILD_PID_FILE_NAME).read_text()) == child:
            assert time.monotonic() < deadline, "the detached store was not restarted"
            time.sleep(0.2)
    finally:
        subprocess.run(script + ["stop", "--data", str(data)], check=True, timeout=60)
    assert local_couch.server_info(url, timeout=1) is None
    for pid in (supervisor, int((data / local_couch.CHILD_PID_FILE_NAME).read_text()
                                if (data / local_couch.CHILD_PID_FILE_NAME).exists() else child)):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _couch_request(url: str, method: str, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(url + path, method=method, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(("status", "answer", "view", "expected"), [
    (500, {"error": "timeout", "reason": "The request could not be processed in a reasonable amount of time."},
     True, IndexNotReady),  # Apache CouchDB 3.5 after 60 s of building an index (fabric request_timeout)
    (500, {"error": "timeout"}, False, CouchUnavailable),
    (503, {}, True, CouchUnavailable),
    (400, {"error": "bad_request", "reason": "key too long"}, True, CouchRefused),
    (413, {"error": "too_large"}, False, CouchRefused),
    (401, {"error": "unauthorized"}, False, CouchUnavailable),  # our credentials: the store is unusable
    (404, {"error": "not_found", "reason": "Database does not exist."}, False, CouchUnavailable),
])
def test_what_each_couchdb_answer_means(status: int, answer: dict, view: bool, expected: type) -> None:
    """Answers pouchdb-server never gives (Apache CouchDB's index timeout) are classified too."""
    error = couch_module._refusal(status, answer, "GET /db/_design/qido/_view/instances", view)
    assert type(error) is expected
