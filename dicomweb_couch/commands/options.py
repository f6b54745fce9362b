"""What the commands that work on a database share: its command-line options and the settings they load."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dicomweb_couch.settings import Settings


def add_store_options(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--couch-url``, ``--couch-user``, ``--couch-password``, ``--database``, as for the server."""
    p.add_argument("--config", help="JSON settings file, as for the server")
    p.add_argument("--couch-url", help="CouchDB server URL")
    p.add_argument("--couch-user", help="CouchDB user")
    p.add_argument("--couch-password", help="CouchDB password (prefer DICOMWEB_COUCH_COUCH_PASSWORD)")
    p.add_argument("--database", help="database name")


def load_settings(args: dict[str, Any], command: str) -> Settings | None:
    """The settings from the store options in ``args`` (taken out of it), the environment and the
    config file; None after printing why they are bad."""
    config = args.pop("config")
    store = {name: args.pop(name) for name in ("couch_url", "couch_user", "couch_password", "database")}
    try:
        return Settings.load(cli=store, config_file=config)
    except (ValueError, OSError) as exc:
        print(f"dicomweb_couch {command}: bad settings: {exc}", file=sys.stderr)
        return None
