"""Multi-site sync and restore figures: how long until a study stored at one site is searchable at the
other, and how long a restore of a whole database takes, each beside the direct STOW time measured in
the same run (the ratio is what to compare: the machine is shared and noisy).

    .venv/bin/python bench/replication.py [--studies 20] [--instances 10] [--size 256]

Two pouchdb-servers (scripts/local_couch.py) in temporary folders, each with a server in front (in
process), replicating continuously both ways through ``_replicator`` documents. Then the archive of
site A is backed up and restored into a new database by one-shot replication, and every instance
retrieved from a server on the restored database is compared byte for byte. pouchdb-server is much
slower than Apache CouchDB: its figures are lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]

import local_couch  # noqa: E402
from dicom_factory import make_instance, multipart  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from dicomweb_couch.app import create_app  # noqa: E402
from dicomweb_couch.settings import Settings  # noqa: E402

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


async def start(couch_url: str, database: str) -> tuple[web.AppRunner, str]:
    port = local_couch.free_port()
    runner = web.AppRunner(create_app(Settings(couch_url=couch_url, database=database, port=port, index_refresh=1)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def json_request(http: aiohttp.ClientSession, method: str, url: str, body: object = None) -> object:
    async with http.request(method, url, json=body, headers={"Accept": "application/json"}) as resp:
        return await resp.json(content_type=None)


async def searchable(http: aiohttp.ClientSession, server: str, study: str) -> bool:
    async with http.get(f"{server}/studies", params={"StudyInstanceUID": study}) as resp:
        return resp.status == 200 and bool(await resp.json(content_type=None))


async def main(args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        a = stack.enter_context(local_couch.start(tmp / "a", port=0))
        b = stack.enter_context(local_couch.start(tmp / "b", port=0))
        db = "chronicle"
        runner_a, server_a = await start(a.url, db)
        runner_b, server_b = await start(b.url, db)
        async with aiohttp.ClientSession() as http:
            for target, source in ((a, b), (b, a)):
                await json_request(http, "POST", f"{target.url}/_replicator", {
                    "source": f"{source.url}/{db}", "target": f"{target.url}/{db}", "continuous": True})
            stow_times, delays = [], []
            files: dict[str, bytes] = {}
            for _ in range(args.studies):
                study, series = generate_uid(), generate_uid()
                batch = [make_instance(study, series, rows=args.size, columns=args.size, instance_number=n + 1)
                         for n in range(args.instances)]
                body, content_type = multipart(batch)
                started = time.monotonic()
                async with http.post(f"{server_a}/studies", data=body, headers={"Content-Type": content_type}) as r:
                    assert r.status == 200, await r.text()
                stored = time.monotonic()
                while not await searchable(http, server_b, study):
                    await asyncio.sleep(0.05)
                stow_times.append(stored - started)
                delays.append(time.monotonic() - stored)
                files.update({str(i): f for i, f in enumerate(batch, start=len(files))})
            total = sum(map(len, files.values()))
            print(f"{args.studies} studies x {args.instances} instances of {args.size}x{args.size} "
                  f"({total / 1e6:.1f} MB) stored at site A")
            print(f"STOW at A: median {statistics.median(stow_times):.2f} s per study")
            ratio = statistics.median(delays) / statistics.median(stow_times)
            print(f"until searchable at B after the STOW answered: median {statistics.median(delays):.2f} s, "
                  f"max {max(delays):.2f} s (ratio to the STOW: {ratio:.2f})")

            started = time.monotonic()
            answer = await json_request(http, "POST", f"{a.url}/_replicate", {
                "source": f"{a.url}/{db}", "target": f"{a.url}/backup", "create_target": True})
            backup = time.monotonic() - started
            started = time.monotonic()
            answer = await json_request(http, "POST", f"{a.url}/_replicate", {
                "source": f"{a.url}/backup", "target": f"{a.url}/restored", "create_target": True})
            restore = time.monotonic() - started
            assert answer.get("ok"), answer  # type: ignore[union-attr]
            runner_r, server_r = await start(a.url, "restored")
            started = time.monotonic()
            async with http.get(f"{server_r}/studies", params={"limit": "1000"}) as resp:
                studies = [s["0020000D"]["Value"][0] for s in await resp.json()]
            served = []
            for study in studies:
                async with http.get(f"{server_r}/studies/{study}", headers={"Accept": ANY}) as resp:
                    reader = aiohttp.MultipartReader.from_response(resp)
                    while (part := await reader.next()) is not None:
                        served.append(await part.read())
            check = time.monotonic() - started
            assert sorted(served) == sorted(files.values()), "the restored archive differs"
            stow_total = sum(stow_times)
            print(f"backup (replication to a new database): {backup:.2f} s; restore: {restore:.2f} s "
                  f"({total / 1e6 / restore:.1f} MB/s; ratio to storing it all by STOW: {restore / stow_total:.2f}); "
                  f"every instance retrieved byte-exact from the restored database in {check:.2f} s")
            await runner_r.cleanup()
        await runner_a.cleanup()
        await runner_b.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--size", type=int, default=256, help="rows and columns of each image (16-bit)")
    asyncio.run(main(parser.parse_args()))
