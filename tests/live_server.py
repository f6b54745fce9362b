"""The archive served from a background thread on a free loopback port, for tests that speak raw
HTTP (cut-off bodies, silent clients, many concurrent writers) or let another program (Orthanc)
be the client, and for hypothesis tests, which cannot take pytest-aiohttp's per-test fixtures.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dicomweb_couch.app import create_app
from dicomweb_couch.settings import Settings


@dataclass(frozen=True)
class LiveServer:
    host: str
    port: int
    headers: dict[str, str]
    """What every request of the tests carries (the suite's token under DICOMWEB_COUCH_TEST_AUTH)."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
        """One request on its own connection: (status, headers, body)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def stow(self, body: bytes, content_type: str, path: str = "/studies") -> tuple[int, dict[str, str], bytes]:
        return self.request("POST", path, body, {"Content-Type": content_type, "Accept": "application/dicom+json"})

    def wado_uri(self, study: str, series: str, sop: str) -> tuple[int, bytes]:
        query = urllib.parse.urlencode({"requestType": "WADO", "studyUID": study, "seriesUID": series,
                                        "objectUID": sop, "contentType": "application/dicom"})
        status, _, body = self.request("GET", "/wado?" + query)
        return status, body

    def raw(self) -> socket.socket:
        """A plain TCP connection, for requests that break HTTP's rules on purpose."""
        return socket.create_connection((self.host, self.port), timeout=30)


def store_response(body: bytes) -> dict[str, Any]:
    return json.loads(body) if body else {}


@contextmanager
def running(couch: Any, database: str, auth: Any, **settings: Any) -> Iterator[LiveServer]:
    """Serve ``database`` of the tests' CouchDB (conftest's ``couch_server``) until the block ends,
    behind the suite's authentication (conftest's ``suite_auth``); ``settings`` as Settings fields."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="live-server", daemon=True)
    thread.start()
    config = Settings(couch_url=couch.url, couch_user=couch.user, couch_password=couch.password, database=database,
                      couch_wait=30, **{**auth.settings, **settings})
    runner = web.AppRunner(create_app(config), handle_signals=False)

    async def start() -> tuple[str, int]:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner.addresses[0][:2]

    async def stop() -> None:
        """Clean up, then end what is left (e.g. a connection aiohttp still lingers on)."""
        await runner.cleanup()
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    try:
        host, port = asyncio.run_coroutine_threadsafe(start(), loop).result(90)
        yield LiveServer(host, port, dict(auth.headers))
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
