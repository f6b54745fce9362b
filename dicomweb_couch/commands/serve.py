"""``python -m dicomweb_couch [serve] [options]``: run the server."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from dicomweb_couch import __version__
from dicomweb_couch.app import create_app
from dicomweb_couch.commands import COMMANDS
from dicomweb_couch.settings import ENV_PREFIX, Settings
from dicomweb_couch.store.couch import CouchUnavailable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m dicomweb_couch",
        description="DICOMweb server (STOW-RS, QIDO-RS, WADO-RS, WADO-URI) storing DICOM in CouchDB. "
        f"Every option can also be set by an environment variable {ENV_PREFIX}<NAME> "
        f"(e.g. {ENV_PREFIX}COUCH_URL) or in a JSON config file (see config/). Other commands: "
        + (", ".join(f"{name} ({text})" for name, (_, text) in COMMANDS.items()) or "none"),
    )
    p.add_argument("--config", help="JSON settings file (env: DICOMWEB_COUCH_CONFIG); see config/example.json")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, help="port to listen on (default 5985)")
    p.add_argument("--couch-url", help="CouchDB server URL (default http://127.0.0.1:5984)")
    p.add_argument("--couch-user", help="CouchDB user; Apache CouchDB 3 needs an admin to create the database")
    p.add_argument("--couch-password", help="CouchDB password (prefer the environment variable DICOMWEB_COUCH_COUCH_PASSWORD)")
    p.add_argument("--database", help="CouchDB database name (default 'chronicle', as dcmjs-org/dicomweb-server)")
    p.add_argument("--prefix", help="URL prefix of the DICOMweb routes, e.g. /dicom-web (default: at the root)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level (default INFO)")
    p.add_argument("--cors-origins", help="origins whose pages may call the API, comma-separated "
                   "(default * = any; '' = none), e.g. https://viewer.example.org")
    p.add_argument("--ohif-dir", help="the OHIF Viewer build served at /ohif/ (default var/ohif; "
                   "python scripts/ohif.py install puts the pinned one there)")
    p.add_argument("--ohif-config", help="an OHIF app-config.js to serve instead of the generated one")
    p.add_argument("--file-store", help="keep the Part 10 files in this directory instead of CouchDB attachments "
                   "(README 'The file store'; default: attachments)")
    p.add_argument("--version", action="version", version=f"dicomweb_couch {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = vars(parse_args(argv))
    config = args.pop("config")
    try:
        settings = Settings.load(cli=args, config_file=config)
    except (ValueError, OSError) as exc:
        sys.exit(f"dicomweb_couch: bad settings: {exc}")
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(settings)
    except (ValueError, OSError) as exc:  # settings only checked when used, e.g. the Keycloak ones
        sys.exit(f"dicomweb_couch: bad settings: {exc}")
    try:
        web.run_app(app, host=settings.host, port=settings.port, print=None)
    except CouchUnavailable as exc:  # already explained: a traceback would only bury the reason
        sys.exit(f"dicomweb_couch: {exc}")
