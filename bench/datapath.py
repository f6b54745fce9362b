"""The data path side by side: this server (attachments and file store), the store alone, and Orthanc.

    .venv/bin/python bench/datapath.py [--count 100] [--series-size 25] [--couch-url URL]
                                       [--targets couch,files,store,orthanc]

One run measures, on generated CT-like instances of ~0.5 MB (512 x 512 x 16 bit, random pixels so
nothing compresses or deduplicates):

- STOW-RS with 1 instance per request at 1 and 8 clients, and 25 per request at 8 clients;
- WADO-URI at 1 and 16 clients; WADO-RS whole series and ``frames/1`` at 1 client;
- the server's own CPU per stored instance and per WADO-URI request (utime + stime of the server
  process from /proc/<pid>/stat; the store's CPU is not counted);
- the store's ceiling, in the same run: the same writes sent straight to the store (the
  ``multipart/related`` document PUT the server sends) and attachment GETs at 1 and 16 clients;
- Orthanc with its DICOMweb plugin (Debian ``orthanc`` + ``orthanc-dicomweb``), a private instance
  on a free loopback port with its storage in a temporary folder, given the same requests.

With ``--rounds N`` every target is measured N times, the targets alternating (each round starting
with another, so that none always follows the same one: the store's background work after a
target's writes falls on the next), and the table gives the medians. The server runs as a separate process (``python -m dicomweb_couch``) so its CPU can be read apart
from the benchmark's. Starts pouchdb-server (scripts/local_couch.py) in a temporary folder unless
--couch-url names a CouchDB. Each STOW figure uses its own set of ``--count`` instances, so no
request stores a file the target already has. The machine's CPU is shared: compare figures of one
run, as ratios, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
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
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]

import local_couch
from dicom_factory import multipart

ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
ANY_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
MB = 1e6
TICKS = os.sysconf("SC_CLK_TCK")


# -- the instances ------------------------------------------------------------------------

@dataclass(frozen=True)
class Instance:
    study: str
    series: str
    sop: str
    data: bytes


def make_set(count: int, series_size: int, seed: int) -> list[Instance]:
    """``count`` CT instances of one study, ``series_size`` to a series."""
    rng = np.random.default_rng(seed)
    study = generate_uid()
    series = [generate_uid() for _ in range((count + series_size - 1) // series_size)]
    found = []
    for number in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series[number // series_size]
        ds.PatientID, ds.PatientName, ds.Modality = f"BENCH{seed}", "Bench^Datapath", "CT"
        ds.InstanceNumber, ds.StudyDate = number + 1, "20260101"
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, (512, 512), dtype=np.uint16).tobytes()
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        found.append(Instance(study, ds.SeriesInstanceUID, ds.SOPInstanceUID, out.getvalue()))
    return found


# -- measuring ------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def run_clients(clients: int, jobs: list[Callable[[], Awaitable[int]]]) -> tuple[float, int]:
    """Run the jobs on ``clients`` concurrent workers; (seconds, total bytes or items they return)."""
    queue = list(reversed(jobs))
    total = 0

    async def worker() -> None:
        nonlocal total
        while queue:
            done = await queue.pop()()  # not ``total += await ...``: that reads total before awaiting
            total += done

    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(clients)])
    return time.perf_counter() - start, total


async def fetch(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> int:
    async with http.get(url, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: {resp.status} {(await resp.read())[:200]!r}")
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 20):
            size += len(chunk)
        return size


async def post(http: aiohttp.ClientSession, url: str, files: list[bytes]) -> int:
    body, kind = multipart(files)
    async with http.post(url, data=body, headers={"Content-Type": kind, "Accept": "application/dicom+json"}) as resp:
        answer = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"STOW {url}: {resp.status} {answer[:300]!r}")
    return len(files)


class Target:
    """A DICOMweb server under test: its roots and the process whose CPU is counted."""

    def __init__(self, name: str, dicomweb: str, wado_uri: str, pid: int) -> None:
        self.name, self.dicomweb, self.wado_uri, self.pid = name, dicomweb, wado_uri, pid

    async def measure(self, http: aiohttp.ClientSession, sets: list[list[Instance]]) -> dict[str, float]:
        figures: dict[str, float] = {}
        one, eight, batched = sets
        url = self.dicomweb + "/studies"
        cpu = cpu_seconds(self.pid)
        seconds, n = await run_clients(1, [lambda f=i.data: post(http, url, [f]) for i in one])
        figures["cpu_stow_ms"] = (cpu_seconds(self.pid) - cpu) / n * 1000
        figures["stow_1x1"] = n / seconds
        seconds, n = await run_clients(8, [lambda f=i.data: post(http, url, [f]) for i in eight])
        figures["stow_1x8"] = n / seconds
        chunks = [batched[k:k + 25] for k in range(0, len(batched), 25)]
        seconds, n = await run_clients(8, [lambda c=c: post(http, url, [i.data for i in c]) for c in chunks])
        figures["stow_25x8"] = n / seconds
        # Reads are measured with the search indexes up to date, as in an archive that is read
        # more than written: a QIDO query per study waits for the index updates STOW caused.
        for s in sets:
            await fetch(http, f"{self.dicomweb}/studies/{s[0].study}/instances?limit=1", {"Accept": "application/dicom+json"})
        await fetch(http, f"{self.dicomweb}/studies?limit=1", {"Accept": "application/dicom+json"})

        def uri(i: Instance) -> str:
            return (f"{self.wado_uri}?requestType=WADO&studyUID={i.study}&seriesUID={i.series}"
                    f"&objectUID={i.sop}&contentType=application/dicom")
        cpu = cpu_seconds(self.pid)
        seconds, size = await run_clients(1, [lambda i=i: fetch(http, uri(i)) for i in one])
        figures["cpu_wado_uri_ms"] = (cpu_seconds(self.pid) - cpu) / len(one) * 1000
        figures["wado_uri_1"] = size / seconds / MB
        everything = [i for s in sets for i in s]
        seconds, size = await run_clients(16, [lambda i=i: fetch(http, uri(i)) for i in everything])
        figures["wado_uri_16"] = size / seconds / MB
        series = sorted({(i.study, i.series) for i in one})
        seconds, size = await run_clients(1, [
            lambda s=s: fetch(http, f"{self.dicomweb}/studies/{s[0]}/series/{s[1]}", {"Accept": ANY_DICOM})
            for s in series])
        figures["wado_rs_series"] = size / seconds / MB
        seconds, size = await run_clients(1, [
            lambda i=i: fetch(http, f"{self.dicomweb}/studies/{i.study}/series/{i.series}/instances/{i.sop}/frames/1",
                              {"Accept": FRAMES}) for i in one])
        figures["frames"] = size / seconds / MB
        return figures


async def measure_store(http: aiohttp.ClientSession, couch_url: str, sets: list[list[Instance]]) -> dict[str, float]:
    """The store's ceiling: the server's own write form (one multipart/related document PUT with
    the file) and attachment GETs, sent straight to the store."""
    db = f"{couch_url}/bench_store_{uuid.uuid4().hex[:8]}"
    async with http.put(db) as resp:
        assert resp.status in (201, 202), await resp.text()

    async def put(i: Instance) -> int:
        boundary = uuid.uuid4().hex
        doc = {"_id": i.sop, "dataset": {}, "_attachments": {"object.dcm": {
            "follows": True, "content_type": "application/dicom", "length": len(i.data)}}}
        body = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{json.dumps(doc)}\r\n--{boundary}\r\n"
                f"Content-Disposition: attachment; filename=\"object.dcm\"\r\nContent-Type: application/dicom\r\n"
                f"Content-Length: {len(i.data)}\r\n\r\n").encode() + i.data + f"\r\n--{boundary}--\r\n".encode()
        async with http.put(f"{db}/{i.sop}", data=body, headers={
                "Content-Type": f'multipart/related; boundary="{boundary}"', "Accept": "application/json"}) as resp:
            if resp.status not in (201, 202):
                raise RuntimeError(f"store PUT: {resp.status} {await resp.text()}")
        return 1

    figures: dict[str, float] = {}
    one, eight, batched = sets
    seconds, n = await run_clients(1, [lambda i=i: put(i) for i in one])
    figures["stow_1x1"] = n / seconds
    seconds, n = await run_clients(8, [lambda i=i: put(i) for i in eight + batched])
    figures["stow_1x8"] = figures["stow_25x8"] = n / seconds
    get = {"Accept-Encoding": "identity"}
    seconds, size = await run_clients(1, [lambda i=i: fetch(http, f"{db}/{i.sop}/object.dcm", get) for i in one])
    figures["wado_uri_1"] = figures["wado_rs_series"] = figures["frames"] = size / seconds / MB
    everything = [i for s in sets for i in s]
    seconds, size = await run_clients(16, [lambda i=i: fetch(http, f"{db}/{i.sop}/object.dcm", get) for i in everything])
    figures["wado_uri_16"] = size / seconds / MB
    async with http.delete(db):
        pass
    return figures


# -- the servers ----------------------------------------------------------------------------

def wait_http(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@contextmanager
def running(cmd: list[str], url: str, env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[int]:
    with open(log or os.devnull, "wb") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_http(url, process)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def our_server(couch_url: str, workdir: Path, file_store: str = "", source: Path = ROOT,
               name: str = "") -> Iterator[Target]:
    port = local_couch.free_port()
    env = dict(os.environ, DICOMWEB_COUCH_FILE_STORE=file_store, PYTHONPATH=str(source))
    cmd = [sys.executable, "-m", "dicomweb_couch", "--port", str(port), "--couch-url", couch_url,
           "--database", f"bench_{uuid.uuid4().hex[:8]}", "--log-level", "WARNING"]
    base = f"http://127.0.0.1:{port}"
    name = name or ("files" if file_store else "couch")
    with running(cmd, base + "/studies?limit=1", env, workdir / f"server-{name}.log") as pid:
        yield Target(name, base, base + "/wado", pid)


@contextmanager
def orthanc(workdir: Path) -> Iterator[Target]:
    port, dicom_port = local_couch.free_port(), local_couch.free_port()
    root = workdir / "orthanc"
    root.mkdir()
    config = {
        "Name": "bench", "HttpPort": port, "DicomPort": dicom_port, "DicomServerEnabled": False,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "Plugins": [ORTHANC_DICOMWEB], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    base = f"http://127.0.0.1:{port}"
    with running([ORTHANC, str(root / "orthanc.json")], base + "/system", log=root / "orthanc.log") as pid:
        yield Target("orthanc", base + "/dicom-web", base + "/wado", pid)


# -- the table ------------------------------------------------------------------------------

ROWS = [
    ("stow_1x1", "STOW, 1 instance per request, 1 client", "inst/s"),
    ("stow_1x8", "STOW, 1 per request, 8 clients", "inst/s"),
    ("stow_25x8", "STOW, 25 per request, 8 clients", "inst/s"),
    ("wado_uri_1", "WADO-URI, 1 client", "MB/s"),
    ("wado_uri_16", "WADO-URI, 16 clients", "MB/s"),
    ("wado_rs_series", "WADO-RS whole series, 1 client", "MB/s"),
    ("frames", "WADO-RS frames/1, 1 client", "MB/s"),
    ("cpu_stow_ms", "server CPU per stored instance (store excluded)", "ms"),
    ("cpu_wado_uri_ms", "server CPU per WADO-URI request (store excluded)", "ms"),
]


def table(results: dict[str, dict[str, float]]) -> str:
    names = [n for n in ("baseline", "couch", "files", "store", "orthanc") if n in results]
    heads = {"baseline": "baseline (attachments)", "couch": "dicomweb_couch (attachments)",
             "files": "dicomweb_couch (file store)",
             "store": "store alone (ceiling)", "orthanc": "Orthanc"}
    lines = ["| figure | " + " | ".join(heads[n] for n in names)
             + " | baseline / ceiling | attachments / ceiling | files / ceiling | files / Orthanc |",
             "| --- " * (len(names) + 5) + "|"]
    for key, label, unit in ROWS:
        cells = [f"{results[n][key]:.1f}" if key in results[n] else "–" for n in names]
        ratios = [_ratio(results, key, a, b) for a, b in
                  (("baseline", "store"), ("couch", "store"), ("files", "store"), ("files", "orthanc"))]
        lines.append(f"| {label} ({unit}) | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def _ratio(results: dict[str, dict[str, float]], key: str, a: str, b: str) -> str:
    if key.startswith("cpu") or key not in results.get(a, {}) or key not in results.get(b, {}):
        return "–"
    return f"{results[a][key] / results[b][key]:.2f}"


async def run(args: argparse.Namespace, couch_url: str, workdir: Path) -> dict[str, dict[str, float]]:
    """Each round measures every target in turn on fresh instances; the figures are the medians."""
    rounds: dict[str, list[dict[str, float]]] = {}
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False) as http:
        for number in range(args.rounds):
            print(f"round {number + 1}: generating 3 x {args.count} instances ...", file=sys.stderr)
            sets = [make_set(args.count, args.series_size, 10 * number + seed) for seed in (1, 2, 3)]
            names = args.targets.split(",")
            for name in names[number % len(names):] + names[:number % len(names)]:  # each round starts elsewhere
                print(f"measuring {name} ...", file=sys.stderr)
                place = workdir / f"round{number}-{name}"
                place.mkdir()
                if name == "store":
                    figures = await measure_store(http, couch_url, sets)
                elif name == "orthanc":
                    with orthanc(place) as target:
                        figures = await target.measure(http, sets)
                elif name == "baseline":
                    with our_server(couch_url, place, source=Path(args.baseline), name=name) as target:
                        figures = await target.measure(http, sets)
                elif name in ("couch", "files"):
                    with our_server(couch_url, place, str(place / "files") if name == "files" else "") as target:
                        figures = await target.measure(http, sets)
                else:
                    raise SystemExit(f"unknown target {name!r}")
                print(json.dumps({name: figures}), file=sys.stderr)
                rounds.setdefault(name, []).append(figures)
    return {name: {key: statistics.median(f[key] for f in found) for key in found[0]} for name, found in rounds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100, help="instances per STOW figure (3 sets are made)")
    parser.add_argument("--series-size", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; the table gives medians")
    parser.add_argument("--couch-url", help="a CouchDB to use instead of a temporary pouchdb-server")
    parser.add_argument("--targets", default="store,couch,files,orthanc")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--baseline", help="a source tree of another version of the server, measured as the target "
                        "'baseline' (e.g. git archive COMMIT | tar -x -C DIR)")
    args = parser.parse_args()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-datapath-")))
        couch_url = args.couch_url
        if not couch_url:
            local_couch.ensure_installed(quiet=True)
            couch_url = stack.enter_context(local_couch.start(workdir / "couch", port=0)).url
        results = asyncio.run(run(args, couch_url.rstrip("/"), workdir))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        print(table(results))
        if not args.couch_url:
            shutil.rmtree(workdir / "couch", ignore_errors=True)


if __name__ == "__main__":
    main()
