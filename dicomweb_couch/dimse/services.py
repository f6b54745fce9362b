"""What the DIMSE handlers share: the archive's store and search engine, the known peers, and the bridge
from pynetdicom's association threads to the web server's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dicomweb_couch.search.engine import SearchEngine
from dicomweb_couch.store.couch import Couch
from dicomweb_couch.store.files import Part10Store

T = TypeVar("T")

_LONGEST_STORE = 15 * 60.0
"""Seconds an association thread waits for the loop to finish one database operation (a
gigabyte file on a slow CouchDB); beyond it the operation is reported as a processing failure."""


@dataclass(frozen=True)
class RemoteAE:
    """A peer the archive may open associations to (a C-MOVE destination), PS3.8 7.1.1.2."""

    title: str
    host: str
    port: int


def parse_remote_aes(entries: tuple[str, ...]) -> dict[str, RemoteAE]:
    """``TITLE@host:port`` entries (the ``dimse_remote_aes`` setting) by AE title."""
    remotes: dict[str, RemoteAE] = {}
    for entry in entries:
        title, at, address = entry.strip().rpartition("@")
        host, colon, port = address.rpartition(":")
        if not (at and colon and title.strip() and host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"dimse_remote_aes: {entry!r} is not TITLE@host:port")
        if len(title.strip()) > 16:
            raise ValueError(f"dimse_remote_aes: AE title {title.strip()!r} is longer than 16 characters (PS3.5 6.2)")
        remotes[title.strip()] = RemoteAE(title.strip(), host.strip("[]"), int(port))
    return remotes


class LoopBridge:
    """Runs coroutines on the server's event loop from pynetdicom's threads and waits for them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = _LONGEST_STORE) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise


@dataclass
class Services:
    """What the DIMSE handlers work with: the archive's store, its files and search engine, and the known peers."""

    couch: Couch
    files: Part10Store
    search: SearchEngine
    bridge: LoopBridge
    ae_title: str
    remote_aes: dict[str, RemoteAE] = field(default_factory=dict)
