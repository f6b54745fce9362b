"""``python -m dicomweb_couch files to-files|to-attachments|sweep``: move Part 10 files between
CouchDB attachments and the file store (README "The file store"), or sweep its orphans.

The work is done by :mod:`dicomweb_couch.store.migrate` and :class:`~dicomweb_couch.store.file_store.FileStore`;
this module parses the command line and shows progress. A migration can be stopped at any moment
(Ctrl-C, or a crash) and resumed by running it again. Run it while the server is stopped, or
with the server already using the file store (``--file-store``), so that no new attachment
arrives behind it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from tqdm import tqdm

from dicomweb_couch.settings import Settings
from dicomweb_couch.store.couch import Couch, CouchUnavailable
from dicomweb_couch.store.file_store import FileStore
from dicomweb_couch.store.migrate import TO_ATTACHMENTS, TO_FILES, migrate


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dicomweb_couch files",
                                description="Move Part 10 files between CouchDB attachments and a file store.")
    p.add_argument("action", choices=[TO_FILES, TO_ATTACHMENTS, "sweep"],
                   help=f"{TO_FILES}: attachments into the file store; {TO_ATTACHMENTS}: back; "
                        "sweep: remove files no document refers to (older than --grace)")
    p.add_argument("--file-store", help="the file store's directory (or the file_store setting)")
    p.add_argument("--config", help="JSON settings file, as for the server")
    p.add_argument("--couch-url")
    p.add_argument("--couch-user")
    p.add_argument("--couch-password")
    p.add_argument("--database")
    p.add_argument("--grace", type=float, default=3600.0,
                   help="sweep: only files older than this many seconds (a store in progress is younger)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    couch = Couch(settings.couch_url, settings.database, settings.couch_user, settings.couch_password)
    await couch.open(settings.couch_wait)
    try:
        store = FileStore(couch, settings.file_store, grace=args.grace)
        await store.install()
        if args.action == "sweep":
            removed = await store.sweep()
            print(f"removed {removed} orphan file(s) from {settings.file_store}")
            return 0
        total = (await couch.database_info()).get("doc_count")
        with tqdm(total=total, unit="doc", disable=args.quiet, desc=args.action) as bar:
            tally = await migrate(store, args.action, bar.update)
        print(f"{args.action}: {tally.moved} moved, {tally.skipped} already there or not instances, "
              f"{tally.conflicts} changed meanwhile, {tally.missing} without their file; "
              f"{tally.released} file(s) released")
        if tally.conflicts:
            print("run the command again to move the documents that changed meanwhile")
        return 1 if tally.conflicts or tally.missing else 0
    finally:
        await couch.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli = {k: getattr(args, k) for k in ("file_store", "couch_url", "couch_user", "couch_password", "database")}
    try:
        settings = Settings.load(cli=cli, config_file=args.config)
    except (ValueError, OSError) as exc:
        sys.exit(f"dicomweb_couch files: bad settings: {exc}")
    if not settings.file_store:
        sys.exit("dicomweb_couch files: say which directory is the file store (--file-store or the file_store setting)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args, settings))
    except (CouchUnavailable, ValueError, OSError) as exc:
        sys.exit(f"dicomweb_couch files: {exc}")
    except KeyboardInterrupt:
        sys.exit("dicomweb_couch files: interrupted; run the command again to resume")
