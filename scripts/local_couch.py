#!/usr/bin/env python3
"""A local CouchDB-API store for tests and local runs: pouchdb-server 4.2.0 from npm.

Production runs on Apache CouchDB 3; this machine cannot install it, so tests and
``scripts/run`` use pouchdb-server (LevelDB on disk), pinned in
``scripts/localcouch/package-lock.json``. Only this tooling uses npm; the
server package (``dicomweb_couch``) never does. Standard library only.

Everything pouchdb-server writes goes into the data folder:

* the LevelDB folders of the databases (``--dir``);
* ``config.json`` (backs ``/_config``) and ``log.txt`` (its request log), which it
  would otherwise write into its working directory: it runs with ``cwd=data_dir``;
* ``.tmp/``, its ``TMPDIR``: pouchdb-server never deletes multipart uploads, so
  this folder is emptied at every start and stop (a leading dot keeps it apart
  from database names, which must start with a lowercase letter);
* ``pouchdb-server.out``: its stdout and stderr (start-up errors, crashes);
* ``pouchdb-server.pid`` while started with ``start --detach`` (the supervisor's pid), and
  ``pouchdb-server.child`` (pouchdb-server's own pid, rewritten at every restart).

**Supervised.** pouchdb-server 4.2.0 dies of some client faults (an aborted multipart document
PUT throws an uncaught ``Error: Request aborted``; a very large attachment exhausts V8). So
:func:`start` runs it under a small supervisor (this script's ``supervise`` command, in the same
process group) that starts it again on the same port and data whenever it exits without being
asked to, at most ``MAX_RESTARTS`` times a minute; its output says when and why. Clients see a
few seconds of refused connections, then the same databases. It runs with a V8 heap of
``HEAP_MB`` MiB (``node --max-old-space-size``), the same on every machine.

Python use::

    from local_couch import ensure_installed, start
    ensure_installed()
    with start("var/couch", port=0) as couch:   # port=0: a free port
        print(couch.url)

Command line::

    python scripts/local_couch.py install                        # npm ci when needed
    python scripts/local_couch.py start --data var/couch --port 5984   # foreground
    python scripts/local_couch.py start --data var/couch --detach      # background
    python scripts/local_couch.py stop --data var/couch          # stop a detached one
    python scripts/local_couch.py ping http://127.0.0.1:5984     # exit 0 if CouchDB answers

pouchdb-server CLI quirks this module works around: ``--port 0`` falls back to
5984 (so a free port is chosen here); when the port is taken it does not always
exit (so the port is checked first); it writes ``config.json`` and ``log.txt``
into its working directory whatever ``--dir`` says; ``--no-stdout-logs`` is
silently ignored (its option parser reads ``--no-X`` as "X is false"), only
``-n`` works.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

PACKAGE_DIR = Path(__file__).resolve().parent / "localcouch"
"""The npm package that pins pouchdb-server (``package.json``, ``package-lock.json``)."""
BIN = PACKAGE_DIR / "node_modules" / ".bin" / "pouchdb-server"
_STAMP = PACKAGE_DIR / "node_modules" / ".localcouch-lock.sha256"

TMP_DIR_NAME = ".tmp"
OUT_FILE_NAME = "pouchdb-server.out"
PID_FILE_NAME = "pouchdb-server.pid"
CHILD_PID_FILE_NAME = "pouchdb-server.child"
HEAP_MB = 2048
"""V8 heap of pouchdb-server. It holds a whole attachment several times over while storing it;
beyond ~64 MiB per attachment pouchdb-server fails whatever the heap (README "Security and limits")."""
MAX_RESTARTS = 5  # per minute; a store that dies faster than that has a problem restarts do not fix
LOG_FILE_NAME = "log.txt"  # written by pouchdb-server itself, relative to its cwd
CONFIG_FILE_NAME = "config.json"


class LocalCouchError(RuntimeError):
    """The local store could not be installed, started or reached."""


# --------------------------------------------------------------------------- install


def _lock_digest() -> str:
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update((PACKAGE_DIR / name).read_bytes())
    return h.hexdigest()


def is_installed() -> bool:
    """True when pouchdb-server is installed from the current lockfile."""
    try:
        return BIN.exists() and _STAMP.read_text().strip() == _lock_digest()
    except OSError:
        return False


def ensure_installed(quiet: bool = False) -> Path:
    """Install pouchdb-server with ``npm ci`` unless it is installed from the current lockfile.

    Install scripts are skipped (``--ignore-scripts``, as npm 11 does by default):
    ``leveldown`` ships prebuilt binaries and the only other package with one,
    ``sqlite3``, is optional and unused. Returns the path of the pouchdb-server
    executable. Raises :class:`LocalCouchError` when node or npm is missing or
    ``npm ci`` fails.
    """
    if is_installed():
        return BIN
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise LocalCouchError(
            f"{' and '.join(missing)} not found on PATH: the local CouchDB-API store "
            "(pouchdb-server) needs Node.js and npm (Debian: apt-get install nodejs npm). "
            "Or use an existing CouchDB: DICOMWEB_COUCH_URL for scripts/run, "
            "DICOMWEB_COUCH_TEST_URL for the tests."
        )
    if not quiet:
        print(f"local_couch: installing pouchdb-server (npm ci in {PACKAGE_DIR})", file=sys.stderr)
    cmd = ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
    result = subprocess.run(
        cmd,
        cwd=PACKAGE_DIR,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if result.returncode != 0 or not BIN.exists():
        raise LocalCouchError(
            f"{' '.join(cmd)} failed in {PACKAGE_DIR} (exit {result.returncode}):\n"
            + _tail(result.stdout)
        )
    _STAMP.write_text(_lock_digest() + "\n")
    return BIN


# --------------------------------------------------------------------------- HTTP


def server_info(url: str, timeout: float = 2.0) -> dict[str, object] | None:
    """``GET /`` of a CouchDB-API server: its JSON welcome object, or None if none answers.

    Sends ``Accept: application/json`` (pouchdb-server answers text/plain otherwise).
    Only servers whose answer looks like CouchDB's (``couchdb`` or ``express-pouchdb``
    welcome key) count.
    """
    request = urllib.request.Request(url.rstrip("/") + "/", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            info = json.loads(response.read())
    except (OSError, ValueError):  # URLError, HTTPError and timeouts are OSErrors
        return None
    if isinstance(info, dict) and ("couchdb" in info or "express-pouchdb" in info):
        return info
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as node does
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise LocalCouchError(f"cannot listen on {host}:{port}: {exc}") from exc
    return True


# --------------------------------------------------------------------------- process


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _file_tail(path: Path, lines: int = 30) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError:
        return ""


def _reset_tmp(data_dir: Path) -> Path:
    tmp = data_dir / TMP_DIR_NAME
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


class LocalCouch:
    """A running pouchdb-server; stop it with :meth:`stop` or use it as a context manager."""

    def __init__(self, process: subprocess.Popen[bytes], data_dir: Path, host: str, port: int):
        self.process = process
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:5984``."""

    @property
    def pid(self) -> int:
        """The supervisor's pid (its process group holds pouchdb-server too)."""
        return self.process.pid

    def server_pid(self) -> int | None:
        """pouchdb-server's own pid right now (it changes when the supervisor restarts it)."""
        try:
            return int((self.data_dir / CHILD_PID_FILE_NAME).read_text())
        except (OSError, ValueError):
            return None

    @property
    def out_path(self) -> Path:
        """pouchdb-server's stdout and stderr."""
        return self.data_dir / OUT_FILE_NAME

    @property
    def log_path(self) -> Path:
        """pouchdb-server's own log file (one line per request)."""
        return self.data_dir / LOG_FILE_NAME

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of pouchdb-server's output and log, for error messages."""
        parts = []
        for path in (self.out_path, self.log_path):
            text = _file_tail(path, lines)
            if text:
                parts.append(f"--- {path}\n{text}")
        return "\n".join(parts) or "(pouchdb-server wrote nothing)"

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate pouchdb-server's process group, wait, kill it if needed; empty its TMPDIR."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.data_dir / TMP_DIR_NAME, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            pid_file = self.data_dir / PID_FILE_NAME
            if pid_file.read_text().strip() == str(self.process.pid):
                pid_file.unlink()

    def __enter__(self) -> LocalCouch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalCouch(url={self.url!r}, data_dir={str(self.data_dir)!r}, pid={self.pid})"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def start(
    data_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 5984,
    timeout: float = 30.0,
) -> LocalCouch:
    """Start pouchdb-server on ``host:port`` with its data in ``data_dir``; return once it answers.

    ``port=0`` chooses a free port. The process runs in its own session (process
    group), so a Ctrl-C in the terminal reaches only the caller, which stops it.
    Raises :class:`LocalCouchError` when pouchdb-server is not installed (see
    :func:`ensure_installed`), the port is taken, or it does not answer
    ``GET /`` within ``timeout`` seconds (the message holds its log tail).
    """
    if not BIN.exists():
        raise LocalCouchError(
            f"pouchdb-server is not installed: run ensure_installed() ({BIN} missing)"
        )
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    if port == 0:
        port = free_port(host)  # pouchdb-server turns --port 0 into its default, 5984
    elif not _port_is_free(host, port):
        raise LocalCouchError(f"cannot start pouchdb-server: {host}:{port} is already in use")
    _reset_tmp(data)
    (data / CHILD_PID_FILE_NAME).unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "supervise", "--data", str(data),
           "--host", host, "--port", str(port)]
    with open(data / OUT_FILE_NAME, "ab") as out:
        process = subprocess.Popen(
            cmd,
            cwd=data,  # its log.txt is relative to the working directory
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    couch = LocalCouch(process, data, host, port)
    try:
        _wait_until_ready(couch, timeout)
    except BaseException:  # also Ctrl-C while waiting: leave nothing running
        couch.stop()
        raise
    return couch


def _server_command(data: Path, host: str, port: int) -> list[str]:
    return [
        "node", f"--max-old-space-size={HEAP_MB}", str(BIN.resolve()),
        "--dir", str(data),
        "--config", str(data / CONFIG_FILE_NAME),
        "--host", host,
        "--port", str(port),
        "-n",  # log to log.txt only; the long form --no-stdout-logs is silently ignored
    ]  # fmt: skip


def supervise(data: Path, host: str, port: int) -> int:
    """Run pouchdb-server, and start it again whenever it exits unasked (see the module
    docstring); SIGTERM or SIGINT stop it and return 0. Output goes where ours goes."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts: list[float] = []
    while not stopping:
        env = dict(os.environ, TMPDIR=str(data / TMP_DIR_NAME))
        child = subprocess.Popen(_server_command(data, host, port), cwd=data, env=env, stdin=subprocess.DEVNULL)
        (data / CHILD_PID_FILE_NAME).write_text(f"{child.pid}\n")
        code = child.wait()
        if stopping:
            break
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 60] + [now]
        if len(restarts) > MAX_RESTARTS:
            print(f"local_couch: pouchdb-server exited ({code}) {len(restarts)} times within a minute: giving up",
                  file=sys.stderr, flush=True)
            return 1
        print(f"local_couch: pouchdb-server exited ({code}); restarting it on {host}:{port}",
              file=sys.stderr, flush=True)
        _reset_tmp(data)  # its multipart leftovers; nothing else uses them
        time.sleep(0.5)
    if child is not None:
        child.wait()
    (data / CHILD_PID_FILE_NAME).unlink(missing_ok=True)
    return 0


def _wait_until_ready(couch: LocalCouch, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not couch.running():
            raise LocalCouchError(
                f"pouchdb-server exited with code {couch.process.returncode} while starting "
                f"on {couch.url}:\n{couch.log_tail()}"
            )
        if server_info(couch.url, timeout=1.0) is not None and couch.running():
            return
        if time.monotonic() > deadline:
            raise LocalCouchError(
                f"pouchdb-server did not answer GET {couch.url}/ within {timeout:.0f} s:\n"
                + couch.log_tail()
            )
        time.sleep(0.1)


# --------------------------------------------------------------------------- CLI


def _stop_detached(data_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the pouchdb-server started with ``start --detach`` on ``data_dir``; False if none."""
    pid_file = data_dir / PID_FILE_NAME
    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        pid_file.unlink(missing_ok=True)
        return False
    if str(Path(__file__).resolve()).encode() not in cmdline or str(data_dir).encode() not in cmdline:
        pid_file.unlink(missing_ok=True)  # stale: that process is no pouchdb-server of ours
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        _signal_group(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    shutil.rmtree(data_dir / TMP_DIR_NAME, ignore_errors=True)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours would still count; a detached server is not our child.
    return True


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="npm ci in scripts/localcouch unless already installed")
    p_start = sub.add_parser("start", help="start pouchdb-server (foreground unless --detach)")
    p_start.add_argument("--data", default="var/couch", help="data folder (default: var/couch)")
    p_start.add_argument("--host", default="127.0.0.1")
    p_start.add_argument("--port", type=int, default=5984, help="0 for a free port")
    p_start.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for it")
    p_start.add_argument(
        "--detach", action="store_true", help="return once it answers; stop it with 'stop --data'"
    )
    p_stop = sub.add_parser("stop", help="stop a pouchdb-server started with start --detach")
    p_stop.add_argument("--data", default="var/couch")
    p_sup = sub.add_parser("supervise", help="run pouchdb-server, restarting it when it dies (start does this)")
    p_sup.add_argument("--data", required=True)
    p_sup.add_argument("--host", default="127.0.0.1")
    p_sup.add_argument("--port", type=int, required=True)
    p_ping = sub.add_parser("ping", help="exit 0 if a CouchDB-API server answers at URL")
    p_ping.add_argument("url", nargs="?", default="http://127.0.0.1:5984")
    args = parser.parse_args(argv)

    try:
        if args.command == "install":
            ensure_installed()
        elif args.command == "supervise":
            return supervise(Path(args.data).resolve(), args.host, args.port)
        elif args.command == "ping":
            return 0 if server_info(args.url) is not None else 1
        elif args.command == "stop":
            if not _stop_detached(Path(args.data).resolve()):
                print(f"local_couch: no pouchdb-server running for {args.data}", file=sys.stderr)
        elif args.command == "start":
            ensure_installed()
            couch = start(args.data, host=args.host, port=args.port, timeout=args.timeout)
            where = f"{couch.url}/ (pid {couch.pid}), data in {couch.data_dir}"
            print(f"local_couch: pouchdb-server at {where}", file=sys.stderr)
            if args.detach:
                (couch.data_dir / PID_FILE_NAME).write_text(f"{couch.pid}\n")
                return 0
            signal.signal(signal.SIGTERM, _raise_system_exit)
            try:
                while couch.running():
                    time.sleep(0.5)
                code = couch.process.returncode
                print(
                    f"local_couch: pouchdb-server exited ({code}):\n{couch.log_tail()}",
                    file=sys.stderr,
                )
                return 1
            finally:
                couch.stop()
    except LocalCouchError as exc:
        print(f"local_couch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
