"""``python -m dicomweb_couch upgrade``: check a database and upgrade dcmjs-org/dicomweb-server's documents in place.

The work is :func:`dicomweb_couch.store.upgrade.upgrade_database`; this module reads the same
settings as the server (command line, ``DICOMWEB_COUCH_*`` environment, config file), shows
progress and prints the report. Exit status 0 when every instance document can be served, 1
when some have problems (listed), 2 when CouchDB cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from tqdm import tqdm

from dicomweb_couch.commands.options import add_store_options, load_settings
from dicomweb_couch.settings import Settings
from dicomweb_couch.store.couch import Couch, CouchUnavailable
from dicomweb_couch.store.upgrade import Report, upgrade_database

_LISTED_PROBLEMS = 20


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dicomweb_couch upgrade",
                                description="Check a database and upgrade documents written by "
                                            "dcmjs-org/dicomweb-server "
                                            "in place (transfer syntax from each file's File Meta, AT and PN values "
                                            "mended); the predecessor can still read them. Resumes an interrupted run.")
    add_store_options(p)
    p.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
    p.add_argument("--restart", action="store_true",
                   help="start from the first document, not where the last run stopped")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


async def run(settings: Settings, dry_run: bool, restart: bool, quiet: bool) -> Report:
    couch = Couch(settings.couch_url, settings.database, settings.couch_user, settings.couch_password)
    await couch.open(settings.couch_wait)
    try:
        total = (await couch.database_info()).get("doc_count")
        with tqdm(total=total, unit="doc", disable=quiet, desc="dry run" if dry_run else "upgrade") as bar:
            return await upgrade_database(couch, dry_run=dry_run, restart=restart, progress=bar.update)
    finally:
        await couch.close()


def describe(report: Report, dry_run: bool) -> str:
    verb = "would upgrade" if dry_run else "upgraded"
    lines = [f"{report.examined} documents examined"
             + (f" (resumed after {report.resumed_after})" if report.resumed_after else ""),
             f"  {report.current} instance documents already current",
             f"  {verb} {report.upgraded}: " + (", ".join(f"{n} {what}" for what, n in sorted(report.changes.items()))
                                                 or "nothing"),
             f"  {report.other} other documents (design documents, non-instances) left alone",
             f"  {len(report.problems)} with problems"]
    for doc_id, problem in list(report.problems.items())[:_LISTED_PROBLEMS]:
        lines.append(f"    {doc_id}: {problem}")
    if len(report.problems) > _LISTED_PROBLEMS:
        lines.append(f"    ... and {len(report.problems) - _LISTED_PROBLEMS} more (--json lists all)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    options = vars(parse_args(argv))
    settings = load_settings(options, "upgrade")
    if settings is None:
        return 2
    try:
        report = asyncio.run(run(settings, options["dry_run"], options["restart"], options["quiet"]))
    except CouchUnavailable as exc:
        print(f"dicomweb_couch upgrade: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2) if options["json"] else describe(report, options["dry_run"]))
    return 1 if report.problems else 0
