"""Helpers of the DIMSE gateway tests: a server with the gateway on, peers' binaries, SCU calls."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient

from dicomweb_couch.appkeys import GATEWAY

AE_TITLE = "ARCHIVE"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name: str) -> str:
    """The path of a peer's program (DCMTK, Orthanc); skips the test when it is missing, except
    in CI (CI=true), where a missing peer is a failure of the setup."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is not installed (.ci/run installs it with apt-get)")
        pytest.skip(f"{name} is not installed")
    return path


@dataclass
class Archive:
    """A running server with the gateway on: its web client and its DIMSE address."""

    client: TestClient
    port: int
    ae_title: str = AE_TITLE


async def start_archive(make_client, database: str, **settings) -> Archive:
    client = await make_client(database, dimse_port=free_port(), dimse_ae_title=AE_TITLE, **settings)
    return Archive(client, client.app[GATEWAY].port)


async def run(*argv: str, timeout: float = 120) -> tuple[int, str]:
    """Run a peer program without blocking the loop the server runs on: (exit code, its output)."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(errors="replace")
