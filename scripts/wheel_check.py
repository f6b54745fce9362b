#!/usr/bin/env python3
"""Install the archive the way users do, and use it: the CI step for a non-editable install.

1. build a wheel of a clean copy of this checkout (``pip wheel --no-deps``);
2. install it into a fresh virtual environment in a temporary folder outside the checkout;
3. start a local pouchdb-server (``scripts/local_couch.py``) and ``python -m dicomweb_couch`` from
   that environment, in a working directory outside the checkout (so nothing is imported from it);
4. store one real instance (STOW-RS, pydicom's ``CT_small.dcm``), find it (QIDO-RS ``/studies``,
   ``/series``, ``/instances``: the study catalog queries every view of the design document, so a
   view missing from the install answers 503), retrieve it byte-exact (WADO-RS and WADO-URI), and
   check that the design document in CouchDB holds every view of the tree's ``design_docs/``;
5. stop both.

Any failure ends with a non-zero exit, what failed, and the server's log. Run it with a Python that
has pydicom (the checkout's ``.venv``): ``.venv/bin/python scripts/wheel_check.py [--keep]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import local_couch  # noqa: E402  (scripts/ is no package)

DATABASE = "wheel_check"


class CheckFailed(Exception):
    pass


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    print("+", " ".join(map(str, cmd)), flush=True)
    done = subprocess.run([str(c) for c in cmd], check=False, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise CheckFailed(f"{cmd[0]} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def expect(status: int, wanted: int, what: str, body: bytes) -> None:
    if status != wanted:
        raise CheckFailed(f"{what}: answered {status}, not {wanted}: {body[:1000]!r}")


def build_wheel(work: Path) -> Path:
    """A wheel of the checkout as it is now (uncommitted changes included), built under ``work``.

    Built from a copy: pip builds in the source tree, where a stale ``build/`` would hide a file
    the packaging no longer ships."""
    source = work / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "node_modules", "build", "dist", "*.egg-info", "var", "test-output", "__pycache__"))
    dist = work / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, source)
    wheels = list(dist.glob("dicomweb_couch-*.whl"))
    if len(wheels) != 1:
        raise CheckFailed(f"expected one wheel in {dist}, found {wheels}")
    return wheels[0]


def build_and_install(work: Path) -> Path:
    """The wheel, installed into a new venv under ``work``; returns that venv's python."""
    wheel = build_wheel(work)
    run(sys.executable, "-m", "venv", work / "venv")
    python = work / "venv" / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", wheel)
    where = run(python, "-c", "import dicomweb_couch; print(dicomweb_couch.__file__)", cwd=work).strip()
    if not Path(where).is_relative_to(work / "venv"):
        raise CheckFailed(f"the installed package is imported from {where}, not from the new venv")
    print(f"installed {wheel.name}; dicomweb_couch imports from {where}", flush=True)
    return python


def wait_for_server(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CheckFailed(f"the server exited with {process.returncode} while starting")
        try:
            with urllib.request.urlopen(url + "/", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.3)
    raise CheckFailed(f"the server did not answer GET {url}/ within {timeout:.0f} s")


def use_archive(base: str, couch_url: str) -> None:
    """Store, search and retrieve one instance; check the installed design document."""
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID

    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())
    status, _, answer = http("POST", base + "/studies", body, {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    expect(status, 200, "STOW-RS of CT_small.dcm", answer)
    print("stored", sop, flush=True)

    for path, key, uid in (("/studies", "0020000D", study), (f"/studies/{study}/series", "0020000E", series),
                           (f"/studies/{study}/series/{series}/instances", "00080018", sop)):
        status, _, answer = http("GET", base + path, headers={"Accept": "application/dicom+json"})
        expect(status, 200, f"QIDO-RS GET {path}", answer)
        found = [row[key]["Value"][0] for row in json.loads(answer)]
        if found != [uid]:
            raise CheckFailed(f"QIDO-RS GET {path} found {found}, not [{uid}]")
        print(f"found {uid} at {path}", flush=True)

    status, _, answer = http("GET", f"{base}/studies/{study}/series/{series}/instances/{sop}",
                                   headers={"Accept": 'multipart/related; type="application/dicom"'})
    expect(status, 200, "WADO-RS retrieve", answer)
    if data not in answer:
        raise CheckFailed("WADO-RS: the stored file is not in the response byte for byte")
    status, _, answer = http("GET", f"{base}/wado?requestType=WADO&studyUID={study}&seriesUID={series}"
                                    f"&objectUID={sop}&contentType=application/dicom")
    expect(status, 200, "WADO-URI retrieve", answer)
    if answer != data:
        raise CheckFailed(f"WADO-URI: {len(answer)} bytes differ from the {len(data)} stored")
    print(f"retrieved {len(data)} bytes byte-exact (WADO-RS, WADO-URI)", flush=True)

    status, _, answer = http("GET", f"{couch_url}/{DATABASE}/_design/qido", headers={"Accept": "application/json"})
    expect(status, 200, "the installed design document", answer)
    installed = set(json.loads(answer)["views"])
    in_tree = {p.name for p in (REPO / "dicomweb_couch" / "design_docs" / "qido" / "views").iterdir() if p.is_dir()}
    if installed != in_tree:
        raise CheckFailed(f"the installed _design/qido has views {sorted(installed)}, the tree {sorted(in_tree)}")
    print(f"_design/qido holds every view of the tree: {sorted(installed)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dicomweb-couch-wheel-"))
    if work.is_relative_to(REPO):
        raise SystemExit(f"the temporary folder {work} is inside the checkout")
    server: subprocess.Popen | None = None
    log_path = work / "server.log"
    try:
        python = build_and_install(work)
        local_couch.ensure_installed(quiet=True)
        with local_couch.start(work / "couch", port=0) as couch:
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("DICOMWEB_COUCH_", "PYTHON"))}
            with open(log_path, "wb") as log:
                server = subprocess.Popen(
                    [str(python), "-m", "dicomweb_couch", "--couch-url", couch.url, "--database", DATABASE,
                     "--host", "127.0.0.1", "--port", str(port)],
                    cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            base = f"http://127.0.0.1:{port}"
            wait_for_server(base, server)
            use_archive(base, couch.url)
            server.send_signal(signal.SIGINT)
            if server.wait(timeout=30) not in (0, -signal.SIGINT):
                raise CheckFailed(f"the server stopped with exit code {server.returncode}")
            server = None
    except (CheckFailed, local_couch.LocalCouchError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"\nWHEEL CHECK FAILED: {exc}", file=sys.stderr)
        if log_path.exists():
            print("--- server log (tail) ---\n" + "\n".join(log_path.read_text(errors="replace").splitlines()[-40:]),
                  file=sys.stderr)
        return 1
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("wheel check passed: a wheel install stores, finds and retrieves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
