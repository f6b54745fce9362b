"""Ways in, measured in one run on the same generated files: C-STORE and the bulk importer.

    .venv/bin/python bench/dimse.py [--files 200] [--workers 4] [--couch-url URL]

Generates CT images of ~0.5 MB in a temporary folder, starts pouchdb-server there (unless
--couch-url names a CouchDB), and times, each on a fresh database:

- ceiling: the same files written straight to the store (``Couch.put_with_attachment``: the write form
  each backend takes,
  ``--workers`` at a time), with no parsing: what any way in can at best reach;
- importer: ``python -m dicomweb_couch import --workers N`` on the folder (straight to the database);
- dicomweb_client: ``dicomweb_client store instances`` on the same files against the server;
- C-STORE: DCMTK ``storescu`` (one association) against the server's DIMSE gateway, and against a
  private Orthanc (its own SQLite index and storage folder) on the same machine.

Figures are instances/s and ratios between them. The machine is shared (2 cores, other jobs
running): figures are noisy, the ratios measured in one run are what to compare. On
pouchdb-server every figure is a lower bound (Apache CouchDB is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]

import local_couch
from dicom_factory import make_instance

from dicomweb_couch.store.couch import Couch
from dicomweb_couch.store.ingest import md5_of

PY = sys.executable


def generate(folder: Path, count: int) -> list[Path]:
    study, series = generate_uid(), generate_uid()
    paths = []
    for n in range(count):
        path = folder / f"{n:05d}.dcm"
        path.write_bytes(make_instance(study, series, instance_number=n + 1, rows=512, columns=512))
        paths.append(path)
    return paths


async def ceiling(couch_url: str, paths: list[Path], workers: int) -> float:
    """Seconds to PUT every file with a minimal document, ``workers`` at a time."""
    couch = Couch(couch_url, f"bench_{uuid.uuid4().hex[:10]}")
    await couch.open()
    queue = list(paths)

    async def worker() -> None:
        while queue:
            path = queue.pop()
            with open(path, "rb") as fp:  # noqa: ASYNC230 -- as the importer does; small local files
                md5, size = md5_of(fp)
                await couch.put_with_attachment({"_id": path.stem + uuid.uuid4().hex, "md5hash": md5}, fp, size)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    seconds = time.perf_counter() - started
    await couch.close()
    return seconds


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    run = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({run.returncode}):\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return seconds


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer")


@contextmanager
def archive(couch_url: str):
    """The server (with its DIMSE gateway) in a process of its own: (web root, DIMSE port)."""
    web, dimse = local_couch.free_port(), local_couch.free_port()
    proc = subprocess.Popen([PY, "-m", "dicomweb_couch", "--port", str(web), "--couch-url", couch_url,
                             "--database", f"bench_{uuid.uuid4().hex[:10]}", "--log-level", "WARNING"],
                            env={**os.environ, "DICOMWEB_COUCH_DIMSE_PORT": str(dimse)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{web}/studies")
        yield f"http://127.0.0.1:{web}", dimse
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def orthanc(folder: Path):
    """A private Orthanc: its DIMSE port."""
    http, dimse = local_couch.free_port(), local_couch.free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "bench", "HttpPort": http, "DicomPort": dimse, "DicomAet": "ORTHANC",
        "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomServerEnabled": True,
        "Plugins": []}))
    proc = subprocess.Popen([shutil.which("Orthanc") or "/usr/sbin/Orthanc", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{http}/system")
        yield dimse
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="ceiling/importer rounds (medians)")
    parser.add_argument("--couch-url")
    args = parser.parse_args()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-dimse-")))
        url = args.couch_url
        if not url:
            local_couch.ensure_installed(quiet=True)
            url = stack.enter_context(local_couch.start(tmp / "couch", port=local_couch.free_port())).url
        (tmp / "files").mkdir()
        paths = generate(tmp / "files", args.files)
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        n = len(paths)
        rate: dict[str, float] = {}
        # The ceiling and the importer alternate, medians over the rounds: the load of the shared
        # machine changes by the minute. The importer's wall clock includes Python's start-up.
        ceilings, imports = [], []
        for _ in range(args.rounds):
            ceilings.append(n / asyncio.run(ceiling(url, paths, args.workers)))
            imports.append(n / timed(
                [PY, "-m", "dicomweb_couch", "import", "--no-progress", "--workers", str(args.workers),
                 "--couch-url", url, "--database", f"bench_{uuid.uuid4().hex[:10]}", str(tmp / "files")]))
        rate["ceiling: written straight to the store"] = statistics.median(ceilings)
        rate["importer, straight to the database"] = statistics.median(imports)
        with archive(url) as (web, dimse):
            rate["importer --url (STOW-RS to the server)"] = n / timed(
                [PY, "-m", "dicomweb_couch", "import", "--no-progress", "--workers", str(args.workers), "--url", web,
                 str(tmp / "files")])
        with archive(url) as (web, dimse):
            rate["dicomweb_client store instances"] = n / timed(
                [str(Path(PY).parent / "dicomweb_client"), "--url", web, "store", "instances", *map(str, paths)])
        storescu = shutil.which("storescu")
        if storescu:
            with archive(url) as (web, dimse):
                rate["storescu -> dicomweb_couch gateway"] = n / timed(
                    [storescu, "-aec", "DICOMWEB_COUCH", "127.0.0.1", str(dimse), *map(str, paths)])
            if shutil.which("Orthanc") or Path("/usr/sbin/Orthanc").exists():
                (tmp / "orthanc").mkdir()
                with orthanc(tmp / "orthanc") as dimse:
                    rate["storescu -> Orthanc (SQLite + files)"] = n / timed(
                        [storescu, "-aec", "ORTHANC", "127.0.0.1", str(dimse), *map(str, paths)])
    print(f"{n} CT instances of {megabytes / n:.2f} MB, {args.workers} workers, {args.rounds} rounds, store at {url}; "
          "instances/s "
          "(shared 2-core machine: noisy, compare the ratios):")
    for name, value in rate.items():
        print(f"  {name:45s} {value:8.1f}")
    base = rate["ceiling: written straight to the store"]
    print(f"  importer / ceiling:                          {rate['importer, straight to the database'] / base:.2f}")
    print(f"  importer / dicomweb_client:                  "
          f"{rate['importer, straight to the database'] / rate['dicomweb_client store instances']:.2f}")
    if "storescu -> Orthanc (SQLite + files)" in rate:
        print(f"  C-STORE us / Orthanc:                        "
              f"{rate['storescu -> dicomweb_couch gateway'] / rate['storescu -> Orthanc (SQLite + files)']:.2f}")


if __name__ == "__main__":
    main()
