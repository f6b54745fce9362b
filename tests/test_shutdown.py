"""Graceful shutdown and several workers, with real server processes: SIGTERM lets an upload in flight
finish and be stored while new connections are refused, within ``shutdown_timeout``; ``--workers N``
runs N processes on one port and replaces one that dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT, CouchServer, local_couch
from dicom_factory import make_instance, multipart
from pydicom.uid import generate_uid

from dicomweb_couch.settings import ENV_PREFIX


def start_server(couch: CouchServer, database: str, log: Path, *args: str,
                 **settings: str) -> tuple[subprocess.Popen, int]:
    port = local_couch.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({ENV_PREFIX + "COUCH_URL": couch.url, ENV_PREFIX + "DATABASE": database,
                ENV_PREFIX + "PORT": str(port), ENV_PREFIX + "OHIF_DIR": "/nonexistent",
                **({ENV_PREFIX + "COUCH_USER": couch.user, ENV_PREFIX + "COUCH_PASSWORD": couch.password or ""}
                   if couch.user else {}),
                **{ENV_PREFIX + k.upper(): v for k, v in settings.items()}})
    process = subprocess.Popen([sys.executable, "-m", "dicomweb_couch", "serve", *args], cwd=REPO_ROOT, env=env,
                               stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
                if resp.status == 200:
                    return process, port
        except OSError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)


def half_sent_upload(port: int, data: bytes) -> tuple[socket.socket, bytes]:
    """A STOW-RS request whose headers and first half of the body are sent; returns the rest."""
    body, content_type = multipart([data])
    head = (f"POST /studies HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            f"Accept: application/dicom+json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    half = len(body) // 2
    sock.sendall(head + body[:half])
    return sock, body[half:]


def response_status(sock: socket.socket) -> int:
    answer = b""
    while b"\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return int(answer.split(b" ", 2)[1]) if answer else 0


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_upload_in_flight_finishes_after_sigterm_and_new_ones_are_refused(couch_server, couch_db_name, tmp_path):
    server, port = start_server(couch_server, couch_db_name, tmp_path / "server.log", shutdown_timeout="30")
    try:
        sop = generate_uid()
        sock, rest = half_sent_upload(port, make_instance(generate_uid(), generate_uid(), sop, rows=256, columns=256))
        time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert server.poll() is None  # waiting for the upload
        assert refused(port)  # no longer listening
        sock.sendall(rest)
        assert response_status(sock) == 200
        sock.close()
        assert server.wait(timeout=30) == 0, (tmp_path / "server.log").read_text()
        assert couch_server.request("GET", f"{couch_db_name}/{sop}")[0] == 200  # stored, file and all
    finally:
        if server.poll() is None:
            server.kill()


def test_shutdown_is_bounded_by_shutdown_timeout(couch_server, couch_db_name, tmp_path):
    server, port = start_server(couch_server, couch_db_name, tmp_path / "server.log", shutdown_timeout="2")
    try:
        sock, _ = half_sent_upload(port, make_instance(generate_uid(), generate_uid()))  # never finished
        time.sleep(0.5)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        assert time.monotonic() - started < 10, (tmp_path / "server.log").read_text()
        sock.close()
    finally:
        if server.poll() is None:
            server.kill()


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_workers_share_the_port_and_a_dead_one_is_replaced(couch_server, couch_db_name, tmp_path):
    log = tmp_path / "server.log"
    server, port = start_server(couch_server, couch_db_name, log, "--workers", "2", shutdown_timeout="5")
    try:
        deadline = time.monotonic() + 60
        while len(workers := {c for c in children(server.pid) if _is_worker(c)}) < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        for _ in range(20):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
                assert resp.status == 200
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            now = {c for c in children(server.pid) if _is_worker(c)}
            if len(now) == 2 and victim not in now:
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        assert "starting another" in log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert resp.status == 200
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, log.read_text()
        assert refused(port)
    finally:
        if server.poll() is None:
            server.kill()


def _is_worker(pid: int) -> bool:
    """A spawned worker, not multiprocessing's resource tracker."""
    try:
        return "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False
