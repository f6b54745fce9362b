"""``python -m dicomweb_couch`` as a real process for the tests: a clean environment, one-shot
commands, a server started on a free port and stopped by signal."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from conftest import REPO_ROOT, CouchServer

START_TIMEOUT = 30
STOP_TIMEOUT = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any DICOMWEB_COUCH_* setting, the package importable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_COUCH_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def couch_env(couch: CouchServer) -> dict[str, str]:
    """Credentials of the test CouchDB, passed as the environment (not on the command line)."""
    env = {}
    if couch.user is not None:
        env["DICOMWEB_COUCH_COUCH_USER"] = couch.user
        env["DICOMWEB_COUCH_COUCH_PASSWORD"] = couch.password or ""
    return env


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """``python -m dicomweb_couch ARGS`` to completion (for the commands that exit at once)."""
    return subprocess.run([sys.executable, "-m", "dicomweb_couch", *args], cwd=REPO_ROOT, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def assert_clean_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """Failed with a single line on stderr that names ``words``, and no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@dataclass
class ServerProcess:
    proc: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@asynccontextmanager
async def server_process(tmp_path: Path, *args: str, env: dict[str, str]) -> AsyncIterator[ServerProcess]:
    """Start ``python -m dicomweb_couch --port <free> ARGS``, wait until it answers, SIGTERM it at the end.

    Its log (stderr) goes to a file, so a chatty server can never block on a full pipe.
    """
    port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dicomweb_couch", "--port", str(port), *args,
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    server = ServerProcess(proc, port, log_path)
    try:
        await wait_until_answering(server)
        yield server
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def wait_until_answering(server: ServerProcess) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while True:
            if server.proc.returncode is not None:
                pytest.fail(f"the server exited with {server.proc.returncode} at start-up:\n{server.log()}")
            try:
                async with session.get(server.url + "/", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            if loop.time() > deadline:
                pytest.fail(f"the server did not answer within {START_TIMEOUT} s:\n{server.log()}")
            await asyncio.sleep(0.2)


async def terminate(server: ServerProcess) -> int:
    """SIGTERM, as a process supervisor stops it; the exit code, which must come within STOP_TIMEOUT."""
    server.proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(server.proc.wait(), STOP_TIMEOUT)
