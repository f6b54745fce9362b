"""``python -m dicomweb_couch conflicts``: list instances stored differently at two replicating sites.

The work is :mod:`dicomweb_couch.store.conflicts`. Exit status 0 when there is none, 1 when some
are listed (so a cron job or monitoring check notices), 2 when CouchDB cannot be reached.
``--keep-winner`` resolves them for the revision every site serves, deleting the losing ones.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys

from dicomweb_couch.commands.options import add_store_options, load_settings
from dicomweb_couch.settings import Settings
from dicomweb_couch.store.conflicts import Conflicted, find_conflicts, keep_winner
from dicomweb_couch.store.couch import Couch, CouchUnavailable
from dicomweb_couch.web.landing import without_credentials


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dicomweb_couch conflicts",
                                description="List SOP instances whose document has conflicting revisions (stored "
                                            "differently at two sites while they were apart): the revision served "
                                            "and the ones that lost, still in the database with their files.")
    add_store_options(p)
    p.add_argument("--json", action="store_true", help="print the conflicts as JSON")
    p.add_argument("--keep-winner", action="store_true",
                   help="resolve every conflict for the revision being served (deletes the losing revisions)")
    return p.parse_args(argv)


async def run(settings: Settings, resolve: bool) -> list[Conflicted]:
    couch = Couch(settings.couch_url, settings.database, settings.couch_user, settings.couch_password)
    await couch.open(settings.couch_wait)
    try:
        found = await find_conflicts(couch)
        if resolve:
            for conflicted in found:
                await keep_winner(couch, conflicted)
        return found
    finally:
        await couch.close()


def describe(found: list[Conflicted], resolved: bool, settings: Settings) -> str:
    if not found:
        return "no conflicting instances"
    lines = [f"{len(found)} instance(s) with conflicting revisions" + (" (resolved: winners kept)" if resolved else "")]
    for c in found:
        lines.append(f"{c.doc_id} (study {c.winner.study}): served {c.winner.rev} md5 {c.winner.md5hash}")
        for loser in c.losers:
            lines.append(f"    lost {loser.rev} md5 {loser.md5hash}, {loser.size} bytes: "
                         f"GET {without_credentials(settings.couch_url)}/{settings.database}/{c.doc_id}"
                         f"/object.dcm?rev={loser.rev}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    options = vars(parse_args(argv))
    settings = load_settings(options, "conflicts")
    if settings is None:
        return 2
    try:
        found = asyncio.run(run(settings, options["keep_winner"]))
    except CouchUnavailable as exc:
        print(f"dicomweb_couch conflicts: {exc}", file=sys.stderr)
        return 2
    if options["json"]:
        print(json.dumps([dataclasses.asdict(c) for c in found], indent=2))
    else:
        print(describe(found, options["keep_winner"], settings))
    return 1 if found and not options["keep_winner"] else 0
