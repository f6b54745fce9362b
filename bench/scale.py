"""Archive scale (issue 14): load a synthetic archive, then measure one or more servers on it.

    .venv/bin/python bench/scale.py [--studies 10000] [--series-per-study 2] [--instances-per-series 5]
        [--reps 20] [--couch-url URL] [--database NAME --no-load] [--server NAME=REPO ...]

Loads the archive (bench/archive.py: documents in the layout STOW writes, via ``_bulk_docs``)
into a fresh database per server (a fresh local pouchdb-server unless --couch-url names a
CouchDB; one database each because each server installs its own design documents), builds the
design views (timed), then runs each server — by default the landed code in /work/main and this
checkout — as its own process (``python -m dicomweb_couch`` with its checkout's venv) and
measures: first start on the existing database (until a correct study list), a restart, RSS,
query p50s, mixed queries at concurrency 8, ``GET /`` while the heaviest query runs, a write
made by another process becoming visible, the longest event-loop block (seen from outside: a
page that touches neither CouchDB nor the catalog, probed every 20 ms), and the index sizes on
disk. Prints one table, servers side by side. The machine is shared: figures are noisy, compare
servers within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "bench")]

import archive
import local_couch

OHIF = "limit=101&fuzzymatching=false&includefield=00081030,00080060,00080090,00100030"
VIEWS = ("studies", "series", "instances", "membership")
MIB = 1024 * 1024


@dataclass
class Server:
    """One server under test: a checkout and the Python that runs it."""

    name: str
    repo: Path
    port: int = 0
    process: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, couch_url: str, database: str, log: Path) -> None:
        self.port = local_couch.free_port()
        python = self.repo / ".venv" / "bin" / "python"
        env = dict(os.environ, **self.env, PYTHONPATH=str(self.repo))
        self.process = subprocess.Popen(
            [str(python), "-m", "dicomweb_couch", "--port", str(self.port), "--couch-url", couch_url,
             "--database", database, "--log-level", "INFO"],
            cwd=self.repo, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def rss(self) -> tuple[float, float]:
        """Resident memory now and at its peak, MiB."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        values = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmRSS", "VmHWM"))}
        return values["VmRSS"] / 1024, values["VmHWM"] / 1024


class Prober:
    """``GET /ohif/app-config.js`` every 20 ms: generated in memory, it touches neither CouchDB
    nor the catalog, so its longest answer is an outside bound on how long the server's event
    loop was blocked (plus the machine's own scheduling delays)."""

    def __init__(self, http: aiohttp.ClientSession):
        self.http, self.base, self.worst, self.task = http, "", 0.0, None

    def watch(self, base: str) -> None:
        self.base, self.worst = base, 0.0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            with suppress(aiohttp.ClientError):
                async with self.http.get(self.base + "/ohif/app-config.js",
                                         timeout=aiohttp.ClientTimeout(total=120)) as resp:
                    await resp.read()
                self.worst = max(self.worst, time.perf_counter() - t)
            await asyncio.sleep(0.02)

    async def stop(self) -> float:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        return self.worst * 1000


def expected(shape: archive.Shape) -> tuple[dict[str, str], str]:
    """The first study's UIDs and patient, and the query paths measured."""
    first = next(archive.documents(archive.Shape(1, 1, 1)))["dataset"]
    return ({"study": first["0020000D"]["Value"][0], "series": first["0020000E"]["Value"][0]},
            f"/studies?{OHIF}&offset={max(0, shape.studies - 100)}")


def queries(shape: archive.Shape) -> dict[str, str]:
    uids, last_page = expected(shape)
    return {
        "study list p50, offset 0": f"/studies?{OHIF}&offset=0",
        "study list p50, last page": last_page,
        "PatientID": f"/studies?{OHIF}&PatientID=PID000010",
        "AccessionNumber": f"/studies?{OHIF}&AccessionNumber=ACC0000010",
        "StudyInstanceUID": f"/studies?{OHIF}&StudyInstanceUID={uids['study']}",
        "PatientName prefix (Garc*)": f"/studies?{OHIF}&PatientName=Garc*",
        "StudyDate range (1 year)": f"/studies?{OHIF}&StudyDate=20150101-20151231",
        "PatientName *mit*": f"/studies?{OHIF}&PatientName=*mit*",
        "fuzzy PatientName (muller)": "/studies?limit=101&fuzzymatching=true&PatientName=muller",
        "/instances?PatientID=": "/instances?PatientID=PID000010",
        "series of a study": f"/studies/{uids['study']}/series",
        "orderby=-StudyDate,PatientName": f"/studies?{OHIF}&orderby=-StudyDate,PatientName",
    }


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, object, dict]:
    async with http.get(url) as resp:
        body = await resp.read()
        is_json = "json" in resp.headers.get("Content-Type", "")
        return resp.status, (json.loads(body) if body and is_json and resp.status == 200 else None), dict(resp.headers)


async def until_correct(http: aiohttp.ClientSession, server: Server, shape: archive.Shape, started: float,
                        limit: float = 7200) -> tuple[float, int]:
    """Seconds from ``started`` until the last page of the study list is complete; 503s seen."""
    _, last_page = expected(shape)
    want = min(100, shape.studies)
    refused = 0
    while time.perf_counter() - started < limit:
        with suppress(aiohttp.ClientError):
            status, body, headers = await get_json(http, server.base + last_page)
            if status == 503:
                refused += 1
                assert "Retry-After" in headers
            elif status == 200 and isinstance(body, list) and len(body) == want and "Warning" not in headers:
                return time.perf_counter() - started, refused
        await asyncio.sleep(0.25)
    raise TimeoutError(f"{server.name}: no correct study list after {limit} s")


async def latencies(http: aiohttp.ClientSession, url: str, reps: int) -> tuple[float, float, int]:
    times, rows = [], 0
    for _ in range(reps):
        t = time.perf_counter()
        status, body, _ = await get_json(http, url)
        times.append((time.perf_counter() - t) * 1000)
        assert status == 200, (url, status)
        rows = len(body)  # type: ignore[arg-type]
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], rows


async def mixed(http: aiohttp.ClientSession, base: str, paths: list[str], total: int) -> tuple[float, float]:
    """``total`` requests over the paths, 8 at a time: q/s and p95 ms."""
    times: list[float] = []
    queue = [paths[i % len(paths)] for i in range(total)]

    async def worker() -> None:
        while queue:
            path = queue.pop()
            t = time.perf_counter()
            await get_json(http, base + path)
            times.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(8)))
    elapsed = time.perf_counter() - t0
    times.sort()
    return total / elapsed, times[int(0.95 * (len(times) - 1))]


async def while_heavy(http: aiohttp.ClientSession, base: str, heavy: str) -> tuple[float, float]:
    """The heaviest query's time, and the longest ``GET /`` while it runs (ms)."""
    worst = 0.0
    done = asyncio.Event()

    async def probe() -> None:
        nonlocal worst
        while not done.is_set():
            t = time.perf_counter()
            await get_json(http, base + "/")
            worst = max(worst, (time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.01)

    prober = asyncio.ensure_future(probe())
    t = time.perf_counter()
    for _ in range(3):
        await get_json(http, base + heavy)
    took = (time.perf_counter() - t) * 1000 / 3
    done.set()
    await prober
    return took, worst


async def write_visible(http: aiohttp.ClientSession, couch_url: str, database: str, base: str, p50: float
                        ) -> tuple[float, float]:
    """A document written straight into CouchDB (as another server process would): ms until a
    search finds it, and what the first search after the write cost beyond the p50."""
    uid = f"2.25.{uuid.uuid4().int}"
    doc = next(archive.documents(archive.Shape(1, 1, 1), seed=int(time.time())))
    doc["dataset"]["0020000D"]["Value"] = [uid]
    doc["_id"] = uid + ".1"
    await asyncio.to_thread(archive._request, "POST", f"{couch_url}/{database}/_bulk_docs", {"docs": [doc]})
    written = time.perf_counter()
    first = None
    while True:
        t = time.perf_counter()
        status, body, _ = await get_json(http, f"{base}/studies?StudyInstanceUID={uid}")
        first = first if first is not None else (time.perf_counter() - t) * 1000
        if status == 200 and body:
            return (time.perf_counter() - written) * 1000, max(0.0, first - p50)
        if time.perf_counter() - written > 120:
            return float("inf"), first


def disk_sizes(couch_url: str, database: str, data_dir: Path | None) -> tuple[float, float]:
    """Database file and view indexes on disk, MiB: CouchDB's own figures when it gives them
    (``sizes.file``), else the pouchdb-server LevelDB directories."""
    info = archive._request("GET", f"{couch_url}/{database}")
    ddoc = {}
    with suppress(Exception):
        ddoc = archive._request("GET", f"{couch_url}/{database}/_design/qido/_info")
    db_file = (info.get("sizes") or {}).get("file") if isinstance(info.get("sizes"), dict) else None
    index = ddoc.get("view_index")
    view_file = ((index.get("sizes") or {}).get("file")) if isinstance(index, dict) else None
    if (not db_file or not view_file) and data_dir is not None:
        def du(path: Path) -> int:
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        db_file = du(data_dir / database) if (data_dir / database).exists() else 0
        view_file = sum(du(p) for p in data_dir.iterdir() if p.name.startswith(database + "-mrview"))
    return (db_file or 0) / MIB, (view_file or 0) / MIB


async def measure(server: Server, couch_url: str, database: str, shape: archive.Shape, reps: int,
                  logs: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
        prober = Prober(http)
        started = time.perf_counter()
        server.start(couch_url, database, logs / f"{server.name}.log")
        while True:  # listening
            with suppress(aiohttp.ClientError):
                await get_json(http, server.base + "/")
                break
            await asyncio.sleep(0.1)
        prober.watch(server.base)
        took, refused = await until_correct(http, server, shape, started)
        out["first start on the existing database: correct study list after"] = f"{took:.1f} s ({refused} × 503)"
        out["event loop blocked, max (probe during first start)"] = f"{await prober.stop():.0f} ms"
        server.stop()
        started = time.perf_counter()
        server.start(couch_url, database, logs / f"{server.name}.log")
        while True:
            with suppress(aiohttp.ClientError):
                await get_json(http, server.base + "/")
                break
            await asyncio.sleep(0.05)
        prober.watch(server.base)
        took, refused = await until_correct(http, server, shape, started)
        out["restart: correct study list after"] = f"{took:.1f} s ({refused} × 503)"
        p50s = {}
        for name, path in queries(shape).items():
            await latencies(http, server.base + path, 2)  # warm
            p50, p95, rows = await latencies(http, server.base + path, reps)
            p50s[name] = p50
            out[name] = f"{p50:.1f} ms ({rows} rows)"
        paths = list(queries(shape).values())
        qps, p95 = await mixed(http, server.base, paths, 8 * reps)
        out["mixed queries, concurrency 8"] = f"{qps:.0f} q/s, p95 {p95:.0f} ms"
        heavy = "/studies?limit=1000&StudyDescription=*9*&includefield=all"
        took, worst = await while_heavy(http, server.base, heavy)
        out["GET / while the heaviest query runs"] = f"{worst:.0f} ms (query: {took:.0f} ms)"
        visible, extra = await write_visible(http, couch_url, database, server.base, p50s["StudyInstanceUID"])
        out["write by another process visible after"] = f"{visible:.0f} ms (next search +{extra:.1f} ms)"
        out["event loop blocked, max (probe from restart to end)"] = f"{await prober.stop():.0f} ms"
        rss, peak = server.rss()
        out["server RSS (peak)"] = f"{rss:.0f} MiB ({peak:.0f})"
        catalog = server.env.get("DICOMWEB_COUCH_CATALOG_PATH")
        if catalog and Path(catalog).exists():
            out["catalog file"] = f"{Path(catalog).stat().st_size / MIB:.0f} MiB"
        server.stop()
    return out


def build_views(couch_url: str, database: str) -> float:
    """Have CouchDB build the design views (installed by a short server start), timed."""
    started = time.perf_counter()
    for view in VIEWS:
        archive._request("GET", f"{couch_url}/{database}/_design/qido/_view/{view}?limit=0&reduce=false")
    return time.perf_counter() - started


def install_design_docs(server: Server, couch_url: str, database: str, logs: Path) -> None:
    """Start the server just long enough to install its design documents, with a throwaway
    catalog file, so that the measured first start really is one."""
    own = dict(server.env)
    server.env["DICOMWEB_COUCH_CATALOG_PATH"] = str(logs / f"install-{server.name}.sqlite3")
    try:
        _install(server, couch_url, database, logs)
    finally:
        server.env = own


def _install(server: Server, couch_url: str, database: str, logs: Path) -> None:
    server.start(couch_url, database, logs / "install.log")
    deadline = time.time() + 120
    while time.time() < deadline:
        with suppress(Exception):
            archive._request("GET", f"{couch_url}/{database}/_design/qido")
            break
        time.sleep(0.2)
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--series-per-study", type=int, default=2)
    parser.add_argument("--instances-per-series", type=int, default=5)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--couch-url")
    parser.add_argument("--database", help="the database name (with --no-load: an archive loaded before)")
    parser.add_argument("--no-load", action="store_true")
    parser.add_argument("--server", action="append", default=[],
                        help="NAME=CHECKOUT with a .venv (default: landed=/work/main this=this checkout)")
    args = parser.parse_args()
    shape = archive.Shape(args.studies, args.series_per_study, args.instances_per_series)
    servers = [Server(n, Path(p)) for n, p in (s.split("=", 1) for s in args.server)] or [
        Server("landed", Path("/work/main")), Server("this", ROOT)]
    database = args.database or f"bench_scale_{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-")))
        data_dir = None
        url = args.couch_url
        if not url:
            local_couch.ensure_installed(quiet=True)
            data_dir = work / "couch"
            data_dir.mkdir()
            url = stack.enter_context(local_couch.start(data_dir, port=local_couch.free_port())).url
        for server in servers:
            server.env["DICOMWEB_COUCH_CATALOG_PATH"] = str(work / f"{server.name}.sqlite3")
        results: dict[str, dict[str, str]] = {}
        for server in servers:  # a database each: each server installs its own design documents
            out: dict[str, str] = {}
            db = f"{database}_{server.name}" if not args.no_load else database
            if not args.no_load:
                started = time.perf_counter()
                archive.load(url, db, shape)
                took = time.perf_counter() - started
                out["load (_bulk_docs)"] = f"{took:.0f} s ({shape.instances / took:.0f} docs/s)"
            install_design_docs(server, url, db, work)
            out["view build after the load (4 views)"] = f"{build_views(url, db):.0f} s"
            db_mib, views_mib = disk_sizes(url, db, data_dir)
            out["view indexes / database file"] = f"{views_mib:.0f} / {db_mib:.0f} MiB ({views_mib / db_mib:.2f}x)"
            print(f"{server.name}: " + "; ".join(f"{k}: {v}" for k, v in out.items()), flush=True)
            out.update(asyncio.run(measure(server, url, db, shape, args.reps, work)))
            results[server.name] = out
            print(f"{server.name}: done", flush=True)
        print(f"\n| {shape.studies:,} studies / {shape.instances:,} instances | "
              + " | ".join(s.name for s in servers) + " |")
        print("| --- |" + " --- |" * len(servers))
        for row in dict.fromkeys(k for r in results.values() for k in r):
            print(f"| {row} | " + " | ".join(results[s.name].get(row, "–") for s in servers) + " |")
        for server in servers:
            log = work / f"{server.name}.log"
            lines = [line for line in log.read_text(errors="replace").splitlines() if "catalog" in line]
            print(f"\n{server.name} log, catalog lines ({len(lines)}):", *lines[:12], sep="\n  ")


if __name__ == "__main__":
    main()
