"""``python -m dicomweb_couch import PATH...``: store folders, zip files and DICOMDIRs.

Thin: finding and storing files is :mod:`dicomweb_couch.store.importer`; this module reads the
command line and the same settings as the server, shows progress, writes the report and sums up.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import os
import sys
import time
import warnings
from collections import Counter
from typing import IO

import aiohttp
from tqdm import tqdm

from dicomweb_couch.settings import Settings
from dicomweb_couch.store.couch import Couch, CouchUnavailable
from dicomweb_couch.store.file_store import open_part10_store
from dicomweb_couch.store.importer import (
    ALREADY_THERE,
    REFUSED,
    SKIPPED,
    STORED,
    DatabaseTarget,
    Result,
    Source,
    StowTarget,
    Target,
    find_sources,
    import_sources,
)

_REFUSED_SHOWN = 20
REPORT_FIELDS = ["file", "result", "sop_instance_uid", "failure_reason", "message", "bytes"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m dicomweb_couch import",
        description="Store DICOM files from folders (recursively), zip files and DICOMDIRs, in parallel. "
        "A re-run skips what is already stored (same SOP Instance, same file content). Non-DICOM files "
        "are skipped and counted. Database settings as for the server (options, DICOMWEB_COUCH_* or --config).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="folder, zip file, DICOMDIR or DICOM file")
    p.add_argument("--workers", type=int, default=4, help="files stored at the same time (default 4)")
    p.add_argument("--report", metavar="FILE.csv", help="write one line per file: result, SOP Instance UID, reason")
    p.add_argument("--url", help="store into a running server by STOW-RS at this DICOMweb root "
                   "(e.g. http://127.0.0.1:5985) instead of straight into the database")
    p.add_argument("--token", help="with --url: an access token for a server behind authentication "
                   "(sent as Authorization: Bearer; prefer the environment variable DICOMWEB_COUCH_TOKEN)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off anyway without a terminal)")
    p.add_argument("--config", help="JSON settings file, as for the server")
    p.add_argument("--couch-url", help="CouchDB server URL (default http://127.0.0.1:5984)")
    p.add_argument("--couch-user", help="CouchDB user")
    p.add_argument("--couch-password", help="CouchDB password (prefer DICOMWEB_COUCH_COUCH_PASSWORD)")
    p.add_argument("--database", help="CouchDB database name (default 'chronicle')")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.workers < 1:
        print("dicomweb_couch import: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = Settings.load(cli={k: getattr(args, k) for k in ("couch_url", "couch_user", "couch_password",
                                                                    "database")}, config_file=args.config)
    except (ValueError, OSError) as exc:
        print(f"dicomweb_couch import: bad settings: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom\.")
    report = open(args.report, "w", newline="", encoding="utf-8") if args.report else None  # noqa: SIM115
    counts: Counter[str] = Counter()
    refused: list[Result] = []
    started = time.monotonic()
    try:
        sources, problems = find_sources(args.paths)
        progress = tqdm(total=sum(s.size for s in sources), unit="B", unit_scale=True, unit_divisor=1024,
                        desc="importing", disable=True if args.no_progress else None, file=sys.stderr)
        note = _recorder(counts, refused, report, progress, len(sources) + len(problems))
        for problem in problems:
            note(problem)
        asyncio.run(_run(settings, args, sources, note))
    except KeyboardInterrupt:
        _summary(counts, refused, time.monotonic() - started, interrupted=True)
        return 130
    except CouchUnavailable as exc:
        print(f"dicomweb_couch import: {exc}", file=sys.stderr)
        return 1
    finally:
        if report:
            report.close()
    progress.close()
    _summary(counts, refused, time.monotonic() - started)
    return 1 if counts[REFUSED] else 0


async def _run(settings: Settings, args: argparse.Namespace, sources: list[Source], note) -> None:
    target: Target
    if args.url:
        token = args.token or os.environ.get("DICOMWEB_COUCH_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=600),
                                         headers=headers) as session:
            target = StowTarget(session, args.url)
            await import_sources(sources, target, args.workers, note)
        return
    couch = Couch(settings.couch_url, settings.database, settings.couch_user, settings.couch_password)
    await couch.open(settings.couch_wait)
    try:
        files = await open_part10_store(couch, settings.file_store)  # the file store, when the server uses one
        await import_sources(sources, DatabaseTarget(couch, files), args.workers, note)
    finally:
        await couch.close()


def _recorder(counts: Counter[str], refused: list[Result], report: IO[str] | None, progress: tqdm, files: int):
    """Count each result, write it to the report at once (an interrupted run keeps its report), advance
    the progress bar by the file's size and show the tally and instances/s beside it."""
    writer = csv.writer(report) if report else None
    if writer:
        writer.writerow(REPORT_FIELDS)
    started = time.monotonic()

    def note(result: Result) -> None:
        counts[result.status] += 1
        if result.status == REFUSED:
            refused.append(result)
        if writer:
            writer.writerow([result.name, result.status, result.sop_instance_uid,
                             f"0x{result.reason:04X}" if result.reason is not None else "", result.message,
                             result.size])
            report.flush()
        progress.update(result.size)
        rate = (counts[STORED] + counts[ALREADY_THERE]) / max(time.monotonic() - started, 1e-6)
        progress.set_postfix_str(f"{counts.total()}/{files} files: {counts[STORED]} stored, "
                                 f"{counts[ALREADY_THERE]} already there, "
                                 f"{counts[REFUSED]} refused, {counts[SKIPPED]} skipped, {rate:.1f} inst/s",
                                 refresh=False)

    return note


def _summary(counts: Counter[str], refused: list[Result], seconds: float, interrupted: bool = False) -> None:
    instances = counts[STORED] + counts[ALREADY_THERE]
    lines = [
        "interrupted: run the same command again to resume" if interrupted else "done",
        f"  stored:        {counts[STORED]}",
        f"  already there: {counts[ALREADY_THERE]}",
        f"  refused:       {counts[REFUSED]}",
        *[f"    {r.name}: " + (f"0x{r.reason:04X} " if r.reason is not None else "") + r.message
          for r in refused[:_REFUSED_SHOWN]],
        *([f"    ... and {len(refused) - _REFUSED_SHOWN} more (--report FILE.csv lists every file)"]
          if len(refused) > _REFUSED_SHOWN else []),
        f"  skipped:       {counts[SKIPPED]} (not DICOM, DICOMDIR indexes, unreadable)",
        f"  {seconds:.1f} s, {instances / max(seconds, 1e-6):.1f} instances/s",
    ]
    print("\n".join(lines), file=sys.stderr)
